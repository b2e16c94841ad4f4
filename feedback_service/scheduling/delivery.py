"""What the providers tell us after a send: delivery statuses, bounces and complaints, and proof
that a message in doubt went out. Plain functions; the webhooks check signatures and call these."""
from __future__ import annotations

import logging

from sqlalchemy import select, update

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


def find_invitation(invitation_id, message_id: str | None) -> Invitation | None:
    """The invitation a provider's post is about: by the id we gave it, checked against the
    provider's message id where both are known; else by the message id alone."""
    if invitation_id is not None:
        invitation = db.session.get(Invitation, invitation_id)
        if invitation is not None and (not message_id or invitation.provider_message_id in (None, message_id)):
            return invitation
        return None
    if message_id:
        return db.session.scalar(select(Invitation).where(Invitation.provider_message_id == message_id))
    return None


def confirm_sent(invitation: Invitation, message_id: str | None = None) -> bool:
    """An invitation in doubt ("unknown") proved to have gone out: count it as sent, once."""
    values = {"status": "sent", "sent_at": invitation.send_started_at or invitation.claimed_at}
    if message_id and not invitation.provider_message_id:
        values["provider_message_id"] = message_id
    done = db.session.execute(
        update(Invitation).where(Invitation.id == invitation.id, Invitation.status == "unknown").values(**values)
    ).rowcount == 1
    if done:
        record_sent(invitation)
        log.info("invitation %s: in doubt, now known to have gone out", invitation.id)
    return done


def record_delivery(invitation: Invitation, status: str, error_code: str | None = None,
                    message_id: str | None = None, now=None) -> None:
    """Record what the provider says became of a message (committed)."""
    now = now or utcnow()
    confirm_sent(invitation, message_id)  # any word from the provider means it had the message
    if RANK.get(status, -1) >= RANK.get(invitation.delivery_status or "", -1):
        invitation.delivery_status = status
    if status == "delivered" and invitation.delivered_at is None:
        invitation.delivered_at = now
    if status in UNDELIVERED:
        if error_code:
            invitation.error_code = str(error_code)[:40]
        fail_undelivered(invitation, now)
    db.session.commit()


def fail_undelivered(invitation: Invitation, now) -> None:
    """The provider could not deliver a sent message: fail it and try the rule's next channel. Only
    a message nobody answered fails: an answer proves it arrived after all. Not committed."""
    failed = db.session.execute(
        update(Invitation).where(Invitation.id == invitation.id, Invitation.status == "sent")
        .values(status="failed", last_error=f"provider: {invitation.delivery_status} {invitation.error_code or ''}")
    ).rowcount == 1
    if failed:
        fail_over(invitation, now)


def record_opened(invitation: Invitation, now=None) -> None:
    confirm_sent(invitation)
    if invitation.opened_at is None:
        invitation.opened_at = now or utcnow()
    db.session.commit()


def record_sms_status(invitation_id, message_id: str | None, status: str, error_code: str | None) -> bool:
    """A Twilio status callback; False if it matches no invitation of ours."""
    invitation = find_invitation(invitation_id, message_id)
    if invitation is None or invitation.channel != "sms":
        return False
    record_delivery(invitation, status, error_code or None, message_id)
    return True


def record_email_events(events: list[dict]) -> int:
    """SendGrid event-webhook posts; returns how many matched an invitation. Every effect is
    idempotent, so SendGrid's retries and duplicate events change nothing."""
    matched = 0
    for item in events:
        kind, email = item.get("event"), item.get("email")
        if kind in SUPPRESSING and isinstance(email, str) and not (kind == "bounce" and item.get("type") == "blocked"):
            opt_out("email", normalise_address("email", email), source=f"sendgrid:{kind}")
        invitation_id = item.get("invitation_id")
        if not (isinstance(invitation_id, str) and invitation_id.isdigit()):
            continue
        invitation = find_invitation(int(invitation_id), None)
        if invitation is None or invitation.channel != "email" or not isinstance(email, str) \
                or normalise_address("email", email) != invitation.sent_to:
            continue
        matched += 1
        if kind == "open":
            record_opened(invitation)
        elif kind == "bounce" and item.get("type") == "blocked":
            record_delivery(invitation, "blocked", item.get("status"))
        elif kind in RANK:
            record_delivery(invitation, kind, item.get("status"))
    return matched
