"""Hospital messages in: store each one before it is acknowledged, then turn what it says into
journey events (mapped, excluded or scheduled) with the same trigger rules as the JSON API."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..journeys.models import Journey
from ..patients.services import find_by_fhir_id, upsert_from_hospital
from ..scheduling.models import Invitation
from ..scheduling.rules import SendPolicy
from ..scheduling.services import schedule_invitation
from ..sqltypes import utcnow
from . import fhir, hl7v2
from .exclusions import exclusion, hcahps_eligible
from .inbound import BOOKING, CANCEL, CONTACT_UPDATE, Codes, MessageError, Moment, PatientFacts
from .mapping import Mapping
from .models import Event, HospitalMessage
from .services import InvitationOutcome, with_retries

log = logging.getLogger(__name__)


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

def store_messages(items: list[tuple[str, str, str, str, str]]) -> list[int]:
    """Store (source, protocol, control id, type, body) messages in one transaction, committed;
    returns their row ids. One a sender resent (same control id) is stored once: its id is the
    first copy's."""
    rows = [HospitalMessage(source=s, protocol=p, control_id=c[:128], message_type=t[:40], body=b)
            for s, p, c, t, b in items]
    try:
        db.session.add_all(rows)
        db.session.commit()
        return [r.id for r in rows]
    except IntegrityError:
        db.session.rollback()
    ids = []
    for row in rows:  # rare: one at a time, each either new or the stored copy
        existing = db.session.scalar(select(HospitalMessage.id).where(
            HospitalMessage.source == row.source, HospitalMessage.protocol == row.protocol,
            HospitalMessage.control_id == row.control_id))
        if existing is None:
            fresh = HospitalMessage(source=row.source, protocol=row.protocol, control_id=row.control_id,
                                    message_type=row.message_type, body=row.body)
            db.session.add(fresh)
            try:
                db.session.commit()
                existing = fresh.id
            except IntegrityError:  # a concurrent copy won
                db.session.rollback()
                existing = db.session.scalar(select(HospitalMessage.id).where(
                    HospitalMessage.source == row.source, HospitalMessage.protocol == row.protocol,
                    HospitalMessage.control_id == row.control_id))
        ids.append(existing)
    return ids


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
        [row_id] = store_messages([(source, "hl7v2", hl7v2.control_id(message), hl7v2.message_type(message),
                                    hl7v2.normalise(text))])
        process_stored([row_id], settings, now)
    return hl7v2.ack(message, "AA")


def process_pending(settings: IntakeSettings, limit: int = 500, now=None) -> int:
    """Process stored messages not processed yet, oldest first (an A08 after its S12, a cancel after
    its booking); returns how many. Used by the MLLP listener and by the worker's intake job."""
    query = select(HospitalMessage.id).where(HospitalMessage.status == "received") \
        .order_by(HospitalMessage.id).limit(limit)
    if db.engine.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(db.session.scalars(query))
    db.session.rollback()  # the locks only keep two processors apart while they pick
    return process_stored(ids, settings, now) if ids else 0


def process_stored(ids: list[int], settings: IntakeSettings, now=None) -> int:
    """Process these stored HL7 messages (skipping any another processor finished), each in its
    own transaction so that one failure marks that message and the rest go on."""
    done = 0
    for row_id in ids:
        row = db.session.get(HospitalMessage, row_id, with_for_update=True)
        if row is None or row.status != "received":
            db.session.rollback()
            continue
        try:
            results = with_retries(lambda: _process_hl7(row_id, settings, now or utcnow()))
            done += 1
            log.info("message %s (%s) processed: %s", row_id, results[0], [r["outcome"] for r in results[1]])
        except Exception as exc:  # noqa: BLE001  (one bad message must not stop the feed)
            db.session.rollback()
            log.exception("message %s could not be processed", row_id)
            db.session.execute(update(HospitalMessage).where(HospitalMessage.id == row_id).values(
                status="failed", processed_at=utcnow(), error=f"{type(exc).__name__}"[:200]))
            db.session.commit()
    return done


def _process_hl7(row_id: int, settings: IntakeSettings, now):
    row = db.session.get(HospitalMessage, row_id, with_for_update=True)
    if row.status != "received":
        return row.message_type, row.result or []
    message = hl7v2.parse(row.body)
    try:
        moments = hl7v2.moments(message, settings.mapping.region, settings.timezone)
        results = [record_moment(m, row.source, settings, now, row.id) for m in moments]
    except MessageError as exc:  # cannot happen for a message checked before its ACK, unless the code changed
        results = [{"outcome": "error", "reason": exc.reason}]
    row.status, row.processed_at, row.result = "processed", now, results
    db.session.commit()
    return row.message_type, results


# --- FHIR ---------------------------------------------------------------------------------------

def receive_fhir(body, raw: bytes, source: str, settings: IntakeSettings, now=None) -> tuple[str, list[dict]]:
    """Read, store and process a FHIR request: (what it was, one result per entry, in order).
    MessageError when the request as a whole is refused (nothing stored). A transaction Bundle is
    all or nothing: any bad entry refuses it whole."""
    now = now or utcnow()
    kind, entries = fhir.read_request(body)
    if kind == "Bundle/transaction" and any(e.errors for e in entries):
        raise TransactionRefused(entries)
    [row_id] = store_messages([(source, "fhir", hashlib.sha256(raw).hexdigest(), kind, raw.decode("utf-8"))])

    def run():
        row = db.session.get(HospitalMessage, row_id, with_for_update=True)
        if row.status == "processed" and row.result is not None:
            return row.result  # the same body posted again: the same answer, nothing new
        results = _fhir_entries(entries, source, settings, now, row_id, all_or_nothing=kind == "Bundle/transaction")
        row.status, row.processed_at, row.result = "processed", now, results
        db.session.commit()
        return results
    return kind, with_retries(run)


class TransactionRefused(ValueError):
    def __init__(self, entries):
        super().__init__("a transaction with invalid entries")
        self.entries = entries


def _fhir_entries(entries: list, source, settings: IntakeSettings, now, row_id, all_or_nothing: bool) -> list[dict]:
    region, tz = settings.mapping.region, settings.timezone
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
            results.append({**base, "outcome": "error", "errors": [{"path": p, "message": m} for p, m in e.errors]})
            continue
        if e.resource_type not in fhir.ACTED_ON:
            results.append({**base, "outcome": "ignored", "reason": f"{e.resource_type} resources are not journey events"})
            continue
        try:
            moment = _fhir_moment(e, source, settings, in_request, appointments)
        except MessageError as exc:
            if all_or_nothing:
                raise TransactionRefused([_failed(e, exc.reason)]) from None
            results.append({**base, "outcome": "error", "errors": [{"path": e.resource_type, "message": exc.reason}]})
            continue
        if moment is None:
            results.append({**base, "outcome": "ignored",
                            "reason": f"status {e.resource.status!r} is no journey moment"})
            continue
        results.append({**base, **record_moment(moment, source, settings, now, row_id)})
    return results


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
            linked = fhir.moment(appointments[app_ref], patient, region, tz).codes if patient else None
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
    if moment.kind == CANCEL:
        cancelled = cancel_unsent(source, moment.reference)
        return {"outcome": "cancelled", "reference": moment.reference, "invitations_cancelled": cancelled}
    consent = settings.mapping.consent
    patient = upsert_from_hospital(source, moment.patient, consent.sms, consent.email)
    if moment.kind == CONTACT_UPDATE:
        return {"outcome": "patient-updated"}
    existing = db.session.scalar(select(Event).where(Event.source == source,
                                                     Event.external_id == moment.external_id[:128]))
    if existing is not None:
        return {"outcome": "duplicate", **_event_summary(existing)}

    route = settings.mapping.route(moment.codes)
    if moment.kind == BOOKING:
        event_type = "booking"
    elif route is not None and route.follow_up:
        event_type = "follow_up"
    elif moment.discharge:
        event_type = "discharge"
    elif route is None:
        event_type = "follow_up"  # a visit the mapping does not place: reported as unmapped
    else:
        return {"outcome": "ignored", "reason": "the end of a visit that the mapping does not make a follow-up"}
    journey = db.session.scalar(select(Journey).where(Journey.slug == route.journey)) if route else None
    rule = next((r for r in journey.rules if r.event_type == event_type), None) if journey else None
    touchpoint = None
    if rule is not None:
        wanted = route.touchpoints.get(event_type)
        touchpoint = (rule.stage.touchpoint(wanted) if wanted else None) or rule.default_touchpoint
    event = Event(source=source, external_id=moment.external_id[:128], type=event_type,
                  occurred_at=moment.occurred_at, journey=journey, touchpoint=touchpoint, patient=patient,
                  reference=moment.reference, codes=moment.codes.as_dict() or None,
                  patient_class=moment.patient_class, discharge_disposition=moment.discharge_disposition,
                  message_id=message_id)
    db.session.add(event)
    reason = exclusion(moment, event_type, settings.mapping, settings.min_age)
    invitation = None
    if journey is None:
        event.skip_reason = reason or ("unmapped" if route is None else "mapped-journey-missing")
    elif reason:
        event.skip_reason = reason
    else:
        hold_until = None
        if journey.hcahps_sampled and rule is not None and hcahps_eligible(moment, event_type, settings.min_age):
            if rule.hcahps == "skip":
                event.hold, event.skip_reason = "hcahps-skipped", "hcahps-sampled"
            else:
                event.hold, hold_until = "hcahps-delayed", moment.occurred_at + settings.hcahps_hold
        if event.skip_reason is None:
            invitation, why = schedule_invitation(event, rule, settings.policy, now, hold_until)
            if invitation is None:
                event.skip_reason = why
    db.session.flush()
    return {"outcome": "event", **_event_summary(event, invitation)}


def _event_summary(event: Event, invitation=None) -> dict:
    invitation = invitation or (event.invitations[0] if event.invitations else None)
    return {
        "event_id": event.id, "event_type": event.type,
        "journey": event.journey.slug if event.journey else None,
        "touchpoint": event.touchpoint.slug if event.touchpoint else None,
        "hold": event.hold,
        "invitation": json.loads(json.dumps(asdict(InvitationOutcome.of(invitation)))) if invitation else None,
        "reason": invitation.skip_reason if invitation is not None else event.skip_reason,
    }


def cancel_unsent(source: str, reference: str | None) -> int:
    """Cancel every invitation for that appointment or visit not yet handed to a provider."""
    if not reference:
        return 0
    events = select(Event.id).where(Event.source == source, Event.reference == reference)
    return db.session.execute(
        update(Invitation).where(
            Invitation.event_id.in_(events),
            or_(Invitation.status == "scheduled",
                (Invitation.status == "sending") & Invitation.send_started_at.is_(None)))
        .values(status="cancelled", skip_reason="cancelled-by-hospital", token_hash=None, claimed_by=None),
        execution_options={"synchronize_session": False}).rowcount
