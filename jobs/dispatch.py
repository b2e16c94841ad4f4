"""Send every due invitation, batch after batch, until none is left."""
from __future__ import annotations

import os
import socket
from collections import Counter

from feedback_service.scheduling.dispatch import dispatch_due
from feedback_service.scheduling.rules import SendPolicy

NAME = "dispatch"


def interval(app) -> int:
    return app.config["FEEDBACK_DISPATCH_INTERVAL_SECONDS"]


def run(app) -> dict:
    worker = f"{socket.gethostname()}:{os.getpid()}"
    totals: Counter[str] = Counter()
    with app.app_context():
        policy = SendPolicy.from_config(app.config)
        batch = app.config["FEEDBACK_DISPATCH_BATCH_SIZE"]
        while True:
            report = dispatch_due(policy, worker, batch_size=batch,
                                  max_attempts=app.config["FEEDBACK_DISPATCH_MAX_ATTEMPTS"])
            totals.update(report.outcomes)
            if report.claimed < batch:
                return dict(totals)
