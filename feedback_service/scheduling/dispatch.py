"""The dispatcher: claim due invitations, send each through its channel, record the outcome.

Several workers may run this at once. A row is claimed by moving it from "scheduled" to
"sending" with a fresh link token in a committed transaction before anything is sent, so no two
workers send it; just before the provider is called its `send_started_at` is committed; its
outcome is committed after the provider answers. Each step is guarded by the claim's token hash,
so a claim that was given back and taken again cannot be finished by its first holder. A worker
that dies leaves the row in "sending": once the lease passes, a row never handed over goes back
to the queue, and one that was becomes "unknown" and is never resent blindly (at most once).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import exists, func, inspect, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import selectinload

from ..channels.base import MEDIA, Channel, Delivery, Message, SendError, UncertainSendError, rate_units
from ..channels.breaker import breaker_for, sends_allowed
from ..channels.messages import invitation_message
from ..channels.registry import channel_for
from ..config import public_url
from ..extensions import db
from ..patients.models import OptOut, Patient
from ..patients.services import normalise_address, opt_out
from ..rollups.services import record_sent
from ..security import hash_secret, new_token
from ..sqltypes import utcnow
from .delivery import settle
from .models import Invitation
from .rules import SendPolicy, next_send_time, next_sms_slot
from .services import channel_block, fail_over, text_history

log = logging.getLogger(__name__)


@dataclass
class DispatchReport:
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def survey_url(token: str) -> str:
    return public_url(current_app.config, f"/s/{token}")


def unsubscribe_url(token: str) -> str:
    return public_url(current_app.config, f"/unsubscribe/{token}")


def claim_due(now, worker: str, limit: int, medium: str) -> dict[int, str]:
    """Move up to `limit` due invitations on this medium to "sending"; returns {invitation id:
    fresh link token}."""
    # SKIP LOCKED lets workers on PostgreSQL take disjoint batches; SQLite drops the clause and
    # the conditional UPDATE below (rowcount 1 or 0) keeps a row from being claimed twice.
    due = db.session.execute(
        select(Invitation.id, Invitation.link_ttl_days, Patient.phone, Patient.email)
        .join(Patient, Invitation.patient_id == Patient.id)
        .where(Invitation.status == "scheduled", Invitation.channel == medium, Invitation.send_at <= now)
        .order_by(Invitation.send_at, Invitation.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Invitation)
    ).all()
    claimed = {}
    for inv_id, ttl_days, phone, email in due:
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


@dataclass
class _Stream:
    """One medium's own queue, pool of sending threads and claims: slow texts never hold up email."""

    medium: str
    pool: ThreadPoolExecutor
    pending: deque = field(default_factory=deque)  # (invitation, token, batch clock)
    busy: int = 0
    more: bool = True
    allowed: int = 0  # sends in flight at once: the concurrency, fewer while the provider is down


def _give_back(report: DispatchReport, stream: _Stream) -> None:
    """Return a stream's claims not yet handed over to the queue, as they were."""
    while stream.pending:
        invitation, token, _ = stream.pending.popleft()
        _record(report, invitation, hash_secret(token), "released", _GIVEN_BACK)


def dispatch_due(policy: SendPolicy, worker: str, now=None, batch_size: int = 100, max_attempts: int = 5,
                 channels: Mapping[str, Channel] | None = None, concurrency: int | None = None,
                 until_idle: bool = False, stop: threading.Event | None = None) -> DispatchReport:
    """Send one batch of due invitations per medium, or batch after batch until none is due
    (`until_idle`), through the app's channels unless others are given.

    The rules are checked and messages composed here; the provider calls run in a pool of threads
    per medium, each channel paced to its rate, so a slow provider does not serialise the sends.
    A medium's next batch is claimed while the last sends of the one before are still out. Only
    this thread touches the session; sending threads write one guarded UPDATE of their own. Once
    `stop` is set (the worker is shutting down) the sends under way finish and the rest are given
    back."""
    clock, fixed_now = utcnow(), now
    concurrency = concurrency or current_app.config["FEEDBACK_SEND_CONCURRENCY"]
    engine = db.engine
    report = DispatchReport()
    in_flight: dict[Future, tuple[_Stream, Invitation, str]] = {}

    def collect() -> None:
        for future in wait(in_flight, return_when=FIRST_COMPLETED).done:
            stream, invitation, claim = in_flight.pop(future)
            stream.busy -= 1
            result = future.result()
            if fixed_now is not None:  # a simulation (the demo, tests) runs on a clock of its own
                result.at = fixed_now + (result.at - clock)
            try:
                outcome = _retrying(lambda: _outcome(invitation, result, max_attempts), _id(invitation))
            except Exception:
                db.session.rollback()
                log.exception("invitation %s: could not judge the outcome", _id(invitation))
                report.add("unrecorded")  # left "sending": the recovery job settles it after its lease
                continue
            _record(report, invitation, claim, *outcome)

    # Each outcome is committed on its own, and a commit would otherwise expire every row loaded
    # for the batch, reloading them one by one. Outcomes are written with guarded UPDATEs that
    # also refresh the loaded rows; opt-outs and text limits are always queried afresh.
    session = db.session()
    expire_on_commit, session.expire_on_commit = session.expire_on_commit, False
    with ExitStack() as pools:
        streams = [_Stream(medium, pools.enter_context(ThreadPoolExecutor(concurrency, f"send-{medium}")))
                   for medium in MEDIA]
        try:
            while True:
                for stream in streams:
                    if stop is not None and stop.is_set():
                        stream.more = False
                        _give_back(report, stream)
                    channel = _channel(channels, stream.medium)
                    stream.allowed = sends_allowed(breaker_for(channel), concurrency)
                    if not stream.allowed:
                        stream.more = False  # the provider is down: leave its rows in the queue
                    if not stream.pending and stream.more:
                        batch_now = fixed_now or utcnow()
                        limit = _claim_limit(batch_size, channel)
                        claimed = {}
                        try:
                            claimed = claim_due(batch_now, worker, limit, stream.medium)
                            rows = _load(claimed)
                        except DATABASE_GONE:
                            # The database went away: claim no more this run, give back what was
                            # claimed, and see the sends under way through, so that their outcomes
                            # are written once it is back.
                            db.session.rollback()
                            log.warning("dispatch: database unavailable; no more claims this run")
                            _release(claimed)
                            for each in streams:
                                each.more = False
                            continue
                        report.claimed += len(claimed)
                        stream.pending.extend((rows[i], token, batch_now) for i, token in claimed.items())
                        stream.more = until_idle and len(claimed) == limit
                ready = next((st for st in streams if st.pending and st.busy < st.allowed), None)
                if ready is None:
                    if not in_flight:
                        for stream in streams:  # only a medium whose provider is down has any left
                            _give_back(report, stream)
                        break
                    collect()
                    continue
                streams.sort(key=lambda st: st is ready)  # take turns: the other medium goes first next
                invitation, token, batch_now = ready.pending.popleft()
                claim = hash_secret(token)
                channel = _channel(channels, ready.medium)
                try:
                    prepared = _prepare(invitation, token, policy, batch_now, max_attempts)
                except DATABASE_GONE:
                    db.session.rollback()
                    log.warning("dispatch: database unavailable; claims not yet sent given back")
                    ready.pending.appendleft((invitation, token, batch_now))
                    for each in streams:
                        each.more = False
                        _release({_id(inv): tok for inv, tok, _ in each.pending})
                        each.pending.clear()
                    continue
                except Exception:
                    # Something broke before anything was handed to a channel: back in the queue.
                    db.session.rollback()
                    log.exception("invitation %s: error before sending", _id(invitation))
                    prepared = _requeue(invitation, batch_now, max_attempts, "error before sending")
                if not isinstance(prepared, Message):
                    _record(report, invitation, claim, *prepared)
                    continue
                ready.busy += 1
                in_flight[ready.pool.submit(_send, engine, claim, channel, breaker_for(channel), prepared, stop)] = (
                    ready, invitation, claim)
        finally:
            session.expire_on_commit = expire_on_commit
            session.expire_all()  # the next user of this session must not see this run's snapshot
    if report.claimed:
        log.info("dispatch: worker=%s claimed=%d outcomes=%s", worker, report.claimed, report.outcomes)
    return report


def _channel(channels: Mapping[str, Channel] | None, medium: str) -> Channel:
    return (channels or {}).get(medium) or channel_for(medium)


# A text is rarely more than this many segments (a Spanish invitation with its link is three).
SEGMENTS_PER_TEXT = 3


def _claim_limit(batch_size: int, channel: Channel) -> int:
    """Claim no more than the channel's pace hands over within half the lease: a claim left
    waiting longer would be taken back from a worker that is alive and well."""
    interval = channel.pacer.interval * SEGMENTS_PER_TEXT if channel.pacer.interval else 0
    if not interval:
        return batch_size
    lease = current_app.config["FEEDBACK_SENDING_LEASE_SECONDS"]
    return max(1, min(batch_size, int(lease / 2 / interval)))


@dataclass
class SendResult:
    """What a sending thread reports: the provider's receipt, its refusal, or a doubt; or that it
    did not hand the message over at all."""

    at: datetime
    started: bool = True
    released: bool = False  # the worker is stopping: given back, not handed over
    delivery: Delivery | None = None
    error: SendError | None = None
    doubt: str | None = None


def _send(engine, claim: str, channel: Channel, breaker, message: Message,
          stop: threading.Event | None) -> SendResult:
    """In a sending thread: wait for the provider's pace, record that the message is being handed
    over (so a crash from here on leaves it in doubt, never resent), then hand it over. The
    hand-over is refused if the claim is no longer ours, or if the patient withdrew consent or
    the address opted out meanwhile. Nothing is handed over while the provider's circuit is open."""
    channel.pacer.wait(rate_units(message))
    if (stop is not None and stop.is_set()) or breaker.opened:
        return SendResult(utcnow(), started=False, released=True)
    table, opt_outs, patients = Invitation.__table__, OptOut.__table__, Patient.__table__
    consent = patients.c.consent_sms if message.medium == "sms" else patients.c.consent_email
    try:
        with engine.begin() as conn:
            started = conn.execute(
                update(table).where(
                    table.c.id == message.invitation_id, table.c.token_hash == claim, table.c.status == "sending",
                    table.c.send_started_at.is_(None),
                    exists().where(patients.c.id == table.c.patient_id, consent.is_(True),
                                   patients.c.deceased.is_(False), patients.c.no_publicity.is_(False)),
                    ~exists().where(opt_outs.c.medium == message.medium,
                                    opt_outs.c.address == normalise_address(message.medium, message.to)))
                .values(send_started_at=utcnow())).rowcount == 1
    except Exception:
        log.exception("invitation %s: could not record the hand-over; not sent", message.invitation_id)
        return SendResult(utcnow(), started=False, error=SendError("could not record the hand-over"))
    if not started:
        return SendResult(utcnow(), started=False)
    try:
        with breaker:
            return SendResult(utcnow(), delivery=channel.send(message))
    except SendError as exc:
        return SendResult(utcnow(), error=exc)
    except UncertainSendError as exc:
        return SendResult(utcnow(), doubt=str(exc))
    except Exception:
        # The channel broke in a way we cannot read: it may or may not have sent.
        log.exception("invitation %s: channel raised an unexpected error", message.invitation_id)
        return SendResult(utcnow(), doubt="channel raised an unexpected error")


def _load(ids) -> dict[int, Invitation]:
    """A batch's rows, with what composing their messages needs, in a few queries, not per row.
    (Held by the caller: the session only keeps weak references.)"""
    return {inv.id: inv for inv in db.session.scalars(
        select(Invitation).where(Invitation.id.in_(list(ids)))
        .options(selectinload(Invitation.patient), selectinload(Invitation.event),
                 selectinload(Invitation.question_set_version))
        .execution_options(populate_existing=True))}


def _outcome(invitation: Invitation, result: SendResult, max_attempts: int) -> tuple[str, dict]:
    if result.released:
        return "released", _GIVEN_BACK
    if not result.started:
        if result.error is not None:  # the database, not the provider: nothing went out
            return _requeue(invitation, result.at, max_attempts, str(result.error))
        # If still ours (else the guarded record below is refused), the patient withdrew consent
        # or the address opted out while the message waited its turn.
        db.session.refresh(invitation.patient)
        reason = channel_block(invitation.patient, invitation.channel) or "opted-out"
        return "skipped", {**_RELEASED, "status": "skipped", "skip_reason": reason}
    if result.delivery is not None:
        # A status callback may have beaten us here: it knows more than the provider's first answer.
        return "sent", {"status": "sent", "sent_at": result.at,
                        "delivery_status": func.coalesce(Invitation.delivery_status, result.delivery.status),
                        "provider_message_id": result.delivery.provider_message_id}
    if result.doubt is not None:
        log.error("invitation %s: outcome unknown, not resent: %s", invitation.id, result.doubt)
        return "unknown", {"status": "unknown", "last_error": result.doubt[:200]}
    exc = result.error
    error = f"{exc.code or type(exc).__name__}: {exc}"[:200]
    log.warning("invitation %s: send error %s", invitation.id, exc.code or type(exc).__name__)
    db.session.refresh(invitation, ["delivery_status"])
    if invitation.delivery_status:
        # The provider answered with an error, yet its status callback says it has the message:
        # in doubt, and settled as sent by that callback, never sent again.
        return "unknown", {"status": "unknown", "last_error": error}
    if exc.transient:
        return _requeue(invitation, result.at, max_attempts, error, exc.code)
    if exc.address_refused:
        return _failed(error, exc.code, "blocked" if exc.address_blocked else "refused")
    return _failed(error, exc.code)


DATABASE_GONE = (OperationalError, InterfaceError)
# Seconds between tries while the database is away (a restart): about half a minute in all, since
# an outcome lost here turns a message that went out into one in doubt.
_DATABASE_RETRIES = (0.5, 1, 2, 4, 8, 15)


def _id(invitation: Invitation) -> int:
    # A rollback expires every loaded row, its id too; the identity map still knows it, without
    # asking a database that may be away.
    return inspect(invitation).identity[0]


def _retrying(work, invitation_id: int):
    """work(), tried again while the database is away; the last failure is raised."""
    for pause in _DATABASE_RETRIES:
        try:
            return work()
        except DATABASE_GONE:
            db.session.rollback()
            log.warning("invitation %s: database unavailable, trying again in %ss", invitation_id, pause)
            time.sleep(pause)
    return work()


def _record(report: DispatchReport, invitation: Invitation, claim: str, outcome: str, values: dict) -> None:
    try:
        # Safe to repeat: a commit that did land before the connection broke changed the row, so
        # the guarded UPDATE no longer applies and nothing is counted twice.
        applied = _retrying(lambda: _finish(invitation, claim, outcome, values), _id(invitation))
        report.add(outcome if applied else "lost")
    except Exception:
        # One outcome that cannot be written must not abandon the others: this row stays
        # "sending" and is settled by the recovery job after its lease.
        db.session.rollback()
        log.exception("invitation %s: could not record %s", _id(invitation), outcome)
        report.add("unrecorded")


def _release(claimed: dict[int, str]) -> None:
    """Give claims never handed over back to the queue, by id and claim token, once the database
    answers (without it, the recovery job does so after the lease)."""
    def release():
        for inv_id, token in claimed.items():
            db.session.execute(update(Invitation).where(
                Invitation.id == inv_id, Invitation.token_hash == hash_secret(token),
                Invitation.status == "sending", Invitation.send_started_at.is_(None)).values(**_GIVEN_BACK))
        db.session.commit()
    if claimed:
        try:
            _retrying(release, next(iter(claimed)))
        except Exception:
            db.session.rollback()
            log.exception("dispatch: could not give %d claims back; the recovery job will", len(claimed))


_RELEASED = {"token_hash": None, "expires_at": None, "claimed_at": None, "claimed_by": None, "sent_to": None,
             "send_started_at": None}
# A claimed row never handed over, returned to the queue as it was (the claim was no attempt).
_GIVEN_BACK = {**_RELEASED, "status": "scheduled", "attempts": Invitation.attempts - 1}


def _finish(invitation: Invitation, claim: str, outcome: str, values: dict) -> bool:
    """Record an outcome, unless the row changed under us (a claim given back after its lease ran
    out during a very slow send, then taken again; an answer): whatever happened to it then stands."""
    address = invitation.sent_to
    applied = db.session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, Invitation.token_hash == claim,
               Invitation.status.in_(("sending", "unknown")))
        .values(**values)
    ).rowcount == 1
    if applied and outcome == "sent":
        record_sent(invitation)
    if applied and outcome == "unknown":
        db.session.refresh(invitation, ["delivery_status"])
    if applied and outcome in ("sent", "unknown") and invitation.delivery_status:
        # A status callback came in while we waited for the provider: what it said stands.
        settle(invitation)
    if applied and outcome in ("refused", "blocked"):
        # The provider refused this address: the rule's next channel gets its chance.
        fail_over(invitation, utcnow())
    db.session.commit()
    if applied and outcome == "blocked":
        opt_out(invitation.channel, address, source=f"provider:{values['error_code']}")
    return applied


def _failed(error: str, code: str | None = None, outcome: str = "failed") -> tuple[str, dict]:
    """The invitation fails. Outcome "refused": the provider will not deliver to the address, so
    the rule's next channel is tried; "blocked": that, and the address is opted out for good."""
    return outcome, {**_RELEASED, "status": "failed", "last_error": error, "error_code": code}


def _requeue(invitation: Invitation, now, max_attempts: int, error: str, code: str | None = None) -> tuple[str, dict]:
    if invitation.attempts < max_attempts:
        return "retry", {**_RELEASED, "status": "scheduled", "send_at": now + _backoff(invitation.attempts),
                         "last_error": error, "error_code": code}
    return _failed(error, code)


def _prepare(invitation: Invitation, token: str, policy: SendPolicy, now, max_attempts: int):
    """Check the rules again and compose the message; or say what to record instead:
    (outcome, column values)."""
    patient = invitation.patient
    if policy.too_late(invitation.send_at, now):
        return "expired", {**_RELEASED, "status": "expired"}
    if invitation.send_by is not None and now > invitation.send_by:
        return "expired", {**_RELEASED, "status": "expired", "skip_reason": "outside-contact-window"}
    blocked = channel_block(patient, invitation.channel)
    if blocked:
        return "skipped", {**_RELEASED, "status": "skipped", "skip_reason": blocked}
    earliest, first_text = now, False
    if invitation.channel == "sms":
        # Overdue texts (late events, a stopped worker, retries) can bunch up: the limits are
        # checked again against the texts that really went out, or are going, to this number.
        times, texted_before = text_history(invitation)
        earliest = next_sms_slot(now, times, policy.sms_per_day, policy.sms_per_week)
        first_text = not texted_before
    # A due row found at night (worker was down, or a retry) waits for the morning.
    tz = patient.timezone or policy.default_timezone
    slot = next_send_time(earliest, tz, policy.window_start, policy.window_end)
    if slot > now:
        return "deferred", {**_GIVEN_BACK, "send_at": slot}
    try:
        return invitation_message(invitation, survey_url(token), unsubscribe_url(token), first_text)
    except Exception:
        # Nothing left us: a broken template is a failure, not a doubt.
        log.exception("invitation %s: could not compose the message", invitation.id)
        return _failed("could not compose the message")


def _backoff(attempt: int) -> timedelta:
    """Exponential backoff with jitter: about 30 s, 1 min, 2 min ... capped at an hour."""
    base = min(30 * 2 ** (attempt - 1), 3600)
    return timedelta(seconds=base * random.uniform(0.5, 1.5))


def recover_stale(now=None, lease: timedelta = timedelta(minutes=5)) -> int:
    """Settle invitations a worker left in "sending" past their lease: those it never handed to a
    provider go back to the queue; those it did become "unknown" and are not resent blindly.
    A reminder left "sending" becomes "unknown" too, and is never resent (a courtesy: at most
    once). Returns how many invitations were in doubt."""
    now = now or utcnow()
    stale = (Invitation.status == "sending", Invitation.claimed_at < now - lease)
    requeued = db.session.execute(
        update(Invitation).where(*stale, Invitation.send_started_at.is_(None))
        .values(**_GIVEN_BACK, last_error="worker stopped before sending; requeued")
    ).rowcount
    doubt = db.session.execute(
        update(Invitation).where(*stale, Invitation.send_started_at.is_not(None))
        .values(status="unknown", last_error="worker stopped mid-send; outcome unknown")
    ).rowcount
    reminders = db.session.execute(
        update(Invitation).where(Invitation.reminder_status == "sending", Invitation.reminded_at < now - lease)
        .values(reminder_status="unknown", reminder_reason="worker stopped mid-send")
    ).rowcount
    # The provider may have told us about some already (a status callback beat the crash).
    for invitation in db.session.scalars(select(Invitation).where(
            Invitation.status == "unknown", Invitation.delivery_status.is_not(None))):
        settle(invitation, now=now)
    db.session.commit()
    if requeued or doubt or reminders:
        log.warning("recover: %d claims given back, %d invitations and %d reminders in doubt marked unknown",
                    requeued, doubt, reminders)
    return doubt


def in_doubt() -> list[Invitation]:
    return list(db.session.scalars(select(Invitation).where(Invitation.status == "unknown")
                                   .order_by(Invitation.claimed_at, Invitation.id)))


def resend_in_doubt(ids) -> int:
    """A person decided these invitations in doubt never went out: back in the queue, due now.
    Committed; returns how many were still in doubt."""
    count = db.session.execute(
        update(Invitation).where(Invitation.id.in_(list(ids)), Invitation.status == "unknown")
        .values(**_RELEASED, status="scheduled", send_at=utcnow(), last_error="resent by hand")
    ).rowcount
    db.session.commit()
    log.warning("invitations in doubt queued again by hand: %d", count)
    return count


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
    late += db.session.execute(
        update(Invitation).where(Invitation.status == "scheduled", Invitation.send_by < now)
        .values(status="expired", skip_reason="outside-contact-window")
    ).rowcount
    db.session.commit()
    return links + late
