"""Turn stored hospital messages into events: what an MLLP listener acknowledged and stored but
had not processed when it stopped (its own processing thread does the rest)."""
from __future__ import annotations

from feedback_service.events.intake import process_pending

NAME = "intake"


def interval(app) -> int:
    return 30


def run(app) -> int:
    with app.app_context():
        total = 0
        while count := process_pending(app.extensions["feedback_intake"]):
            total += count
        return total
