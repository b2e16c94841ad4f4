"""Tell each stage's owner of its new alerts by email, through the channel interface. Each notice
is claimed in a committed UPDATE before it is handed over, so a crash never sends it twice; one
whose sender died mid-send becomes "unknown" (the alert itself waits on the dashboard)."""
from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app, render_template
from sqlalchemy import select, update

from ..channels.base import Message, SendError, UncertainSendError
from ..channels.registry import channel_for
from ..config import public_url
from ..extensions import db
from ..sqltypes import utcnow
from .models import Alert

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=10)

KIND_TEXT = {"low-satisfaction": "a satisfaction answer at the bottom of its scale",
             "high-friction": "a friction answer at the top of its scale",
             "term": "a comment with a watched term"}


def alert_message(alert: Alert, owner: str, url: str) -> Message:
    """Where and why, and a link to sign in and read it: no patient detail, no answers, no comment."""
    context = {"alert": alert, "stage": alert.stage.name, "touchpoint": alert.touchpoint.name,
               "journey": alert.stage.journey.name, "why": sorted({KIND_TEXT[r["kind"]] for r in alert.reasons}),
               "url": url, "organisation": current_app.config["FEEDBACK_ORGANISATION_NAME"]}
    render = lambda part: render_template(f"messages/staff_alert/en/{part}", **context).strip()  # noqa: E731
    return Message(None, "email", owner, render("body.txt"), url, "en", subject=render("subject.txt"),
                   alert_id=alert.id)


def send_alert_notices(batch_size: int = 50, now=None, channel=None) -> dict[str, int]:
    now = now or utcnow()
    report = {"sent": 0, "failed": 0, "unknown": 0, "no-owner": 0, "retry": 0}
    # A sender that died holding a claim: the notice may have gone; never send it again blindly.
    report["unknown"] += db.session.execute(
        update(Alert).where(Alert.notify_status == "sending", Alert.notify_claimed_at < now - LEASE)
        .values(notify_status="unknown")).rowcount
    db.session.commit()
    ids = db.session.scalars(select(Alert.id).where(Alert.notify_status == "pending")
                             .order_by(Alert.id).limit(batch_size)).all()
    for alert_id in ids:
        alert = db.session.get(Alert, alert_id)
        owner = alert.stage.owner_email
        if not owner:
            alert.notify_status = "no-owner"
            db.session.commit()
            report["no-owner"] += 1
            continue
        claimed = db.session.execute(update(Alert).where(Alert.id == alert_id, Alert.notify_status == "pending")
                                     .values(notify_status="sending", notify_claimed_at=now, notified_to=owner))
        db.session.commit()
        if claimed.rowcount != 1:
            continue  # another worker's
        url = public_url(current_app.config, f"/dashboard/alerts/{alert.id}")
        try:
            (channel or channel_for("email")).send(alert_message(alert, owner, url))
            status = "sent"
        except UncertainSendError:
            status = "unknown"
        except SendError as exc:
            status = "pending" if exc.transient else "failed"
            log.warning("alert %s: notice not sent (%s)", alert.id, exc)
        db.session.execute(update(Alert).where(Alert.id == alert_id)
                           .values(notify_status=status, notified_at=now if status == "sent" else None))
        db.session.commit()
        report["retry" if status == "pending" else status] += 1
    return report
