"""Cell and measure summaries from running sums (feedback_service/rollups/scoring.py)."""
from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
from dataclasses import astuple, fields

import pytest

from feedback_service.rollups.scoring import (Sums, cell_summary, complementary_suppression, measure_summary,
                                              sibling_suppression)

MIN_N = 11  # the configured CMS threshold: counts of 1 to 10 are never shown
Z95 = 1.959964
TOP = 90.0  # an answer is top box when its score on its measure reaches this
COUNT_KEYS = {"responses", "sent", "response_rate", "score", "n", "top_box_pct", "ci95"}


def sums_of(responses: list[list[float]], top: Callable[[float], bool] = lambda v: v >= TOP) -> Sums:
    """Running sums as the rollups build them: one Sums.of_response per response, added up."""
    s = Sums()
    for scores in responses:
        s.add(Sums.of_response(scores, [top(v) for v in scores]))
    return s


def singles(values: list[float]) -> list[list[float]]:
    """One answer per response."""
    return [[v] for v in values]


def classic_ci(values: list[float]) -> tuple[float, float]:
    """Independent answers: mean +/- z * sample sd / sqrt(n), clamped 0-100."""
    mean = statistics.fmean(values)
    half = Z95 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return max(0.0, mean - half), min(100.0, mean + half)


def cluster_ci(responses: list[list[float]]) -> tuple[float, float]:
    """Ratio-estimator interval straight from the per-response lists, clamped 0-100:
    var = sum_i (y_i - mean * m_i)^2 / (R (R - 1) m_bar^2)."""
    r = len(responses)
    answers = [v for resp in responses for v in resp]
    mean = sum(answers) / len(answers)
    if r == 1:
        return mean, mean
    m_bar = len(answers) / r
    var = sum((sum(resp) - mean * len(resp)) ** 2 for resp in responses) / (r * (r - 1) * m_bar ** 2)
    half = Z95 * math.sqrt(var)
    return max(0.0, mean - half), min(100.0, mean + half)


def width(summary: dict) -> float:
    return summary["ci95"][1] - summary["ci95"][0]


def keys_anywhere(obj) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | set().union(*(keys_anywhere(v) for v in obj.values()))
    return set()


ROUNDING = 0.05 + 1e-9  # reported figures are rounded to one decimal place

_rng = random.Random(20260308)
DATASETS = {
    "rating-mix": [100, 75, 75, 50, 100, 25, 100, 75, 50, 100, 75, 100],
    "effort-thirds": [100 / 6 * k for k in (0, 1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 5, 6)],
    "nps-large": [_rng.choice(range(0, 101, 10)) for _ in range(500)],
    "near-top-clamped": [100.0] * 15 + [75.0],
    "near-bottom-clamped": [0.0] * 15 + [25.0],
    "two-extremes": [0.0] * 6 + [100.0] * 6,
    "continuous": [_rng.uniform(0, 100) for _ in range(37)],
}


def _clustered(count: int, answers: tuple[int, ...], value: Callable[[], float]) -> list[list[float]]:
    return [[value() for _ in range(_rng.choice(answers))] for _ in range(count)]


# Several answers per response, uneven counts.
CLUSTERED = {
    "hand-made": [[100, 75], [50], [75, 75, 100], [25, 50], [100], [0, 25, 25], [75, 100],
                  [50, 50], [100, 100, 75], [25], [75, 50], [100, 75, 100, 50]],
    "rating-1-to-3": _clustered(40, (1, 2, 3), lambda: _rng.choice((0.0, 25.0, 50.0, 75.0, 100.0))),
    "nps-large": _clustered(300, (1, 2, 2, 3, 4), lambda: float(_rng.choice(range(0, 101, 10)))),
    "continuous": _clustered(25, (1, 4), lambda: _rng.uniform(0, 100)),
    # patients differ a lot, answers within a patient agree: the clustered interval is wide
    "patient-effect": [[base + _rng.uniform(-5, 5) for _ in range(_rng.choice((1, 2, 3)))]
                       for base in (_rng.choice((10.0, 50.0, 90.0)) for _ in range(30))],
    "near-top-clamped": [[100.0, 100.0]] * 10 + [[100.0], [75.0, 100.0, 100.0]],
}


# --- Sums ------------------------------------------------------------------------------------------


def test_sums_fields_in_rollup_column_order():
    """The rollup reader rebuilds Sums positionally from summed columns, in this order."""
    assert [f.name for f in fields(Sums)] == [
        "responses", "n", "total", "resp_total_sq", "resp_n_sq", "resp_cross", "top_box", "bottom_box"]
    assert astuple(Sums()) == (0, 0, 0.0, 0.0, 0.0, 0.0, 0, 0)


def test_of_response_keeps_the_responses_total_and_count():
    """Three answers totalling 225: y^2 = 50625, m^2 = 9, y*m = 675; one response."""
    assert Sums.of_response([100.0, 50.0, 75.0], [True, False, False]) == Sums(
        responses=1, n=3, total=225.0, resp_total_sq=50625.0, resp_n_sq=9, resp_cross=675.0, top_box=1)


def test_of_response_counts_the_top_box_flags_it_is_given():
    """Top box is decided per answer by score_answer (it depends on the measure); the sums only count it."""
    assert Sums.of_response([95.0, 95.0], [False, False]).top_box == 0
    assert Sums.of_response([10.0, 20.0, 30.0], [True, True, False]).top_box == 2


def test_add_is_field_by_field():
    s = Sums.of_response([100.0, 50.0], [True, False])
    s.add(Sums.of_response([20.0], [False]))
    s.add(Sums.of_response([40.0, 40.0, 10.0], [False, False, False]))
    assert s == Sums(responses=3, n=6, total=260.0,
                     resp_total_sq=150.0 ** 2 + 20.0 ** 2 + 90.0 ** 2,
                     resp_n_sq=4 + 1 + 9,
                     resp_cross=150.0 * 2 + 20.0 * 1 + 90.0 * 3,
                     top_box=1)


def test_adding_empty_sums_changes_nothing():
    s = sums_of(CLUSTERED["hand-made"])
    before = astuple(s)
    s.add(Sums())
    assert astuple(s) == before


def test_added_sums_summarise_like_the_combined_responses():
    """Stage figures are built by adding touchpoint sums; the result equals summarising all responses."""
    a, b = CLUSTERED["hand-made"], CLUSTERED["rating-1-to-3"]
    combined = sums_of(a)
    combined.add(sums_of(b))
    direct = sums_of(a + b)
    assert combined.responses == direct.responses == len(a) + len(b)
    assert combined.n == direct.n == sum(map(len, a + b))
    assert combined.top_box == direct.top_box == sum(v >= TOP for r in a + b for v in r)
    for name in ("total", "resp_total_sq", "resp_n_sq", "resp_cross"):
        assert getattr(combined, name) == pytest.approx(getattr(direct, name)), name
    assert measure_summary(combined, MIN_N) == measure_summary(direct, MIN_N)


# --- measure_summary: one answer per response --------------------------------------------------------


@pytest.mark.parametrize("values", DATASETS.values(), ids=DATASETS.keys())
def test_one_answer_per_response_gives_the_classic_interval(values):
    """With m_i = 1 the clustered interval is mean +/- z * s / sqrt(n)."""
    summary = measure_summary(sums_of(singles(values)), MIN_N)
    lo, hi = classic_ci(values)
    assert summary["suppressed"] is False
    assert summary["n"] == summary["responses"] == len(values)
    assert abs(summary["score"] - statistics.fmean(values)) <= ROUNDING
    assert abs(summary["ci95"][0] - lo) <= ROUNDING
    assert abs(summary["ci95"][1] - hi) <= ROUNDING
    assert 0.0 <= summary["ci95"][0] <= summary["score"] <= summary["ci95"][1] <= 100.0


def test_ci_is_clamped_to_the_scale():
    """Unclamped, these intervals would run past 100 and below 0."""
    top = measure_summary(sums_of(singles(DATASETS["near-top-clamped"])), MIN_N)
    bottom = measure_summary(sums_of(singles(DATASETS["near-bottom-clamped"])), MIN_N)
    assert top["ci95"][1] == 100.0 and top["ci95"][0] < top["score"]
    assert bottom["ci95"][0] == 0.0 and bottom["ci95"][1] > bottom["score"]
    clustered = measure_summary(sums_of(CLUSTERED["near-top-clamped"]), MIN_N)
    assert clustered["ci95"][1] == 100.0 and clustered["ci95"][0] < clustered["score"]


def test_known_values_one_answer_each():
    """12 answers, mean 77.083, sample sd 24.905, half-width 14.09, 5 in the top box (shown with a
    reporting threshold of 5: at 11, a top-box count of 5 would be hidden)."""
    summary = measure_summary(sums_of(singles(DATASETS["rating-mix"])), 5)
    assert summary == {
        "suppressed": False,
        "score": 77.1,
        "n": 12,
        "responses": 12,
        "top_box_pct": 41.7,
        "ci95": [63.0, 91.2],
    }


# --- measure_summary: several answers per response ---------------------------------------------------


@pytest.mark.parametrize("responses", CLUSTERED.values(), ids=CLUSTERED.keys())
def test_clustered_interval_matches_direct_computation(responses):
    assert len(set(map(len, responses))) > 1, "the counts per response should be uneven"
    summary = measure_summary(sums_of(responses), MIN_N)
    answers = [v for r in responses for v in r]
    lo, hi = cluster_ci(responses)
    assert summary["suppressed"] is False
    assert summary["responses"] == len(responses)
    assert summary["n"] == len(answers)
    assert abs(summary["score"] - statistics.fmean(answers)) <= ROUNDING
    assert abs(summary["ci95"][0] - lo) <= ROUNDING
    assert abs(summary["ci95"][1] - hi) <= ROUNDING
    top = sum(v >= TOP for v in answers)
    small = (0 < top < MIN_N) or (0 < len(answers) - top < MIN_N)
    assert summary["top_box_pct"] == (None if small else round(100 * top / len(answers), 1))


def test_known_values_clustered():
    """Response totals 180, 30, 150 over 2, 1, 3 answers: mean 60; residuals y - 60 m are 60, -30, -30;
    var = 5400 / (3 * 2 * 2^2) = 225, so the half-width is 1.959964 * 15 = 29.40."""
    summary = measure_summary(sums_of([[100.0, 80.0], [30.0], [50.0, 50.0, 50.0]]), min_n=3)
    assert summary == {
        "suppressed": False,
        "score": 60.0,
        "n": 6,
        "responses": 3,
        "top_box_pct": None,  # 1 of 6 in the top box: a count under the threshold
        "ci95": [30.6, 89.4],
    }


def test_perfectly_correlated_answers_are_not_counted_as_independent():
    """Each patient gives the same score to two questions. Taken as 24 independent answers the interval
    is too narrow; clustered, the pairs carry the information of 12 answers, not 24."""
    base = DATASETS["rating-mix"]
    pairs = [[v, v] for v in base]
    clustered = measure_summary(sums_of(pairs), MIN_N)
    as_independent = measure_summary(sums_of(singles([v for pair in pairs for v in pair])), MIN_N)
    one_each = measure_summary(sums_of(singles(base)), MIN_N)

    assert clustered["score"] == as_independent["score"] == one_each["score"]
    assert clustered["n"] == 24 and clustered["responses"] == 12
    assert clustered["ci95"] == one_each["ci95"]
    assert width(as_independent) < width(clustered)
    # Exactly: the half-widths differ by sqrt((2R - 1) / (R - 1)) = sqrt(23 / 11), about 1.45.
    assert width(clustered) / width(as_independent) == pytest.approx(math.sqrt(23 / 11), abs=0.01)


def test_single_response_gives_zero_width_interval():
    summary = measure_summary(sums_of([[75.0]]), min_n=1)
    assert summary["score"] == 75.0
    assert summary["ci95"] == [75.0, 75.0]


def test_single_response_with_spread_answers_still_gives_zero_width_interval():
    """One patient is one cluster: no between-response spread to estimate, however its answers differ."""
    summary = measure_summary(sums_of([[0.0, 100.0, 50.0]]), min_n=1)
    assert summary["score"] == 50.0 and summary["n"] == 3 and summary["responses"] == 1
    assert summary["ci95"] == [50.0, 50.0]


@pytest.mark.parametrize("responses", [
    singles([100 / 3] * 40),
    [[100 / 3] * k for k in (1, 2, 3, 1, 4, 2, 1, 3, 2, 2, 1, 5)],
], ids=["one-each", "uneven-counts"])
def test_identical_answers_give_zero_width_interval(responses):
    """No spread; floating-point noise in the running sums must not produce a NaN or a width."""
    summary = measure_summary(sums_of(responses), MIN_N)
    assert summary["ci95"] == [33.3, 33.3]


# --- measure_summary: top box and suppression -------------------------------------------------------


@pytest.mark.parametrize(("top_box", "n", "pct"), [(0, 12, 0.0), (12, 12, 100.0), (11, 22, 50.0), (13, 40, 32.5)])
def test_top_box_pct_is_share_of_answers(top_box, n, pct):
    s = sums_of(singles([95.0] * top_box + [50.0] * (n - top_box)))
    assert s.top_box == top_box
    assert measure_summary(s, MIN_N)["top_box_pct"] == pct


@pytest.mark.parametrize(("top_box", "n"), [(4, 12), (2, 11), (10, 30), (25, 30), (29, 30)])
def test_top_box_pct_is_hidden_when_it_would_reveal_a_count_of_1_to_10(top_box, n):
    """pct x n is a count: hidden when the top box, or the rest, holds 1 to 10 answers."""
    s = sums_of(singles([95.0] * top_box + [50.0] * (n - top_box)))
    summary = measure_summary(s, MIN_N)
    assert summary["suppressed"] is False and summary["score"] is not None
    assert summary["top_box_pct"] is None


def test_top_box_pct_uses_answers_not_responses():
    """Twelve patients answering two questions each: 24 answers, 12 of them top box -> 50%."""
    s = sums_of([[95.0, 95.0]] * 6 + [[50.0, 50.0]] * 6)
    assert (s.responses, s.n, s.top_box) == (12, 24, 12)
    assert measure_summary(s, MIN_N)["top_box_pct"] == 50.0


def test_top_box_pct_follows_the_flags_not_the_scores():
    """The flags come from score_answer; measure_summary must not re-derive them from the scores."""
    s = sums_of(singles([95.0] * 12), top=lambda v: False)
    assert measure_summary(s, MIN_N)["top_box_pct"] == 0.0


@pytest.mark.parametrize("responses", [
    [], [[80.0]], singles([80.0] * 10), [[80.0, 80.0]] * 6, [[80.0] * 3] * 10,
], ids=["none", "one", "ten", "six-of-two", "ten-of-three"])
def test_measure_below_min_n_responses_is_suppressed_entirely(responses):
    """Counted in responses, not answers (six patients with 12 answers stay hidden); only the flag is shown."""
    assert measure_summary(sums_of(responses), MIN_N) == {"suppressed": True}


def test_threshold_is_inclusive():
    summary = measure_summary(sums_of(singles([80.0] * MIN_N)), MIN_N)
    assert summary["suppressed"] is False and summary["responses"] == MIN_N


def test_no_answers_is_suppressed_even_with_enough_responses():
    """Eleven patients answered, none on this measure: no score to show (and no division by zero)."""
    assert measure_summary(Sums(responses=20, n=0), MIN_N) == {"suppressed": True}


# --- cell_summary ----------------------------------------------------------------------------------


@pytest.mark.parametrize("responses", [0, 1, 5, 10])
def test_cell_below_min_n_hides_all_counts(responses):
    """No responses, sent, rate or score: a rate and a sent count would let a reader work out the count."""
    measures = {"satisfaction": sums_of(singles([90.0] * 30)), "friction": sums_of(singles([10.0] * 30))}
    summary = cell_summary(sent=100, responses=responses, measures=measures, min_n=MIN_N)
    assert summary == {"suppressed": True, "satisfaction": {"suppressed": True}, "friction": {"suppressed": True},
                       "nps": {"suppressed": True}}
    assert not keys_anywhere(summary) & COUNT_KEYS


def test_cell_at_min_n_is_shown_with_counts_and_rate():
    sat = sums_of(singles(DATASETS["rating-mix"]))
    fri = sums_of([[0.0, 100 / 6], [50.0]] * 6)
    summary = cell_summary(sent=37, responses=12, measures={"satisfaction": sat, "friction": fri}, min_n=MIN_N)
    assert summary["suppressed"] is False
    assert summary["responses"] == 12 and summary["sent"] == 37
    assert summary["response_rate"] == round(12 / 37, 4) == 0.3243
    assert summary["satisfaction"] == measure_summary(sat, MIN_N)
    # 18 friction answers from 12 patients: 6 answered both questions, a count under the threshold.
    assert summary["friction"] == {**measure_summary(fri, MIN_N), "n": None, "responses": None}
    assert measure_summary(fri, MIN_N)["n"] == 18 and measure_summary(fri, MIN_N)["responses"] == 12


def test_cell_shown_but_thin_measure_suppressed():
    """A cell over the threshold can still have a measure only a few patients answered."""
    measures = {"satisfaction": sums_of([[80.0, 80.0]] * 20), "friction": sums_of(singles([30.0] * 8))}
    summary = cell_summary(sent=50, responses=20, measures=measures, min_n=MIN_N)
    assert summary["satisfaction"]["suppressed"] is False
    assert summary["friction"] == {"suppressed": True}


def test_cell_with_missing_measure_reports_it_suppressed():
    summary = cell_summary(sent=40, responses=20, measures={"satisfaction": sums_of(singles([70.0] * 20))},
                           min_n=MIN_N)
    assert summary["friction"] == {"suppressed": True}
    assert summary["satisfaction"]["score"] == 70.0


@pytest.mark.parametrize(("sent", "responses", "rate"), [(20, 20, 1.0), (40, 20, 0.5), (300, 11, 0.0367)])
def test_response_rate_is_responses_over_sent(sent, responses, rate):
    assert cell_summary(sent, responses, {}, MIN_N)["response_rate"] == rate


def test_response_rate_is_none_when_nothing_was_sent():
    """With no threshold and nothing sent, the rate is undefined rather than a ZeroDivisionError."""
    summary = cell_summary(sent=0, responses=0, measures={}, min_n=0)
    assert summary["suppressed"] is False and summary["response_rate"] is None


# --- complementary suppression -----------------------------------------------------------------------


@pytest.mark.parametrize(("counts", "hidden"), [
    ([40, 30], set()),
    ([40, 0, 30], {1}),  # an empty cell hides nothing
    ([40, 5], {0, 1}),  # 40 shown would give 5 away from the stage total
    ([40, 5, 30, 12], {1, 3}),  # the smallest other cell covers it
    ([3, 4, 50], {0, 1, 2}),
    ([11, 11], set()),
    ([10], {0}),
])
def test_complementary_suppression(counts, hidden):
    assert complementary_suppression([counts], MIN_N, {i for i, c in enumerate(counts) if c < MIN_N}) == hidden


def test_no_hidden_total_of_1_to_10_is_ever_left_derivable():
    """Every split of up to four cells with 0-25 each: the hidden cells add up to 0, to 11 or more,
    or are all of them (then the parent itself holds the total and is judged on its own)."""
    import itertools

    for size in range(1, 5):
        for counts in itertools.product(range(0, 26, 3), repeat=size):
            hidden = complementary_suppression([list(counts)], MIN_N, {i for i, c in enumerate(counts) if c < MIN_N})
            assert {i for i, c in enumerate(counts) if c < MIN_N} <= hidden
            total = sum(counts[i] for i in hidden)
            assert total == 0 or total >= MIN_N or len(hidden) == len(counts), counts


def _shown_minus_parent(parent, children, key):
    """What subtraction gives for the hidden children: the parent's value minus the shown ones."""
    shown = [c[key] for c in children if c.get(key) is not None]
    return None if parent.get(key) is None else parent[key] - sum(shown)


@pytest.mark.parametrize(("sent", "responses"), [
    ([80, 20], [40, 15]),  # 5 of the second touchpoint's patients did not answer
    ([60, 5], [30, 0]),  # a touchpoint that sent 5 and heard nothing back
    ([45, 45, 13], [40, 40, 12]),
])
def test_no_count_of_1_to_10_can_be_worked_out_from_a_stage_and_its_shown_touchpoints(sent, responses):
    per_tp = [{"satisfaction": sums_of(singles([95.0] * (r // 3) + [50.0] * (r - r // 3)))} for r in responses]
    hidden = sibling_suppression(sent, responses, per_tp, MIN_N)
    cells = [cell_summary(s, r, m, MIN_N, h) for s, r, m, h in zip(sent, responses, per_tp, hidden)]
    stage_sums = Sums()
    for m in per_tp:
        stage_sums.add(m["satisfaction"])
    stage = cell_summary(sum(sent), sum(responses), {"satisfaction": stage_sums}, MIN_N)
    for key in ("responses",):
        left = _shown_minus_parent(stage, [c for c in cells if not c["suppressed"]], key)
        assert left is None or left == 0 or left >= MIN_N
    shown_sent = [c for c in cells if not c["suppressed"] and c["sent"] is not None]
    if stage.get("sent") is not None:
        left_sent = stage["sent"] - sum(c["sent"] for c in shown_sent)
        left_resp = stage["responses"] - sum(c["responses"] for c in shown_sent)
        assert not 0 < left_sent - left_resp < MIN_N  # the hidden non-responders
    for c in cells:
        if not c["suppressed"] and c["sent"] is not None:
            assert not 0 < c["sent"] - c["responses"] < MIN_N


def test_a_measure_answered_only_at_its_ends_is_hidden_when_its_top_box_is():
    """Yes/no answers (0 or 100): score x n is the top box. With 5 of 50 outside it, showing the
    score would count those 5; one middling answer breaks the link and the score shows again."""
    ends = [[100.0]] * 45 + [[0.0]] * 5
    s = Sums()
    for scores in ends:
        s.add(Sums.of_response(scores, [v >= TOP for v in scores], [v <= 100 - TOP for v in scores]))
    assert measure_summary(s, MIN_N) == {"suppressed": True}
    middling = Sums()
    for scores in ends + [[50.0]]:
        middling.add(Sums.of_response(scores, [v >= TOP for v in scores], [v <= 100 - TOP for v in scores]))
    shown = measure_summary(middling, MIN_N)
    assert shown["suppressed"] is False and shown["top_box_pct"] is None and shown["n"] == 51
    # Enough on each side: the share may be shown, and so may the score.
    balanced = Sums()
    for scores in [[100.0]] * 30 + [[0.0]] * 20:
        balanced.add(Sums.of_response(scores, [v >= TOP for v in scores], [v <= 100 - TOP for v in scores]))
    assert measure_summary(balanced, MIN_N)["top_box_pct"] == 60.0
