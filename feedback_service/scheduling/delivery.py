"""What the providers tell us after a send: delivery statuses, bounces and complaints, and proof
that a message in doubt went out. Plain functions; the webhooks check signatures and call these."""
from __future__ import annotations

import logging

from sqlalchemy import or_, select, update

from ..extensions import db
from ..patients.services import normalise_address, opt_out
from ..rollups.services import record_sent
from ..sqltypes import utcnow
from .models import Invitation
from .services import fail_over

log = logging.getLogger(__name__)

# Callbacks arrive out of order: a later state never gives way to an earlier one.
RANK = {"accepted": 0, "queued": 1, "processed": 1, "sending": 2, "sent": 3, "deferred": 3,
        "delivered": 4, "undelivered": 4, "failed": 4, "bounce": 4, "blocked": 4, "dropped": 4, "read": 5}
# The patient did not get it: the invitation fails and the rule's next channel is tried.
UNDELIVERED = {"undelivered", "failed", "bounce", "blocked", "dropped"}
# SendGrid events after which an address must get no more email from us.
SUPPRESSING = {"bounce", "dropped", "spamreport", "unsubscribe", "group_unsubscribe"}
MAX_ID = 2 ** 62  # ids beyond any row we have, and beyond what the databases' integers hold


def invitation_for_post(invitation_id, message_id: str | None) -> Invitation | None:
    """The invitation a provider's post is about: by the id we gave it, checked against the
    provider's message id where both are known; else by the message id alone."""
    if invitation_id is not None:
        if not 0 < invitation_id < MAX_ID:
            return None
        invitation = db.session.get(Invitation, invitation_id)
        if invitation is not None and (not message_id or invitation.provider_message_id in (None, message_id)):
            return invitation
        return None
    if message_id:
        return db.session.scalar(select(Invitation).where(Invitation.provider_message_id == message_id[:100]))
    return None


def confirm_sent(invitation: Invitation, message_id: str | None = None) -> bool:
    """An invitation in doubt ("unknown") proved to have gone out: count it as sent, once."""
    values = {"status": "sent", "sent_at": invitation.handed_over_at}
    if message_id and not invitation.provider_message_id:
        values["provider_message_id"] = message_id[:100]
    done = db.session.execute(
        update(Invitation).where(Invitation.id == invitation.id, Invitation.status == "unknown").values(**values)
    ).rowcount == 1
    if done:
        record_sent(invitation)
        log.info("invitation %s: in doubt, now known to have gone out", invitation.id)
    return done


def settle(invitation: Invitation, message_id: str | None = None, now=None) -> None:
    """What the provider said about a message stands: if it was in doubt, it went out; if the
    provider could not deliver it, it fails and the rule's next channel is tried. Not committed."""
    if invitation.status == "unknown":
        confirm_sent(invitation, message_id)
    if invitation.delivery_status in UNDELIVERED:
        # Only a message nobody answered fails: an answer proves it arrived after all.
        failed = db.session.execute(
            update(Invitation).where(Invitation.id == invitation.id, Invitation.status == "sent")
            .values(status="failed",
                    last_error=f"provider: {invitation.delivery_status} {invitation.error_code or ''}".strip())
        ).rowcount == 1
        if failed:
            record_sent(invitation, -1)  # its successor is counted when it goes out
            fail_over(invitation, now or utcnow())


def record_delivery(invitation: Invitation, status: str, error_code: str | None = None,
                    message_id: str | None = None, now=None) -> None:
    """Record what the provider says became of a message (committed)."""
    now = now or utcnow()
    # In SQL, so that two callbacks handled at once cannot put an earlier state over a later one;
    # between final states ("delivered", "undelivered") the first word stands.
    earlier = [s for s, rank in RANK.items() if rank < RANK.get(status, -1)]
    values = {"delivery_status": status}
    if status in UNDELIVERED and error_code:
        values["error_code"] = str(error_code)[:40]
    db.session.execute(update(Invitation).where(
        Invitation.id == invitation.id,
        or_(Invitation.delivery_status.is_(None), Invitation.delivery_status.in_(earlier))).values(**values))
    if status == "delivered":
        db.session.execute(update(Invitation).where(Invitation.id == invitation.id,
                                                    Invitation.delivered_at.is_(None)).values(delivered_at=now))
    db.session.refresh(invitation)
    # Any word from the provider means it had the message; "sending" rows are their worker's to
    # settle (it reads what was recorded here when it finishes).
    settle(invitation, message_id, now)
    db.session.commit()


def record_email_opened(invitation: Invitation, now=None) -> None:
    settle(invitation, now=now)
    db.session.execute(update(Invitation).where(Invitation.id == invitation.id,
                                                Invitation.email_opened_at.is_(None))
                       .values(email_opened_at=now or utcnow()))
    db.session.commit()


def record_sms_status(invitation_id, message_id: str | None, status: str, error_code: str | None) -> bool:
    """A Twilio status callback; False if it matches no invitation of ours."""
    invitation = invitation_for_post(invitation_id, message_id)
    if invitation is None or invitation.channel != "sms" or not status:
        return False
    record_delivery(invitation, status[:20], error_code or None, message_id)
    return True


def record_email_events(events: list[dict]) -> int:
    """SendGrid event-webhook posts; returns how many matched an invitation. Every effect is
    idempotent, so SendGrid's retries and duplicate events change nothing."""
    matched = 0
    for item in events:
        kind, email = item.get("event"), item.get("email")
        if not (isinstance(kind, str) and isinstance(email, str) and 3 <= len(email) <= 254):
            continue
        email = normalise_address("email", email)
        blocked = kind == "bounce" and item.get("type") == "blocked"  # the receiving server, for now
        if kind in SUPPRESSING and not blocked:
            opt_out("email", email, source=f"sendgrid:{kind}")
        invitation_id = item.get("invitation_id")
        if not (isinstance(invitation_id, str) and invitation_id.isascii() and invitation_id.isdigit()
                and len(invitation_id) <= 18):
            continue
        invitation = invitation_for_post(int(invitation_id), None)
        if invitation is None or invitation.channel != "email" or email != invitation.sent_to:
            continue
        matched += 1
        if kind == "open":
            record_email_opened(invitation)
        elif item.get("reminder") == "1":
            continue  # a reminder's delivery is not the invitation's (its opt-outs count, above)
        elif kind in RANK or blocked:
            error = item.get("status")
            record_delivery(invitation, "blocked" if blocked else kind, error if isinstance(error, str) else None)
    return matched
