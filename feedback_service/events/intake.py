"""Hospital messages in: store each one before it is acknowledged, then turn what it says into
journey events (mapped, excluded or scheduled) with the same trigger rules as the JSON API."""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta

from sqlalchemy import insert, or_, select, text, union_all, update
from sqlalchemy.exc import IntegrityError, OperationalError

from ..extensions import db
from ..journeys.models import Journey
from ..patients.services import find_by_fhir_id, upsert_from_hospital
from ..scheduling.models import Invitation
from ..scheduling.rules import SendPolicy
from ..scheduling.services import schedule_invitation
from ..sqltypes import utcnow
from . import fhir, hl7v2
from .exclusions import exclusion, hcahps_eligible
from .inbound import (BOOKING, CANCEL, CONTACT_UPDATE, EMERGENCY, INPATIENT, VISIT_END, Codes, MessageError, Moment,
                      PatientFacts)
from .mapping import Mapping
from .models import Event, HospitalMessage
from .services import InvitationOutcome, with_retries

log = logging.getLogger(__name__)

# A processor that has held a message this long died or hung: another may take it.
PROCESSING_LEASE = timedelta(minutes=2)
INTAKE_LOCK = 0x46424B49  # PostgreSQL advisory lock key: "FBKI"
CANCELLED_MARK = "~cancelled:"


@dataclass(frozen=True)
class IntakeSettings:
    """Everything processing reads, built once from the app config (the mapping file included)."""

    mapping: Mapping
    policy: SendPolicy
    min_age: int
    hcahps_hold: timedelta
    timezone: str

    @classmethod
    def from_config(cls, config, mapping: Mapping) -> "IntakeSettings":
        return cls(mapping, SendPolicy.from_config(config), config["FEEDBACK_MIN_PATIENT_AGE"],
                   timedelta(days=config["FEEDBACK_HCAHPS_HOLD_DAYS"]), config["FEEDBACK_DEFAULT_TIMEZONE"])


# --- storing ------------------------------------------------------------------------------------

REUSED_ID = "MSH-10: this control id was already used for a different message from this sender"


def store_messages(items: list[tuple[str, str, str, str, str]]) -> list[bool]:
    """Store (source, protocol, control id, type, body) messages in one transaction, committed.
    For each: True when it is stored (now, or before: a sender resending a message it saw no ACK
    for), False when its control id was already used for a different body: that one is not
    stored and must not be acknowledged."""
    table = HospitalMessage.__table__
    now = utcnow()
    rows = [{"source": s, "protocol": p, "control_id": c[:128], "message_type": t[:40], "body": b,
             "received_at": now, "status": "received"} for s, p, c, t, b in items]
    try:
        # A connection of its own and Core, not the session and the ORM: this is on the path of
        # every ACK.
        with db.engine.begin() as conn:
            conn.execute(insert(table), rows)
        return [True] * len(rows)
    except IntegrityError:
        pass
    stored = []
    for row in rows:  # a resend among them (rare): one at a time, each new or compared with the stored one
        with db.engine.begin() as conn:
            key = (table.c.source == row["source"], table.c.protocol == row["protocol"],
                   table.c.control_id == row["control_id"])
            body = conn.execute(select(table.c.body).where(*key)).scalar()
            if body is None:
                conn.execute(insert(table).values(row))  # a concurrent copy winning makes this raise
            stored.append(body is None or body == row["body"])
    return stored


# --- HL7 v2 -------------------------------------------------------------------------------------

def check_hl7(text: str, settings: IntakeSettings):
    """Read an HL7 message enough to acknowledge it: (parsed message, whether we act on its
    type); MessageError (AR or AE) otherwise. Reading is repeated when it is processed."""
    message = hl7v2.parse(text)
    moments = hl7v2.moments(message, settings.mapping.region, settings.timezone)
    return message, bool(moments)


def receive_hl7(text: str, source: str, settings: IntakeSettings, now=None) -> str:
    """The HTTP way: check, store, process, and answer the ACK."""
    try:
        message, acted_on = check_hl7(text, settings)
    except MessageError as exc:
        return hl7v2.ack(text, "AR" if exc.reject else "AE", exc.reason)
    if acted_on:
        [stored] = store_messages([(source, "hl7v2", hl7v2.control_id(message), hl7v2.message_type(message),
                                    hl7v2.normalise(text))])
        if not stored:
            return hl7v2.ack(message, "AE", REUSED_ID)
        # Processed here unless another processor is at work (then it takes this one in turn).
        process_pending(settings, limit=100, now=now)
    return hl7v2.ack(message, "AA")


def process_pending(settings: IntakeSettings, limit: int = 500, now=None, yield_to=None) -> int:
    """Process stored HL7 messages one at a time in arrival order (an A08 after its S12, a cancel
    after its booking), however many processes call this (the MLLP listener, the worker's intake
    job, the HTTP endpoint): returns how many this call processed. Stops early when `yield_to()`
    says something more urgent waits, or when another processor is at work."""
    session = db.session()
    # Journeys, rules and question sets stay loaded from one message to the next instead of being
    # read again after every commit; what is written is read fresh (populate_existing).
    expire, session.expire_on_commit = session.expire_on_commit, False
    done = 0
    try:
        while done < limit and not (yield_to is not None and yield_to()):
            claimed = _claim_next(utcnow())
            if claimed is None:
                break
            row_id, stamp = claimed
            try:
                with_retries(lambda: _process_hl7(row_id, stamp, settings, now or utcnow()))
                done += 1
            except OperationalError:  # the database went away: the message waits for the next run
                session.rollback()
                _close(row_id, stamp, "received")
                raise
            except Exception as exc:  # noqa: BLE001  (one bad message must not stop the feed)
                session.rollback()
                log.exception("message %s could not be processed", row_id)
                _close(row_id, stamp, "failed", error=type(exc).__name__)
    finally:
        session.expire_on_commit = expire
        session.expire_all()
    return done


def _claim_next(now) -> tuple[int, object] | None:
    """Take the oldest waiting HL7 message, unless another processor holds one: (id, claim time)
    or None. One statement (SQLite takes its write lock for it); on PostgreSQL an advisory lock
    makes the check and the take one step for concurrent processors too."""
    table = HospitalMessage.__table__
    stale = now - PROCESSING_LEASE
    mine = (table.c.protocol == "hl7v2")
    # The oldest waiting one, and the oldest one a dead processor left: each an indexed look-up of
    # one row (status, id), never a walk over the backlog or the processed history.
    waiting = select(table.c.id).where(mine, table.c.status == "received").order_by(table.c.id).limit(1).subquery()
    left = select(table.c.id).where(mine, table.c.status == "processing", table.c.claimed_at <= stale) \
        .order_by(table.c.id).limit(1).subquery()
    either = union_all(select(waiting.c.id), select(left.c.id)).subquery()
    oldest = select(either.c.id).order_by(either.c.id).limit(1)
    busy = select(table.c.id).where(mine, table.c.status == "processing", table.c.claimed_at > stale)
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INTAKE_LOCK})
        row_id = conn.execute(update(table).where(table.c.id == oldest.scalar_subquery(), ~busy.exists())
                              .values(status="processing", claimed_at=now).returning(table.c.id)).scalar()
    return (row_id, now) if row_id is not None else None


def _process_hl7(row_id: int, stamp, settings: IntakeSettings, now) -> None:
    row = db.session.get(HospitalMessage, row_id, with_for_update=True, populate_existing=True)
    if row.status != "processing" or row.claimed_at != stamp:
        db.session.rollback()  # taken from us after the lease: the other processor finishes it
        return
    message = hl7v2.parse(row.body)
    try:
        moments = hl7v2.moments(message, settings.mapping.region, settings.timezone)
        results = [record_moment(m, row.source, settings, now, row.id) for m in moments]
    except MessageError as exc:  # cannot happen for a message checked before its ACK, unless the code changed
        results = [{"outcome": "error", "reason": exc.reason}]
    row.status, row.processed_at, row.result = "processed", now, results
    db.session.commit()
    log.info("message %s (%s) processed: %s", row_id, row.message_type, [r["outcome"] for r in results])


# --- FHIR ---------------------------------------------------------------------------------------

def receive_fhir(body, source: str, settings: IntakeSettings, now=None) -> tuple[str, list[dict]]:
    """Read, store and process a FHIR request: (what it was, one result per entry, in order).
    MessageError when the request as a whole is refused (nothing stored); TransactionRefused when
    a transaction Bundle has a bad entry (all or nothing: no event is stored). A request posted
    again is processed again: its events are then duplicates, and an entry refused the first time
    (a Patient not yet known) may go through."""
    now = now or utcnow()
    kind, entries = fhir.read_request(body)
    if kind == "Bundle/transaction" and any(e.errors for e in entries):
        raise TransactionRefused(entries)
    # Kept before it is acted on, so that a request that fails midway is still on record.
    row = HospitalMessage(source=source, protocol="fhir", control_id=uuid.uuid4().hex, message_type=kind,
                          body=json.dumps(body, ensure_ascii=False))
    db.session.add(row)
    db.session.commit()
    row_id = row.id

    def run():
        row = db.session.get(HospitalMessage, row_id, with_for_update=True)
        results = _fhir_entries(entries, source, settings, now, row_id, all_or_nothing=kind == "Bundle/transaction")
        row.status, row.processed_at, row.result = "processed", now, results
        db.session.commit()
        return results
    try:
        return kind, with_retries(run)
    except TransactionRefused as exc:
        db.session.rollback()
        _close(row_id, None, "refused", [_error_result([pm for e in exc.entries for pm in e.errors])])
        raise
    except Exception as exc:
        db.session.rollback()
        _close(row_id, None, "failed", error=type(exc).__name__)
        raise


def _close(row_id: int, stamp, status: str, result=None, error: str | None = None) -> None:
    """Set the outcome of a message this processor holds (claimed at `stamp`; None for a FHIR
    request, which is processed at once)."""
    table = HospitalMessage.__table__
    held = table.c.claimed_at == stamp if stamp is not None else table.c.claimed_at.is_(None)
    db.session.execute(update(table).where(table.c.id == row_id, held).values(
        status=status, processed_at=utcnow() if status != "received" else None, result=result, error=error,
        claimed_at=None if status == "received" else stamp))
    db.session.commit()


class TransactionRefused(ValueError):
    def __init__(self, entries):
        super().__init__("a transaction with invalid entries")
        self.entries = entries


def _fhir_entries(entries: list, source, settings: IntakeSettings, now, row_id, all_or_nothing: bool) -> list[dict]:
    region = settings.mapping.region
    # Patients in this request, by every way an entry may point at them.
    in_request: dict[str, PatientFacts] = {}
    appointments: dict[str, object] = {}
    for e in entries:
        if e.resource is None:
            continue
        if e.resource_type == "Patient":
            try:
                facts = fhir.patient_facts(e.resource, region)
            except MessageError:
                continue  # reported when the entry itself is processed
            for key in (e.full_url, f"Patient/{e.id}" if e.id else None):
                if key:
                    in_request[key] = facts
        elif e.resource_type == "Appointment" and e.id:
            appointments[f"Appointment/{e.id}"] = e.resource
    results = []
    for e in entries:
        base = {"index": e.index, "resource": e.label}
        if e.errors:
            results.append({**base, **_error_result(e.errors)})
            continue
        if e.resource_type not in fhir.ACTED_ON:
            results.append({**base, "outcome": "ignored", "reason": "not-an-event-resource",
                            "detail": f"{e.resource_type} resources are not journey events"})
            continue
        try:
            moment = _fhir_moment(e, source, settings, in_request, appointments)
        except MessageError as exc:
            if all_or_nothing:
                raise TransactionRefused([_failed(e, exc.reason)]) from None
            results.append({**base, **_error_result([(e.resource_type, exc.reason)])})
            continue
        if moment is None:
            results.append({**base, "outcome": "ignored", "reason": "not-a-journey-moment",
                            "detail": f"status {e.resource.status!r} is no journey moment"})
            continue
        results.append({**base, **record_moment(moment, source, settings, now, row_id)})
    return results


def _error_result(problems: list[tuple[str, str]]) -> dict:
    return {"outcome": "error", "errors": [{"path": path, "message": message} for path, message in problems]}


def _failed(entry, reason):
    entry.errors.append((entry.resource_type or "entry", reason))
    return entry


def _fhir_moment(entry, source, settings: IntakeSettings, in_request: dict, appointments: dict) -> Moment | None:
    resource, region, tz = entry.resource, settings.mapping.region, settings.timezone
    if entry.resource_type == "Patient":
        return fhir.moment(resource, fhir.patient_facts(resource, region), region, tz)
    patient = None
    ref = fhir.subject_reference(resource)
    if ref and ref.startswith("#"):
        contained = next((c for c in resource.contained or [] if c.id == ref[1:]
                          and c.get_resource_type() == "Patient"), None)
        patient = fhir.patient_facts(contained, region) if contained else None
    elif ref:
        patient = in_request.get(ref)
        if patient is None and ref.startswith("Patient/"):
            known = find_by_fhir_id(source, ref.split("/", 1)[1])
            patient = _facts_of(known) if known else None
        if patient is None and resource.status not in ("cancelled", "noshow", "entered-in-error"):
            raise MessageError(f"{ref} is not known: send the Patient in the Bundle, contained, or before")
    linked = None
    for app_ref in fhir.appointment_references(resource):
        if app_ref in appointments:
            linked = fhir.codes_of(appointments[app_ref])
        else:
            earlier = db.session.scalar(select(Event).where(Event.source == source, Event.reference == app_ref))
            if earlier is not None and earlier.codes:
                linked = Codes(**earlier.codes)
    return fhir.moment(resource, patient, region, tz, linked)


def _facts_of(patient) -> PatientFacts:
    return PatientFacts(id=patient.external_id, birth_date=patient.birth_date, deceased=patient.deceased,
                        no_publicity=patient.no_publicity, fhir_id=patient.fhir_id)


# --- one moment ---------------------------------------------------------------------------------

def record_moment(moment: Moment, source: str, settings: IntakeSettings, now, message_id: int | None) -> dict:
    """Act on one moment in the current transaction; returns what became of it."""
    # Flushed where the rules read back what this moment adds, not before every query; and at the
    # end, for the next moment of a Bundle.
    with db.session.no_autoflush:
        result = _record_moment(moment, source, settings, now, message_id)
    db.session.flush()
    return result


def _record_moment(moment: Moment, source: str, settings: IntakeSettings, now, message_id: int | None) -> dict:
    if moment.kind == CANCEL:
        cancelled = cancel_reference(source, moment.reference)
        return {"outcome": "cancelled", "reference": moment.reference, "invitations_cancelled": cancelled}
    consent = settings.mapping.consent
    if settings.mapping.disposition_reason(moment.discharge_disposition) == "deceased":
        moment.patient.deceased = True  # so that what was already planned for them is not sent
    patient = upsert_from_hospital(source, moment.patient, consent.sms, consent.email)
    if moment.kind == CONTACT_UPDATE:
        return {"outcome": "patient-updated"}
    # The exclusions read the patient as we know them now, earlier messages included (a birth date
    # or a no-publicity flag this message left out).
    facts = moment.patient
    facts.birth_date, facts.deceased, facts.no_publicity = patient.birth_date, patient.deceased, patient.no_publicity
    existing = db.session.scalar(select(Event).where(Event.source == source, Event.external_id == moment.external_id))
    if existing is not None:
        return {"outcome": "duplicate", **_event_summary(existing)}

    route = settings.mapping.route(moment.codes)
    event_type = _event_type(moment, route)
    if event_type is None:
        return {"outcome": "ignored", "reason": "not-a-follow-up",
                "detail": "the end of a visit that the mapping does not make a follow-up"}
    event = Event(source=source, external_id=moment.external_id, type=event_type,
                  occurred_at=moment.occurred_at, patient=patient, reference=moment.reference,
                  codes=moment.codes.as_dict() or None, patient_class=moment.patient_class,
                  discharge_disposition=moment.discharge_disposition, message_id=message_id)
    db.session.add(event)
    invitation = _place(event, moment, route, settings, now)
    return {"outcome": "event", **_event_summary(event, invitation)}


def _event_type(moment: Moment, route) -> str | None:
    """booking, discharge or follow_up; None for the end of a visit that is neither."""
    if moment.kind == BOOKING:
        return "booking"
    if moment.patient_class in (INPATIENT, EMERGENCY):
        # A stay ends in a discharge whatever the route says: the contact window and the HCAHPS
        # hold must apply to it.
        return "discharge"
    if route is not None and route.follow_up:
        return "follow_up"
    if moment.discharge:
        return "discharge"
    # A visit the mapping does not place is kept as a follow-up, to be reported as unmapped.
    return "follow_up" if route is None else None


def _place(event: Event, moment: Moment, route, settings: IntakeSettings, now):
    """Put the event in its route's journey and touchpoint, then apply the exclusions, the HCAHPS
    hold and the trigger rule; returns the invitation, if one was made."""
    journey = db.session.scalar(select(Journey).where(Journey.slug == route.journey)) if route else None
    rule = next((r for r in journey.rules if r.event_type == event.type), None) if journey else None
    touchpoint = None
    if rule is not None:
        wanted = route.touchpoints.get(event.type)
        touchpoint = (rule.stage.touchpoint(wanted) if wanted else None) or rule.default_touchpoint
    event.journey, event.touchpoint = journey, touchpoint
    db.session.flush()  # the fatigue rule reads this patient's events and invitations by id
    reason = exclusion(moment, settings.mapping, settings.min_age)
    invitation = None
    if journey is None:
        event.skip_reason = reason or ("unmapped" if route is None else "mapped-journey-missing")
    elif reason:
        event.skip_reason = reason
    else:
        hold_until = None
        if journey.hcahps_sampled and rule is not None and hcahps_eligible(moment, event.type, settings.min_age):
            if rule.hcahps == "skip":
                event.hold, event.skip_reason = "hcahps-skipped", "hcahps-sampled"
            else:
                event.hold, hold_until = "hcahps-delayed", moment.occurred_at + settings.hcahps_hold
        if event.skip_reason is None:
            invitation, why = schedule_invitation(event, rule, settings.policy, now, hold_until)
            if invitation is None:
                event.skip_reason = why
    db.session.flush()  # the summary names the event's id
    return invitation


def remap_unmapped(settings: IntakeSettings, days: int = 30, now=None) -> dict:
    """Route again the events of the last `days` that no route placed, after the mapping file
    gained routes: each placed one goes through the exclusions and its trigger rule as if it had
    just arrived (a survey whose moment is too long past is still not sent). Committed."""
    now = now or utcnow()
    since = now - timedelta(days=days)
    counts = {"placed": 0, "still_unmapped": 0}
    for event in db.session.scalars(select(Event).where(
            Event.journey_id.is_(None), Event.skip_reason == "unmapped", Event.received_at >= since)
            .order_by(Event.id)).all():
        moment = Moment(BOOKING if event.type == "booking" else VISIT_END, event.external_id, event.occurred_at,
                        _facts_of(event.patient), reference=event.reference, codes=Codes(**(event.codes or {})),
                        patient_class=event.patient_class, discharge_disposition=event.discharge_disposition,
                        discharge=event.type == "discharge")
        route = settings.mapping.route(moment.codes)
        event_type = _event_type(moment, route)
        if route is None or event_type is None:
            counts["still_unmapped"] += 1
            continue
        event.type, event.skip_reason = event_type, None
        _place(event, moment, route, settings, now)
        counts["placed"] += 1
    db.session.commit()
    return counts


def _event_summary(event: Event, invitation=None) -> dict:
    invitation = invitation or (event.invitations[0] if event.invitations else None)
    return {
        "event_id": event.id, "event_type": event.type,
        "journey": event.journey.slug if event.journey else None,
        "touchpoint": event.touchpoint.slug if event.touchpoint else None,
        "hold": event.hold,
        "invitation": asdict(InvitationOutcome.of(invitation)) if invitation else None,
        "reason": invitation.skip_reason if invitation is not None else event.skip_reason,
    }


def cancel_reference(source: str, reference: str | None) -> int:
    """The hospital cancelled this appointment or visit: cancel every invitation for it not yet
    handed to a provider (returns how many). Its events are set aside: one still waiting on the
    mapping is never placed by `events remap`, and a later booking or discharge of the same
    appointment or visit (re-booked, discharged again) is recorded as a new event, not a duplicate."""
    if not reference:
        return 0
    events = list(db.session.scalars(select(Event).where(
        Event.source == source, Event.reference == reference, ~Event.external_id.contains(CANCELLED_MARK))))
    for event in events:
        event.external_id = f"{event.external_id[:100]}{CANCELLED_MARK}{event.id}"
        if event.journey_id is None:
            event.skip_reason = "cancelled-by-hospital"
    db.session.flush()
    return db.session.execute(
        update(Invitation).where(
            Invitation.event_id.in_([e.id for e in events]),
            or_(Invitation.status == "scheduled",
                (Invitation.status == "sending") & Invitation.send_started_at.is_(None)))
        .values(status="cancelled", skip_reason="cancelled-by-hospital", token_hash=None, claimed_by=None),
        execution_options={"synchronize_session": False}).rowcount
