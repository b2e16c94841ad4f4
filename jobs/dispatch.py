"""Send every due invitation, batch after batch, until none is left."""
from __future__ import annotations

import os
import socket
import threading

from feedback_service.scheduling.dispatch import dispatch_due
from feedback_service.scheduling.rules import SendPolicy

NAME = "dispatch"
# Set when the worker is asked to stop: sends under way finish, claimed ones not yet started are
# given back at once, instead of the whole backlog being worked off first.
STOPPING = threading.Event()


def interval(app) -> int:
    return app.config["FEEDBACK_DISPATCH_INTERVAL_SECONDS"]


def run(app) -> dict:
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with app.app_context():
        report = dispatch_due(SendPolicy.from_config(app.config), worker,
                              batch_size=app.config["FEEDBACK_DISPATCH_BATCH_SIZE"],
                              max_attempts=app.config["FEEDBACK_DISPATCH_MAX_ATTEMPTS"], until_idle=True,
                              stop=STOPPING)
        return report.outcomes
