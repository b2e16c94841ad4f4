"""Cell and measure summaries from running sums (feedback_service/rollups/scoring.py)."""
from __future__ import annotations

import math
import random
import statistics

import pytest

from feedback_service.rollups.scoring import Sums, cell_summary, measure_summary

MIN_N = 11  # the configured CMS threshold: counts of 1 to 10 are never shown
Z95 = 1.959964
COUNT_KEYS = {"responses", "sent", "response_rate", "score", "n", "top_box_pct", "ci95"}


def sums_of(values: list[float], responses: int | None = None, top_box: int | None = None) -> Sums:
    """Running sums as the rollup tables keep them; top box defaults to answers scoring >= 90."""
    return Sums(
        responses=len(values) if responses is None else responses,
        n=len(values),
        total=sum(values),
        total_sq=sum(v * v for v in values),
        top_box=sum(v >= 90 for v in values) if top_box is None else top_box,
    )


def direct_ci(values: list[float]) -> tuple[float, float]:
    """95% CI computed straight from the values: normal approximation, sample sd, clamped 0-100."""
    mean = statistics.fmean(values)
    half = Z95 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return max(0.0, mean - half), min(100.0, mean + half)


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


# --- measure_summary -------------------------------------------------------------------------------


@pytest.mark.parametrize("values", DATASETS.values(), ids=DATASETS.keys())
def test_mean_and_ci_from_running_sums_match_direct_computation(values):
    summary = measure_summary(sums_of(values), MIN_N)
    lo, hi = direct_ci(values)
    assert summary["suppressed"] is False
    assert summary["n"] == len(values)
    assert abs(summary["score"] - statistics.fmean(values)) <= ROUNDING
    assert abs(summary["ci95"][0] - lo) <= ROUNDING
    assert abs(summary["ci95"][1] - hi) <= ROUNDING
    assert 0.0 <= summary["ci95"][0] <= summary["score"] <= summary["ci95"][1] <= 100.0


def test_ci_is_clamped_to_the_scale():
    """Unclamped, these intervals would run past 100 and below 0."""
    top = measure_summary(sums_of(DATASETS["near-top-clamped"]), MIN_N)
    bottom = measure_summary(sums_of(DATASETS["near-bottom-clamped"]), MIN_N)
    assert top["ci95"][1] == 100.0 and top["ci95"][0] < top["score"]
    assert bottom["ci95"][0] == 0.0 and bottom["ci95"][1] > bottom["score"]


def test_known_values():
    """12 answers, mean 77.083, sample sd 24.905, half-width 14.09, 5 in the top box."""
    values = DATASETS["rating-mix"]
    summary = measure_summary(sums_of(values), MIN_N)
    assert summary == {
        "suppressed": False,
        "score": 77.1,
        "n": 12,
        "responses": 12,
        "top_box_pct": 41.7,
        "ci95": [63.0, 91.2],
    }


def test_single_answer_gives_zero_width_interval():
    summary = measure_summary(Sums(responses=1, n=1, total=75.0, total_sq=5625.0, top_box=0), min_n=1)
    assert summary["score"] == 75.0
    assert summary["ci95"] == [75.0, 75.0]


def test_identical_answers_give_zero_width_interval():
    """No spread; floating-point noise in total_sq - n*mean^2 must not produce a NaN or a width."""
    values = [100 / 3] * 40
    summary = measure_summary(sums_of(values), MIN_N)
    assert summary["ci95"] == [33.3, 33.3]


@pytest.mark.parametrize(("top_box", "n", "pct"), [(0, 12, 0.0), (4, 12, 33.3), (12, 12, 100.0), (2, 3, 66.7)])
def test_top_box_pct_is_share_of_answers(top_box, n, pct):
    s = Sums(responses=20, n=n, total=50.0 * n, total_sq=2500.0 * n, top_box=top_box)
    assert measure_summary(s, MIN_N)["top_box_pct"] == pct


def test_top_box_pct_uses_answers_not_responses():
    """Six patients answering two questions each: 12 answers, 3 of them top box -> 25%."""
    s = Sums(responses=12, n=24, total=50.0 * 24, total_sq=2500.0 * 24, top_box=6)
    assert measure_summary(s, MIN_N)["top_box_pct"] == 25.0


@pytest.mark.parametrize(("responses", "n"), [(0, 0), (1, 1), (10, 10), (6, 12), (10, 30)])
def test_measure_below_min_n_responses_is_suppressed_entirely(responses, n):
    """Counted in responses, not answers; nothing but the flag is shown."""
    s = sums_of([80.0] * n, responses=responses)
    assert measure_summary(s, MIN_N) == {"suppressed": True}


def test_threshold_is_inclusive():
    summary = measure_summary(sums_of([80.0] * MIN_N), MIN_N)
    assert summary["suppressed"] is False and summary["responses"] == MIN_N


def test_no_answers_is_suppressed_even_with_enough_responses():
    """Eleven patients answered, none on this measure: no score to show (and no division by zero)."""
    assert measure_summary(Sums(responses=20, n=0), MIN_N) == {"suppressed": True}


def test_added_sums_summarise_like_the_combined_values():
    """Stage figures are built by adding touchpoint sums; the result equals summarising all values."""
    a, b = DATASETS["rating-mix"], DATASETS["effort-thirds"]
    combined = sums_of(a)
    combined.add(sums_of(b))
    direct = sums_of(a + b)
    assert (combined.responses, combined.n, combined.top_box) == (25, 25, 8)
    assert (direct.responses, direct.n, direct.top_box) == (25, 25, 8)
    assert combined.total == pytest.approx(direct.total) and combined.total_sq == pytest.approx(direct.total_sq)
    assert measure_summary(combined, MIN_N) == measure_summary(sums_of(a + b), MIN_N)


# --- cell_summary ----------------------------------------------------------------------------------


@pytest.mark.parametrize("responses", [0, 1, 5, 10])
def test_cell_below_min_n_hides_all_counts(responses):
    """No responses, sent, rate or score: a rate and a sent count would let a reader work out the count."""
    measures = {"satisfaction": sums_of([90.0] * 30, responses=30), "friction": sums_of([10.0] * 30, responses=30)}
    summary = cell_summary(sent=100, responses=responses, measures=measures, min_n=MIN_N)
    assert summary == {"suppressed": True, "satisfaction": {"suppressed": True}, "friction": {"suppressed": True}}
    assert not keys_anywhere(summary) & COUNT_KEYS


def test_cell_at_min_n_is_shown_with_counts_and_rate():
    sat = sums_of(DATASETS["rating-mix"], responses=12)
    fri = sums_of([0.0, 100 / 6, 50.0] * 4, responses=12)
    summary = cell_summary(sent=37, responses=12, measures={"satisfaction": sat, "friction": fri}, min_n=MIN_N)
    assert summary["suppressed"] is False
    assert summary["responses"] == 12 and summary["sent"] == 37
    assert summary["response_rate"] == round(12 / 37, 4) == 0.3243
    assert summary["satisfaction"] == measure_summary(sat, MIN_N)
    assert summary["friction"] == measure_summary(fri, MIN_N)


def test_cell_shown_but_thin_measure_suppressed():
    """A cell over the threshold can still have a measure only a few patients answered."""
    measures = {"satisfaction": sums_of([80.0] * 40, responses=20), "friction": sums_of([30.0] * 8, responses=8)}
    summary = cell_summary(sent=50, responses=20, measures=measures, min_n=MIN_N)
    assert summary["satisfaction"]["suppressed"] is False
    assert summary["friction"] == {"suppressed": True}


def test_cell_with_missing_measure_reports_it_suppressed():
    summary = cell_summary(sent=40, responses=20, measures={"satisfaction": sums_of([70.0] * 20)}, min_n=MIN_N)
    assert summary["friction"] == {"suppressed": True}
    assert summary["satisfaction"]["score"] == 70.0


@pytest.mark.parametrize(("sent", "responses", "rate"), [(20, 20, 1.0), (40, 20, 0.5), (300, 11, 0.0367)])
def test_response_rate_is_responses_over_sent(sent, responses, rate):
    assert cell_summary(sent, responses, {}, MIN_N)["response_rate"] == rate


def test_response_rate_is_none_when_nothing_was_sent():
    """With no threshold and nothing sent, the rate is undefined rather than a ZeroDivisionError."""
    summary = cell_summary(sent=0, responses=0, measures={}, min_n=0)
    assert summary["suppressed"] is False and summary["response_rate"] is None
