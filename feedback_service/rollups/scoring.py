"""Score definitions, applied to running sums: plain functions, no database.

Every scored answer is normalised to 0-100. Satisfaction: 100 = best. Friction: 100 = most
friction. A cell's score is the mean of its answers on that measure, with a 95% confidence
interval (normal approximation, clamped to the scale) and the share of answers in the top box of
the measure's scale (most satisfied; most friction).

Net Promoter Score is kept as a third measure, "nps", beside the satisfaction that an NPS question
also feeds: each answer counts +100 (promoter, 9-10), 0 (passive) or -100 (detractor, 0-6), so
the mean of those is the NPS (-100 to 100) and the same sums give its interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..journeys.questions import MEASURES, TOP_BOX_SCORE

Z95 = 1.959964
NPS = "nps"
REPORTED = (*MEASURES, NPS)
SCALE = {NPS: (-100.0, 100.0)}  # other measures: 0-100
# The worst point of a scale: 1 of 5 or 7, 0-1 of 11, the worse yes/no answer.
BOTTOM_BOX_SCORE = 100.0 - TOP_BOX_SCORE


def nps_value(goodness: float) -> float:
    """An NPS answer's contribution (goodness 0-100 is the 0-10 answer x 10)."""
    return 100.0 if goodness >= 90.0 else (-100.0 if goodness <= 60.0 else 0.0)


@dataclass
class Sums:
    """Running sums for one measure of one cell. Answers of one response are not independent,
    so the spread is kept per response (a ratio estimator's sums), not per answer."""

    responses: int = 0  # responses with at least one answer on this measure
    n: int = 0  # answers
    total: float = 0.0  # sum of scores
    resp_total_sq: float = 0.0  # sum over responses of (the response's score total) squared
    resp_n_sq: float = 0.0  # sum over responses of (the response's answer count) squared
    resp_cross: float = 0.0  # sum over responses of score total x answer count
    top_box: int = 0
    bottom_box: int = 0

    @classmethod
    def of_response(cls, scores: list[float], top_boxes: list[bool], bottom_boxes: list[bool] = ()) -> "Sums":
        """The sums one response adds to its cell."""
        y, m = sum(scores), len(scores)
        return cls(1, m, y, y * y, m * m, y * m, sum(map(bool, top_boxes)), sum(map(bool, bottom_boxes)))

    def add(self, other: "Sums") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def small(count: int, min_n: int) -> bool:
    """A count that must not be shown: 1 to min_n - 1."""
    return 0 < count < min_n


def measure_summary(s: Sums, min_n: int, hidden: bool = False, hide_top_box: bool = False,
                    scale: tuple[float, float] = (0.0, 100.0), hide_counts: bool = False,
                    top_box_reported: bool = True) -> dict:
    """The reported figures for one measure of one cell, or {"suppressed": true}.

    Suppression counts responses (patients), not answers, so that two questions on the same
    measure cannot lift a cell of six patients over the threshold. The interval is the
    cluster-robust one for a mean of answers grouped in responses; with one answer per
    response it is the usual mean +/- 1.96 s / sqrt(n).
    """
    if hidden or s.responses < min_n or s.n == 0:
        return {"suppressed": True}
    top_hidden = hide_top_box or small(s.top_box, min_n) or small(s.n - s.top_box, min_n)
    if top_hidden and s.top_box + s.bottom_box == s.n:
        # Every answer at one end or the other (a yes/no question): the score and n would give
        # the hidden top box away.
        return {"suppressed": True}
    mean = s.total / s.n
    half = 0.0
    if s.responses > 1:
        m_bar = s.n / s.responses
        spread = s.resp_total_sq - 2 * mean * s.resp_cross + mean * mean * s.resp_n_sq
        variance = max(spread, 0.0) / (s.responses * (s.responses - 1) * m_bar * m_bar)
        half = Z95 * math.sqrt(variance)
    return {
        "suppressed": False,
        "score": round(mean, 1),
        # Hidden when the patients of the cell who skipped this measure are 1 to 10.
        "n": None if hide_counts else s.n,
        "responses": None if hide_counts else s.responses,
        # A share times n gives a count: hide it when that count, or its complement, is 1 to 10.
        "top_box_pct": None if top_hidden or not top_box_reported else round(100.0 * s.top_box / s.n, 1),
        "ci95": [round(max(scale[0], mean - half), 1), round(min(scale[1], mean + half), 1)],
    }


@dataclass(frozen=True)
class Hidden:
    """What complementary suppression hides in one cell, decided across its siblings."""

    cell: bool = False
    sent: bool = False
    measures: frozenset = frozenset()
    top_box: frozenset = frozenset()
    counts: frozenset = frozenset()  # measures whose n and responses are hidden


def cell_summary(sent: int, responses: int, measures: dict[str, Sums], min_n: int,
                 hidden: Hidden = Hidden()) -> dict:
    """Counts, response rate and the measures for a stage or touchpoint."""
    if hidden.cell or responses < min_n:
        # Counts of 1 to 10 must not be shown, nor the rate they would let a reader work out.
        return {"suppressed": True, **{m: {"suppressed": True} for m in REPORTED}}
    # sent - responses is the count of patients who did not answer: the same rule applies to it.
    sent_shown = not (hidden.sent or small(sent - responses, min_n))
    return {
        "suppressed": False,
        "responses": responses,
        "sent": sent if sent_shown else None,
        "response_rate": round(responses / sent, 4) if sent and sent_shown else None,
        **{m: measure_summary(measures.get(m, Sums()), min_n, hidden=m in hidden.measures,
                              hide_top_box=m in hidden.top_box, top_box_reported=m != NPS,
                              scale=SCALE.get(m, (0.0, 100.0)),
                              hide_counts=m in hidden.counts or skipped_small(responses, measures.get(m), min_n))
           for m in REPORTED},
    }


def skipped_small(responses: int, s: Sums | None, min_n: int) -> bool:
    """Whether a measure's counts would give away 1 to min_n - 1 patients: those who answered but
    skipped its questions (responses less its responses), or, where it has several questions,
    those who answered more than one (its answers less its responses). A measure nobody
    answered shows no counts anyway."""
    return s is not None and (small(responses - s.responses, min_n) or small(s.n - s.responses, min_n))


def complementary_suppression(vectors: list[list[int]], min_n: int, hidden: set[int]) -> set[int]:
    """Widen `hidden` (sibling cells already hidden, by index) until, in every vector of counts,
    the hidden cells add up to 0 or to min_n or more: then no hidden total of 1 to min_n - 1 can
    be worked out by subtracting the shown siblings from their shown parent. The smallest shown
    cell goes first."""
    hidden, size = set(hidden), len(vectors[0])
    while len(hidden) < size:
        leaking = next((v for v in vectors if small(sum(v[i] for i in hidden), min_n)), None)
        if leaking is None:
            break
        hidden.add(min((i for i in range(size) if i not in hidden), key=lambda i: leaking[i]))
    return hidden


def sibling_suppression(sent: list[int], responses: list[int], measures: list[dict[str, Sums]],
                        min_n: int, forced: list[Hidden] | None = None) -> list[Hidden]:
    """Complementary suppression for the touchpoints of one stage, for every count a reader
    could subtract: responses, patients who did not answer, and per measure its responses and
    the answers in and out of the top box. `forced`: per touchpoint, what must be hidden
    whatever its own counts (kept in the result, counts included)."""
    forced = forced or [Hidden()] * len(responses)

    def below(values, limit_zero=False):
        return {i for i, v in enumerate(values) if (v < min_n if limit_zero else small(v, min_n))}

    def marked(test):
        return {i for i, h in enumerate(forced) if test(h)}

    cells = complementary_suppression([responses], min_n, below(responses, limit_zero=True) | marked(lambda h: h.cell))
    silent = [s - r for s, r in zip(sent, responses)]
    no_sent = complementary_suppression([silent], min_n, cells | below(silent) | marked(lambda h: h.sent))
    hidden_measures, hidden_top = {}, {}
    for m in REPORTED:
        per = [tp.get(m, Sums()) for tp in measures]
        answered = [s.responses for s in per]
        hidden_measures[m] = complementary_suppression(
            [answered], min_n, cells | below(answered, limit_zero=True) | marked(lambda h: m in h.measures))
        top, rest = [s.top_box for s in per], [s.n - s.top_box for s in per]
        hidden_top[m] = complementary_suppression(
            [top, rest], min_n, hidden_measures[m] | below(top) | below(rest) | marked(lambda h: m in h.top_box))
    return [Hidden(cell=i in cells, sent=i in no_sent,
                   measures=frozenset(m for m in REPORTED if i in hidden_measures[m]),
                   top_box=frozenset(m for m in REPORTED if i in hidden_top[m]), counts=forced[i].counts)
            for i in range(len(responses))]
