"""Reminders: the one reminder a trigger rule allows, `reminder_hours` after an invitation went
out, if it is still unanswered. It goes to the address the invitation went to, with a survey link
of its own (both links open the same survey). A courtesy, sent at most once: it is claimed in a
committed, guarded UPDATE before anything is sent, and whatever happens then (sent, failed, or a
worker that died mid-send: "unknown") is never retried.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import selectinload

from ..channels.base import Channel, Message, SendError, UncertainSendError, rate_units
from ..channels.breaker import breaker_for
from ..channels.messages import invitation_message
from ..channels.registry import channel_for
from ..events.models import Event
from ..extensions import db
from ..journeys.models import TriggerRule
from ..patients.services import is_opted_out, opt_out
from ..security import hash_secret, new_token
from ..sqltypes import utcnow
from .dispatch import survey_url, unsubscribe_url
from .models import Invitation
from .rules import SendPolicy, next_send_time, next_sms_slot
from .services import channel_block, rule_window, text_history

log = logging.getLogger(__name__)

# Only invitations sent this recently are looked at: it keeps the query to recent rows, and no
# link lives longer (the rule editor keeps a reminder inside its link's lifetime).
LOOK_BACK = timedelta(days=31)
# A reminder whose link would stop working this soon after it arrives is not worth sending.
EXPIRY_MARGIN = timedelta(hours=12)


def send_due_reminders(policy: SendPolicy, worker: str, now=None, batch_size: int = 100,
                       channels: Mapping[str, Channel] | None = None,
                       stop: threading.Event | None = None) -> dict[str, int]:
    """Send every reminder that is due, or record why it never will be; returns the outcomes
    counted (sent, failed, unknown, skipped, deferred, lost). One that must wait (quiet hours,
    text limits) is left as it is and looked at again on the next run."""
    fixed_now, outcomes = now, {}
    hours = db.session.scalars(select(TriggerRule.reminder_hours)
                               .where(TriggerRule.reminder_hours.is_not(None)).distinct()).all()
    if not hours:
        return outcomes
    # Outcomes are committed one by one with guarded UPDATEs; without this every commit would
    # expire the page's rows and reload them one at a time.
    session = db.session()
    expire_on_commit, session.expire_on_commit = session.expire_on_commit, False
    after = None
    try:
        while True:
            page = _due(hours, fixed_now or utcnow(), after, batch_size)
            for invitation, rule in page:
                if stop is not None and stop.is_set():
                    return outcomes
                # Each claim is stamped with its own time: a slow page must not age it past its lease.
                outcome = _remind(invitation, rule, policy, fixed_now or utcnow(), channels)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if len(page) < batch_size:
                break
            # Those left waiting stay due: page past them, or a night's worth of them in one time
            # zone would hold up every patient in daylight elsewhere.
            after = (page[-1][0].sent_at, page[-1][0].id)
    finally:
        session.expire_on_commit = expire_on_commit
        session.expire_all()
    if outcomes.keys() - {"deferred"}:
        log.info("remind: worker=%s outcomes=%s", worker, outcomes)
    return outcomes


def _due(hours: list[int], now, after, limit: int) -> list[tuple[Invitation, TriggerRule]]:
    """Sent, unanswered invitations whose rule's reminder is due, oldest first, after `after`."""
    # One cut-off per reminder delay in use (a handful): plain comparisons, the same SQL on
    # SQLite and PostgreSQL, instead of date arithmetic on a column.
    due = or_(*(and_(TriggerRule.reminder_hours == h, Invitation.sent_at <= now - timedelta(hours=h))
                for h in hours))
    query = (
        select(Invitation, TriggerRule)
        .join(Event, Invitation.event_id == Event.id)
        .join(TriggerRule, and_(TriggerRule.journey_id == Invitation.journey_id, TriggerRule.event_type == Event.type))
        .where(Invitation.status == "sent", Invitation.reminder_status.is_(None),
               Invitation.sent_at >= now - LOOK_BACK, TriggerRule.active.is_(True), due)
        .order_by(Invitation.sent_at, Invitation.id)
        .limit(limit)
        .options(selectinload(Invitation.patient))
    )
    if after is not None:
        query = query.where(or_(Invitation.sent_at > after[0],
                                and_(Invitation.sent_at == after[0], Invitation.id > after[1])))
    return [tuple(row) for row in db.session.execute(query)]


def _remind(invitation: Invitation, rule: TriggerRule, policy: SendPolicy, now,
            channels: Mapping[str, Channel] | None) -> str:
    reason, slot = _check(invitation, rule, policy, now)
    if reason is not None:
        return "skipped" if _set(invitation, "skipped", reason) else "lost"
    if slot > now:
        return "deferred"
    token = new_token()
    try:
        message = invitation_message(invitation, survey_url(token), unsubscribe_url(token), reminder=True)
    except Exception:
        log.exception("invitation %s: could not compose the reminder", invitation.id)
        return "failed" if _set(invitation, "failed", "could not compose the message") else "lost"
    channel = (channels or {}).get(invitation.channel) or channel_for(invitation.channel)
    breaker = breaker_for(channel)
    if breaker.opened:
        return "deferred"  # the provider is down: the reminder waits for it
    # The provider's pace is waited for before the claim, so a claim is held only while sending.
    channel.pacer.wait(rate_units(message))
    claim = hash_secret(token)
    claimed = _update(invitation, dict(reminder_status="sending", reminded_at=now, reminder_token_hash=claim),
                      Invitation.status == "sent", Invitation.reminder_status.is_(None))
    if not claimed:
        return "lost"  # answered or expired meanwhile, or another worker's
    outcome, reason = _send(channel, breaker, message)
    # A claim the recovery job marked "unknown" (a very slow send) learns what really happened.
    _update(invitation, dict(reminder_status=outcome, reminder_reason=reason),
            Invitation.reminder_token_hash == claim, Invitation.reminder_status.in_(("sending", "unknown")))
    return outcome


def _check(invitation: Invitation, rule: TriggerRule, policy: SendPolicy, now) -> tuple[str | None, datetime]:
    """(Why the reminder will never go, or None; the earliest moment it may go)."""
    patient = invitation.patient
    tz = patient.timezone or policy.default_timezone
    window = rule_window(rule, policy)
    slot = next_send_time(now, tz, *window)
    if slot <= now:  # the database is asked only about reminders that could go now
        medium, address = invitation.channel, invitation.sent_to
        blocked = channel_block(patient, medium) or ("opted-out" if is_opted_out(medium, address) else None)
        if blocked:
            return blocked, now
        if medium == "sms":
            times, _ = text_history(invitation, reminder=True)
            slot = next_send_time(next_sms_slot(now, times, policy.sms_per_day, policy.sms_per_week), tz, *window)
    if slot > invitation.expires_at - EXPIRY_MARGIN:
        return "link-expiring", slot
    return None, slot


def _send(channel: Channel, breaker, message: Message) -> tuple[str, str | None]:
    try:
        with breaker:
            channel.send(message)
        return "sent", None
    except UncertainSendError as exc:
        log.error("invitation %s: reminder outcome unknown, not resent: %s", message.invitation_id, exc)
        return "unknown", "outcome unknown"
    except SendError as exc:
        log.warning("invitation %s: reminder not sent: %s", message.invitation_id, exc.code or type(exc).__name__)
        if exc.address_blocked:  # a STOP the carrier holds: no more texts to this number at all
            opt_out(message.medium, message.to, source=f"provider:{exc.code}")
        return "failed", f"{type(exc).__name__} {exc.code or ''}".strip()[:40]
    except Exception:
        # The channel broke in a way we cannot read: it may or may not have sent.
        log.exception("invitation %s: channel raised an unexpected error", message.invitation_id)
        return "unknown", "channel raised an unexpected error"


def _set(invitation: Invitation, status: str, reason: str) -> bool:
    """Record that the reminder will not go (never to be looked at again), unless it changed."""
    return _update(invitation, dict(reminder_status=status, reminder_reason=reason),
                   Invitation.status == "sent", Invitation.reminder_status.is_(None))


def _update(invitation: Invitation, values: dict, *guard) -> bool:
    """A guarded UPDATE of one row, committed; whether it applied."""
    applied = db.session.execute(
        update(Invitation).where(Invitation.id == invitation.id, *guard).values(**values)).rowcount == 1
    db.session.commit()
    return applied
