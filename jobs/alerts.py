"""Email each stage's owner about its new alerts."""
from __future__ import annotations

from feedback_service.alerts.notify import send_alert_notices

NAME = "alerts"


def interval(app) -> int:
    return app.config["FEEDBACK_DISPATCH_INTERVAL_SECONDS"]


def run(app) -> dict:
    with app.app_context():
        return send_alert_notices(batch_size=app.config["FEEDBACK_DISPATCH_BATCH_SIZE"])
