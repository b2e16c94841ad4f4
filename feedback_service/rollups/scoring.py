"""Score definitions, applied to running sums: plain functions, no database.

Every scored answer is normalised to 0-100. Satisfaction: 100 = best. Friction: 100 = most
friction. A cell's score is the mean of its answers on that measure, with a 95% confidence
interval (normal approximation, clamped to 0-100) and the share of answers in the top box of
the measure's scale (most satisfied; most friction).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..journeys.questions import MEASURES

Z95 = 1.959964


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

    @classmethod
    def of_response(cls, scores: list[float], top_boxes: list[bool]) -> "Sums":
        """The sums one response adds to its cell."""
        y, m = sum(scores), len(scores)
        return cls(1, m, y, y * y, m * m, y * m, sum(map(bool, top_boxes)))

    def add(self, other: "Sums") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _small(count: int, min_n: int) -> bool:
    return 0 < count < min_n


def measure_summary(s: Sums, min_n: int, hidden: bool = False) -> dict:
    """The reported figures for one measure of one cell, or {"suppressed": true}.

    Suppression counts responses (patients), not answers, so that two questions on the same
    measure cannot lift a cell of six patients over the threshold. The interval is the
    cluster-robust one for a mean of answers grouped in responses; with one answer per
    response it is the usual mean +/- 1.96 s / sqrt(n).
    """
    if hidden or s.responses < min_n or s.n == 0:
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
        "n": s.n,
        "responses": s.responses,
        # A share times n gives a count: hide it when that count, or its complement, is 1 to 10.
        "top_box_pct": None if _small(s.top_box, min_n) or _small(s.n - s.top_box, min_n)
        else round(100.0 * s.top_box / s.n, 1),
        "ci95": [round(max(0.0, mean - half), 1), round(min(100.0, mean + half), 1)],
    }


def cell_summary(sent: int, responses: int, measures: dict[str, Sums], min_n: int, hidden: bool = False,
                 hidden_measures: frozenset[str] = frozenset()) -> dict:
    """Counts, response rate and both measures for a stage or touchpoint; `hidden` and
    `hidden_measures` carry complementary suppression decided across sibling cells."""
    if hidden or responses < min_n:
        # Counts of 1 to 10 must not be shown, nor the rate they would let a reader work out.
        return {"suppressed": True, "satisfaction": {"suppressed": True}, "friction": {"suppressed": True}}
    # sent - responses is the count of patients who did not answer: the same rule applies to it.
    sent_shown = not _small(sent - responses, min_n)
    return {
        "suppressed": False,
        "responses": responses,
        "sent": sent if sent_shown else None,
        "response_rate": round(responses / sent, 4) if sent and sent_shown else None,
        **{m: measure_summary(measures.get(m, Sums()), min_n, hidden=m in hidden_measures) for m in MEASURES},
    }


def complementary_suppression(counts: list[int], min_n: int) -> set[int]:
    """Which of several sibling cells to hide, given their counts, so that no hidden total of
    1 to min_n - 1 can be worked out by subtracting the shown cells from their shown parent:
    the cells under the threshold, then the smallest others until the hidden total is safe."""
    hidden = {i for i, count in enumerate(counts) if count < min_n}
    while _small(sum(counts[i] for i in hidden), min_n) and len(hidden) < len(counts):
        hidden.add(min((i for i in range(len(counts)) if i not in hidden), key=lambda i: counts[i]))
    return hidden
