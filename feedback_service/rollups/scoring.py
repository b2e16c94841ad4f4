"""Score definitions, applied to running sums: plain functions, no database.

Every scored answer is normalised to 0-100. Satisfaction: 100 = best. Friction: 100 = most
friction. A cell's score is the mean of its answers on that measure, with a 95% confidence
interval (normal approximation, clamped to 0-100) and the share of answers in the best box.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959964


@dataclass
class Sums:
    responses: int = 0
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    top_box: int = 0

    def add(self, other: "Sums") -> None:
        self.responses += other.responses
        self.n += other.n
        self.total += other.total
        self.total_sq += other.total_sq
        self.top_box += other.top_box


def measure_summary(s: Sums, min_n: int) -> dict:
    """The reported figures for one measure of one cell, or {"suppressed": true}.

    Suppression counts responses (patients), not answers, so that two questions on the same
    measure cannot lift a cell of six patients over the threshold.
    """
    if s.responses < min_n or s.n == 0:
        return {"suppressed": True}
    mean = s.total / s.n
    if s.n > 1:
        variance = max(s.total_sq - s.n * mean * mean, 0.0) / (s.n - 1)
        half = Z95 * math.sqrt(variance / s.n)
    else:
        half = 0.0
    return {
        "suppressed": False,
        "score": round(mean, 1),
        "n": s.n,
        "responses": s.responses,
        "top_box_pct": round(100.0 * s.top_box / s.n, 1),
        "ci95": [round(max(0.0, mean - half), 1), round(min(100.0, mean + half), 1)],
    }


def cell_summary(sent: int, responses: int, measures: dict[str, Sums], min_n: int) -> dict:
    """Counts, response rate and both measures for a stage or touchpoint."""
    if responses < min_n:
        # Counts of 1 to 10 must not be shown, nor the rate they would let a reader work out.
        return {"suppressed": True, "satisfaction": {"suppressed": True}, "friction": {"suppressed": True}}
    return {
        "suppressed": False,
        "responses": responses,
        "sent": sent,
        "response_rate": round(responses / sent, 4) if sent else None,
        "satisfaction": measure_summary(measures.get("satisfaction", Sums()), min_n),
        "friction": measure_summary(measures.get("friction", Sums()), min_n),
    }
