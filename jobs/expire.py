"""Expire unanswered links past their lifetime and invitations too late to send."""
from __future__ import annotations

from feedback_service.scheduling.dispatch import expire_unanswered
from feedback_service.scheduling.rules import SendPolicy

NAME = "expire"


def interval(app) -> int:
    return 300


def run(app) -> int:
    with app.app_context():
        return expire_unanswered(SendPolicy.from_config(app.config))
