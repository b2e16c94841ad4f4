"""Send the one reminder a rule allows to invitations still unanswered, once it is due."""
from __future__ import annotations

import os
import socket

from feedback_service.scheduling.reminders import send_due_reminders
from feedback_service.scheduling.rules import SendPolicy

NAME = "remind"


def interval(app) -> int:
    return app.config["FEEDBACK_DISPATCH_INTERVAL_SECONDS"]


def run(app) -> dict:
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with app.app_context():
        return send_due_reminders(SendPolicy.from_config(app.config), worker,
                                  batch_size=app.config["FEEDBACK_DISPATCH_BATCH_SIZE"],
                                  stop=app.extensions["feedback_stopping"])
