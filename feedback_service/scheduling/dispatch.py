"""The dispatcher: claim due invitations, send each through its channel, record the outcome.

Several workers may run this at once. A row is claimed by moving it from "scheduled" to
"sending" in a committed transaction before anything is sent, so no two workers send it; it
becomes "sent" in a second commit after the provider accepted it. A worker that dies between
the two leaves the row in "sending"; once the lease passes it becomes "unknown" and is never
resent blindly (at most once delivery).
"""
from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from ..channels.base import Channel, SendError
from ..channels.messages import invitation_message
from ..channels.registry import channel_for
from ..extensions import db
from ..rollups.services import record_sent
from ..security import hash_secret, new_token
from ..sqltypes import utcnow
from .models import Invitation
from .rules import SendPolicy, next_send_time, next_sms_slot
from .services import channel_block, texts_to

log = logging.getLogger(__name__)


@dataclass
class DispatchReport:
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def survey_url(token: str) -> str:
    return f"{current_app.config['FEEDBACK_BASE_URL'].rstrip('/')}/s/{token}"


def claim_due(now, worker: str, limit: int) -> dict[int, str]:
    """Move up to `limit` due invitations to "sending"; returns {invitation id: fresh link token}."""
    # SKIP LOCKED lets workers on PostgreSQL take disjoint batches; SQLite drops the clause and
    # the conditional UPDATE below (rowcount 1 or 0) keeps a row from being claimed twice.
    due = db.session.execute(
        select(Invitation.id, Invitation.link_ttl_days)
        .where(Invitation.status == "scheduled", Invitation.send_at <= now)
        .order_by(Invitation.send_at, Invitation.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    claimed = {}
    for inv_id, ttl_days in due:
        token = new_token()
        # The link's lifetime is fixed at claim time, so a link that went out just before a crash
        # (status "unknown") still works for as long as it should.
        result = db.session.execute(
            update(Invitation)
            .where(Invitation.id == inv_id, Invitation.status == "scheduled")
            .values(status="sending", claimed_at=now, claimed_by=worker, token_hash=hash_secret(token),
                    expires_at=now + timedelta(days=ttl_days), attempts=Invitation.attempts + 1)
        )
        if result.rowcount == 1:
            claimed[inv_id] = token
    db.session.commit()
    return claimed


def dispatch_due(policy: SendPolicy, worker: str, now=None, batch_size: int = 100,
                 max_attempts: int = 5, channels: Mapping[str, Channel] | None = None) -> DispatchReport:
    """Send one batch of due invitations, through the app's channels unless others are given."""
    now = now or utcnow()
    report = DispatchReport()
    claimed = claim_due(now, worker, batch_size)
    report.claimed = len(claimed)
    for inv_id, token in claimed.items():
        invitation = db.session.get(Invitation, inv_id)
        if invitation.claimed_by != worker or invitation.status not in ("sending", "unknown"):
            # Changed under us (a lease that ran out during a very slow batch, then an answer):
            # whatever happened to it stands.
            report.add("lost")
            continue
        channel = (channels or {}).get(invitation.channel) or channel_for(invitation.channel)
        report.add(_send_one(invitation, token, channel, policy, now, max_attempts))
        db.session.commit()
    if claimed:
        log.info("dispatch: worker=%s claimed=%d outcomes=%s", worker, report.claimed, report.outcomes)
    return report


def _defer(invitation: Invitation, until) -> str:
    invitation.status, invitation.send_at, invitation.token_hash = "scheduled", until, None
    invitation.attempts, invitation.expires_at = invitation.attempts - 1, None
    return "deferred"


def _send_one(invitation: Invitation, token: str, channel: Channel, policy: SendPolicy, now,
              max_attempts: int) -> str:
    patient = invitation.patient
    if policy.too_late(invitation.send_at, now):
        invitation.status, invitation.token_hash, invitation.expires_at = "expired", None, None
        return "expired"
    blocked = channel_block(patient, invitation.channel)
    if blocked:
        invitation.status, invitation.skip_reason, invitation.token_hash = "skipped", blocked, None
        invitation.expires_at = None
        return "skipped"
    earliest = now
    if invitation.channel == "sms":
        # Overdue texts (late events, a stopped worker, retries) can bunch up: the limits are
        # checked again against the texts that really went out to this number.
        sent = texts_to(patient.phone, now, now, out_only=True, exclude_id=invitation.id)
        earliest = next_sms_slot(now, sent, policy.sms_per_day, policy.sms_per_week)
    # A due row found at night (worker was down, or a retry) waits for the morning.
    tz = patient.timezone or policy.default_timezone
    slot = next_send_time(earliest, tz, policy.window_start, policy.window_end)
    if slot > now:
        return _defer(invitation, slot)

    try:
        message = invitation_message(invitation, survey_url(token))
    except Exception:
        # Nothing left us: a broken template is a failure, not a doubt.
        invitation.status, invitation.token_hash = "failed", None
        invitation.last_error = "could not compose the message"
        log.exception("invitation %s: could not compose the message", invitation.id)
        return "failed"
    try:
        delivery = channel.send(message)
    except SendError as exc:
        invitation.last_error = f"{exc.code or type(exc).__name__}: {exc}"[:200]
        invitation.token_hash, invitation.expires_at = None, None
        if exc.transient and invitation.attempts < max_attempts:
            invitation.status = "scheduled"
            invitation.send_at = now + _backoff(invitation.attempts)
            log.warning("invitation %s: transient send error, retry %d", invitation.id, invitation.attempts)
            return "retry"
        invitation.status = "failed"
        log.warning("invitation %s: send failed: %s", invitation.id, exc.code or type(exc).__name__)
        return "failed"
    except Exception:
        # The channel broke in a way we cannot read: it may or may not have sent.
        invitation.status, invitation.last_error = "unknown", "channel raised an unexpected error"
        log.exception("invitation %s: outcome unknown", invitation.id)
        return "unknown"
    # Conditional: if the lease ran out meanwhile and the row was marked "unknown", we now know
    # better; if the patient already answered, that stands.
    marked = db.session.execute(
        update(Invitation).where(Invitation.id == invitation.id, Invitation.status.in_(("sending", "unknown")))
        .values(status="sent", sent_at=now, sent_to=message.to, provider_message_id=delivery.provider_message_id)
    ).rowcount
    if marked:
        record_sent(invitation)
    return "sent"


def _backoff(attempt: int) -> timedelta:
    """Exponential backoff with jitter: about 30 s, 1 min, 2 min ... capped at an hour."""
    base = min(30 * 2 ** (attempt - 1), 3600)
    return timedelta(seconds=base * random.uniform(0.5, 1.5))


def recover_stale(now=None, lease: timedelta = timedelta(minutes=5)) -> int:
    """Mark invitations stuck in "sending" past their lease as "unknown"; they are not resent."""
    now = now or utcnow()
    result = db.session.execute(
        update(Invitation)
        .where(Invitation.status == "sending", Invitation.claimed_at < now - lease)
        .values(status="unknown", last_error="worker stopped mid-send; outcome unknown")
    )
    db.session.commit()
    if result.rowcount:
        log.warning("recover: %d invitations in doubt marked unknown", result.rowcount)
    return result.rowcount


def expire_unanswered(policy: SendPolicy, now=None) -> int:
    """Expire sent links past their lifetime, and scheduled invitations too late to send."""
    now = now or utcnow()
    links = db.session.execute(
        update(Invitation).where(Invitation.status == "sent", Invitation.expires_at < now).values(status="expired")
    ).rowcount
    late = db.session.execute(
        update(Invitation)  # policy.too_late(), in SQL
        .where(Invitation.status == "scheduled", Invitation.send_at < now - policy.max_send_delay)
        .values(status="expired")
    ).rowcount
    db.session.commit()
    return links + late
