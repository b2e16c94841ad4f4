"""Send every due invitation, batch after batch, until none is left."""
from __future__ import annotations

import os
import socket

from feedback_service.scheduling.dispatch import dispatch_due
from feedback_service.scheduling.rules import SendPolicy

NAME = "dispatch"


def interval(app) -> int:
    return app.config["FEEDBACK_DISPATCH_INTERVAL_SECONDS"]


def run(app) -> dict:
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with app.app_context():
        report = dispatch_due(SendPolicy.from_config(app.config), worker,
                              batch_size=app.config["FEEDBACK_DISPATCH_BATCH_SIZE"],
                              max_attempts=app.config["FEEDBACK_DISPATCH_MAX_ATTEMPTS"], until_idle=True,
                              stop=app.extensions["feedback_stopping"])
        return report.outcomes
