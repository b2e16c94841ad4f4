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
from ..patients.models import Patient
from ..rollups.services import record_sent
from ..security import hash_secret, new_token
from ..sqltypes import utcnow
from .models import Invitation
from .rules import SendPolicy, next_send_time, next_sms_slot
from .services import channel_block, texts_out

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
        select(Invitation.id, Invitation.link_ttl_days, Invitation.channel, Patient.phone, Patient.email)
        .join(Patient, Invitation.patient_id == Patient.id)
        .where(Invitation.status == "scheduled", Invitation.send_at <= now)
        .order_by(Invitation.send_at, Invitation.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Invitation)
    ).all()
    claimed = {}
    for inv_id, ttl_days, medium, phone, email in due:
        token = new_token()
        # The address and the link's lifetime are fixed at claim time, so that a message that went
        # out just before a crash (status "unknown") can still be answered, stopped and counted.
        result = db.session.execute(
            update(Invitation)
            .where(Invitation.id == inv_id, Invitation.status == "scheduled")
            .values(status="sending", claimed_at=now, claimed_by=worker, token_hash=hash_secret(token),
                    sent_to=phone if medium == "sms" else email,
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
        channel = (channels or {}).get(invitation.channel) or channel_for(invitation.channel)
        try:
            outcome, values = _attempt(invitation, token, channel, policy, now, max_attempts)
        except Exception:
            # Something broke before anything was handed to a channel: back in the queue.
            db.session.rollback()
            log.exception("invitation %s: error before sending", inv_id)
            outcome, values = _requeue(invitation, now, max_attempts, "error before sending")
        report.add(outcome if _finish(inv_id, worker, outcome, values) else "lost")
    if claimed:
        log.info("dispatch: worker=%s claimed=%d outcomes=%s", worker, report.claimed, report.outcomes)
    return report


_RELEASED = {"token_hash": None, "expires_at": None, "claimed_at": None, "claimed_by": None, "sent_to": None}


def _finish(inv_id: int, worker: str, outcome: str, values: dict) -> bool:
    """Record an outcome, unless the row changed under us (a lease that ran out during a very slow
    send, then an answer): whatever happened to it then stands."""
    applied = db.session.execute(
        update(Invitation)
        .where(Invitation.id == inv_id, Invitation.claimed_by == worker,
               Invitation.status.in_(("sending", "unknown")))
        .values(**values)
    ).rowcount == 1
    if applied and outcome == "sent":
        record_sent(db.session.get(Invitation, inv_id))
    db.session.commit()
    return applied


def _failed(error: str) -> tuple[str, dict]:
    return "failed", {**_RELEASED, "status": "failed", "last_error": error}


def _requeue(invitation: Invitation, now, max_attempts: int, error: str) -> tuple[str, dict]:
    if invitation.attempts < max_attempts:
        return "retry", {**_RELEASED, "status": "scheduled", "send_at": now + _backoff(invitation.attempts),
                         "last_error": error}
    return _failed(error)


def _attempt(invitation: Invitation, token: str, channel: Channel, policy: SendPolicy, now,
             max_attempts: int) -> tuple[str, dict]:
    """Check the rules again, send, and say what to record: (outcome, column values)."""
    patient = invitation.patient
    if policy.too_late(invitation.send_at, now):
        return "expired", {**_RELEASED, "status": "expired"}
    blocked = channel_block(patient, invitation.channel)
    if blocked:
        return "skipped", {**_RELEASED, "status": "skipped", "skip_reason": blocked}
    earliest = now
    if invitation.channel == "sms":
        # Overdue texts (late events, a stopped worker, retries) can bunch up: the limits are
        # checked again against the texts that really went out, or are going, to this number.
        earliest = next_sms_slot(now, texts_out(invitation), policy.sms_per_day, policy.sms_per_week)
    # A due row found at night (worker was down, or a retry) waits for the morning.
    tz = patient.timezone or policy.default_timezone
    slot = next_send_time(earliest, tz, policy.window_start, policy.window_end)
    if slot > now:
        return "deferred", {**_RELEASED, "status": "scheduled", "send_at": slot,
                            "attempts": Invitation.attempts - 1}

    try:
        message = invitation_message(invitation, survey_url(token))
    except Exception:
        # Nothing left us: a broken template is a failure, not a doubt.
        log.exception("invitation %s: could not compose the message", invitation.id)
        return _failed("could not compose the message")
    try:
        delivery = channel.send(message)
    except SendError as exc:
        error = f"{exc.code or type(exc).__name__}: {exc}"[:200]
        log.warning("invitation %s: send error: %s", invitation.id, exc.code or type(exc).__name__)
        if exc.transient:
            return _requeue(invitation, now, max_attempts, error)
        return _failed(error)
    except Exception:
        # The channel broke in a way we cannot read: it may or may not have sent.
        log.exception("invitation %s: outcome unknown", invitation.id)
        return "unknown", {"status": "unknown", "last_error": "channel raised an unexpected error"}
    return "sent", {"status": "sent", "sent_at": now, "provider_message_id": delivery.provider_message_id}


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
