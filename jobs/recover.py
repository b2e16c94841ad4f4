"""Settle what a dead worker left in "sending": rows never handed over go back to the queue,
rows that were become "unknown" (never resent blindly)."""
from __future__ import annotations

from datetime import timedelta

from feedback_service.scheduling.dispatch import recover_stale

NAME = "recover"


def interval(app) -> int:
    return 60


def run(app) -> int:
    with app.app_context():
        return recover_stale(lease=timedelta(seconds=app.config["FEEDBACK_SENDING_LEASE_SECONDS"]))
