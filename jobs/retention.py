"""Remove what identifies patients once it is older than FEEDBACK_RETENTION_DAYS; scores stay."""
from __future__ import annotations

from feedback_service.retention import purge_expired

NAME = "retention"


def interval(app) -> int:
    # The cut-off moves a day a day; each run walks the events table once.
    return 24 * 3600


def run(app) -> dict:
    with app.app_context():
        return purge_expired(app.config["FEEDBACK_RETENTION_DAYS"], stop=app.extensions["feedback_stopping"])
