"""FHIR R4 in: read a resource or Bundle with `fhir.resources` (R4B models, which take R4 data)
into moments, and answer in FHIR's own terms (OperationOutcome, batch-response Bundle).

  Appointment booked -> booking; fulfilled -> end of a visit (a follow-up where the mapping says
    so); cancelled or noshow -> cancels what that appointment scheduled
  Encounter finished -> end of a visit: a discharge for inpatient and emergency classes, a
    follow-up where the mapping says so; cancelled or entered-in-error -> cancels
  Patient -> contact details (and the facts the exclusions read), kept for later references
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from .inbound import (BOOKING, CANCEL, CONTACT_UPDATE, EMERGENCY, INPATIENT, OUTPATIENT, VISIT_END, Codes,
                      MessageError, Moment, PatientFacts, check, e164, locale_tag)

MAX_ENTRIES = 1000
FIELD_NAMES = {"external_id": "id", "discharge_disposition": "Encounter.hospitalization.dischargeDisposition",
               "id": "Patient.identifier", "locale": "Patient.communication.language", "fhir_id": "Patient.id"}
ACTED_ON = ("Appointment", "Encounter", "Patient")
# R4's required value sets for status, which the models do not enforce.
STATUSES = {
    "Appointment": ("proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow",
                    "entered-in-error", "checked-in", "waitlist"),
    "Encounter": ("planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled",
                  "entered-in-error", "unknown"),
}
# Bundles whose entries we read; a notification's first entry is its status, not an event.
BUNDLE_TYPES = ("transaction", "batch", "collection", "subscription-notification", "history", "searchset")
NOTIFICATION_HEADERS = ("SubscriptionStatus", "Parameters")
CLASSES = {"IMP": INPATIENT, "ACUTE": INPATIENT, "NONAC": INPATIENT, "OBSENC": INPATIENT, "EMER": EMERGENCY}


@dataclass
class Entry:
    """One resource of a request, read and checked, or why not."""

    index: int | None  # position in the Bundle; None for a single resource
    resource_type: str = ""
    id: str | None = None
    full_url: str | None = None
    resource: object = None  # the fhir.resources model
    errors: list[tuple[str, str]] = field(default_factory=list)  # (FHIRPath, message)

    @property
    def label(self) -> str:
        return f"{self.resource_type}/{self.id}" if self.id else (self.full_url or self.resource_type or "entry")


def read_request(body) -> tuple[str, list[Entry]]:
    """(what was posted: "Appointment", "Bundle/batch", ..., its entries), each validated on its
    own so that one bad entry leaves the others readable. MessageError for a body that is no
    FHIR resource at all, or not one we take."""
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise MessageError("the body must be a FHIR resource: a JSON object with a resourceType")
    _refuse_unreadable(body)
    kind = body["resourceType"]
    if kind != "Bundle":
        if kind not in ACTED_ON:
            raise MessageError(f"{kind} resources are not journey events: send an Appointment, an Encounter, "
                               "a Patient, or a Bundle of them", reject=True)
        return kind, [_entry(body, None, None)]
    bundle_type = body.get("type")
    if bundle_type not in BUNDLE_TYPES:
        raise MessageError(f"Bundle.type {bundle_type!r}: this endpoint takes {', '.join(BUNDLE_TYPES)} Bundles",
                           reject=True)
    raw_entries = body.get("entry", [])  # absent: no entries; null, 0 or "" is no list
    if not isinstance(raw_entries, list):
        raise MessageError("Bundle.entry must be a list")
    if len(raw_entries) > MAX_ENTRIES:
        raise MessageError(f"Bundle.entry: at most {MAX_ENTRIES} entries per request")
    shell = {k: v for k, v in body.items() if k != "entry"}
    try:
        get_fhir_model_class("Bundle").model_validate(shell)
    except ValidationError as exc:
        raise MessageError("; ".join(f"Bundle.{_path(e['loc'])}: {_msg(e)}" for e in exc.errors())) from None
    entries = []
    for i, raw in enumerate(raw_entries):
        if not isinstance(raw, dict):
            entries.append(Entry(i, errors=[(f"Bundle.entry[{i}]", "must be an object")]))
            continue
        resource = raw.get("resource")
        if resource is None:  # an id-only notification, or a DELETE in a transaction
            continue
        entries.append(_entry(resource, i, raw.get("fullUrl")))
    if bundle_type in ("subscription-notification", "history") and entries \
            and entries[0].resource_type in NOTIFICATION_HEADERS:
        entries = entries[1:]
    return f"Bundle/{bundle_type}", entries


def _entry(resource, index: int | None, full_url) -> Entry:
    where = f"Bundle.entry[{index}].resource" if index is not None else ""
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return Entry(index, full_url=full_url, errors=[(where or "body", "must be a resource with a resourceType")])
    kind = resource["resourceType"]
    entry = Entry(index, kind, resource.get("id") if isinstance(resource.get("id"), str) else None,
                  full_url if isinstance(full_url, str) else None)
    try:
        model = get_fhir_model_class(kind)
    except (ValueError, KeyError):
        entry.errors.append((where or "resourceType", f"{kind!r} is not an R4 resource type"))
        return entry
    try:
        entry.resource = model.model_validate(resource)
    except ValidationError as exc:
        for err in exc.errors():
            entry.errors.append((".".join(p for p in (where or kind, _path(err["loc"])) if p), _msg(err)))
    except (TypeError, ValueError, AttributeError) as exc:
        # The models raise these for some shapes outside pydantic: a number or boolean where a
        # url is due (Subscription.channel.endpoint: 5) is an AttributeError in fhir_core's url type.
        message = "a number or boolean where a URL is due" if isinstance(exc, AttributeError) else str(exc)[:200]
        entry.errors.append((where or kind, message))
    status = resource.get("status")
    if kind in STATUSES and isinstance(status, str) and status not in STATUSES[kind]:
        entry.errors.append((f"{where or kind}.status", f"{status!r} is not an R4 {kind} status "
                                                        f"({', '.join(STATUSES[kind])})"))
    return entry


# JSON levels (objects and lists): real resources nest about ten deep, and the models'
# validators recurse per level, so a body nested hundreds deep would exhaust Python's stack.
MAX_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_unreadable(body) -> None:
    """MessageError for what no FHIR resource holds and we cannot safely read or store: NUL
    characters, unpaired surrogates (JSON lets an escaped "\\ud800" through alone, and no text can
    be encoded from it) and nesting deeper than MAX_DEPTH. A loop, not recursion, for that reason."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise MessageError("the body holds a NUL character (\\u0000), which no FHIR string may")
            if _SURROGATE.search(value):
                raise MessageError("the body holds an unpaired surrogate (\\ud800-\\udfff), which is not Unicode text")
        elif isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise MessageError(f"the body is nested more than {MAX_DEPTH} levels deep")
            stack.extend((v, depth + 1) for v in ([*value, *value.values()] if isinstance(value, dict) else value))


def _path(loc) -> str:
    out = ""
    for part in loc:
        if part == "root":  # pydantic's name for a wrapped value, not a FHIR element
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _msg(err) -> str:
    return err["msg"].removeprefix("Value error, ")[:200]


def patient_facts(patient, region: str) -> PatientFacts:
    """What we keep of a Patient resource."""
    def is_mrn(ident) -> bool:
        return any(c.code == "MR" for c in (ident.type.coding if ident.type else None) or [])

    values = [i for i in patient.identifier or [] if i.value]
    mrn = next((i.value for i in values if is_mrn(i)), values[0].value if values else None)
    if mrn is None and not patient.id:
        raise MessageError("Patient: an identifier or an id is needed to know the patient again")
    mobile, email = None, None
    for contact in patient.telecom or []:
        if contact.period and contact.period.end:
            continue  # no longer in use
        if contact.system in ("phone", "sms") and (contact.use == "mobile" or contact.system == "sms"):
            mobile = mobile or e164(contact.value, region)
        elif contact.system == "email" and contact.value and "@" in contact.value and len(contact.value) <= 254:
            email = email or contact.value.strip().lower()
    locale = None
    for comm in sorted(patient.communication or [], key=lambda c: not c.preferred):
        codes = [c.code for c in (comm.language.coding or []) if c.code]
        locale = locale_tag(codes[0] if codes else None)
        if locale:
            break
    given = next((g for name in (patient.name or []) if name.use != "old" for g in (name.given or [])), None)
    security = {c.code for c in (patient.meta.security if patient.meta else None) or []}
    return PatientFacts(
        id=(mrn or f"Patient/{patient.id}")[:128], first_name=(given or None) and given[:100], phone=mobile,
        email=email, locale=locale, birth_date=patient.birthDate if isinstance(patient.birthDate, date) else None,
        deceased=bool(patient.deceasedBoolean or patient.deceasedDateTime),
        # Restricted confidentiality: the patient asked not to be disclosed, so not to be contacted.
        no_publicity=bool(security & {"R", "V"}), fhir_id=patient.id)


def subject_reference(resource) -> str | None:
    if resource.get_resource_type() == "Appointment":
        for p in resource.participant or []:
            ref = p.actor.reference if p.actor else None
            if ref and (ref.startswith("Patient/") or ref.startswith("#") or ref.startswith("urn:")):
                if p.actor.type in (None, "Patient") or ref.startswith("Patient/"):
                    return ref
        return None
    if resource.get_resource_type() == "Encounter":
        return resource.subject.reference if resource.subject else None
    return None


def moment(resource, patient: PatientFacts | None, region: str, tz: str,
           linked_codes: Codes | None = None) -> Moment | None:
    """The moment an Appointment, Encounter or Patient stands for; None when its status is no
    journey moment (a proposed appointment, an encounter in progress)."""
    kind = resource.get_resource_type()
    label = f"{kind}/{resource.id}" if resource.id else kind
    if kind == "Patient":
        return check(Moment(CONTACT_UPDATE, label, None, patient, label=label), FIELD_NAMES)
    status = resource.status
    reference = f"{kind}/{resource.id}" if resource.id else None
    codes = codes_of(resource)
    if kind == "Appointment":
        what = {"booked": BOOKING, "fulfilled": VISIT_END, "cancelled": CANCEL, "noshow": CANCEL,
                "entered-in-error": CANCEL}.get(status)
        if what is None:
            return None
        occurred = (_instant(resource.created, tz) if what == BOOKING else
                    _instant(resource.end or resource.start, tz)) or _instant(_last_updated(resource), tz)
        klass, disposition, discharge = None, None, False
    else:
        what = {"finished": VISIT_END, "cancelled": CANCEL, "entered-in-error": CANCEL}.get(status)
        if what is None:
            return None
        occurred = _instant(resource.period.end if resource.period else None, tz) or _instant(_last_updated(resource), tz)
        klass = CLASSES.get(resource.class_fhir.code) if resource.class_fhir else None
        klass = klass or (OUTPATIENT if resource.class_fhir else None)
        hosp = resource.hospitalization
        dispositions = _codes([hosp.dischargeDisposition]) if hosp and hosp.dischargeDisposition else []
        disposition = dispositions[0] if dispositions else None
        discharge = klass in (INPATIENT, EMERGENCY)
    if linked_codes is not None:  # the Appointment an Encounter fulfils: its types route the visit
        for name in ("appointment_type", "service_type", "department"):
            getattr(codes, name).extend(c for c in getattr(linked_codes, name) if c not in getattr(codes, name))
    if what == CANCEL:
        if reference is None:
            raise MessageError(f"{kind}.id: a cancellation must name the {kind.lower()} it cancels")
        return check(Moment(CANCEL, f"{label}:{status}", occurred, patient or PatientFacts(id=""),
                            reference=reference, label=label), FIELD_NAMES)
    if patient is None:
        raise MessageError(f"{kind}: the patient is missing (a Patient reference in "
                           f"{'participant.actor' if kind == 'Appointment' else 'subject'})")
    if occurred is None:
        field_name = "created" if what == BOOKING else ("end" if kind == "Appointment" else "period.end")
        raise MessageError(f"{kind}.{field_name}: when it happened is missing")
    return check(Moment(what, f"{label}:{status}" if resource.id else f"{label}:{status}:{occurred.isoformat()}",
                        occurred, patient, reference=reference, codes=codes, patient_class=klass,
                        discharge_disposition=disposition, label=label, discharge=discharge), FIELD_NAMES)


def codes_of(resource) -> Codes:
    """The codes an Appointment or Encounter is routed on, whatever its status."""
    if resource.get_resource_type() == "Appointment":
        return Codes(
            location=[r.actor.reference.split("/", 1)[1] for r in resource.participant or []
                      if r.actor and r.actor.reference and r.actor.reference.startswith("Location/")],
            department=_codes([*(resource.serviceCategory or []), *(resource.specialty or [])]),
            appointment_type=_codes([resource.appointmentType] if resource.appointmentType else []),
            service_type=_codes(resource.serviceType))
    return Codes(
        location=[loc.location.reference.split("/", 1)[1] for loc in resource.location or []
                  if loc.location and loc.location.reference and "/" in loc.location.reference],
        department=_codes([resource.serviceType] if resource.serviceType else []),
        service_type=_codes(resource.type))


def appointment_references(resource) -> list[str]:
    if resource.get_resource_type() != "Encounter":
        return []
    return [a.reference for a in resource.appointment or [] if a.reference]


def _codes(concepts) -> list[str]:
    out = []
    for concept in concepts or []:
        for coding in concept.coding or []:
            if coding.code and coding.code not in out:
                out.append(coding.code)
    return out


def _last_updated(resource):
    return resource.meta.lastUpdated if resource.meta else None


def _instant(value, tz: str) -> datetime | None:
    """As an aware UTC datetime (a date, or a time without offset, read in the hospital's zone)."""
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time())
    try:
        if not 1900 <= value.year <= 2200:
            raise ValueError
        return (value if value.tzinfo else value.replace(tzinfo=ZoneInfo(tz))).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise MessageError(f"{value.isoformat()} is not a date between 1900 and 2200") from None


def outcome(issues: list[tuple[str, str, str, str | None]]) -> dict:
    """An OperationOutcome from (severity, code, diagnostics, FHIRPath) tuples."""
    return {"resourceType": "OperationOutcome", "issue": [
        {"severity": sev, "code": code, "diagnostics": text, **({"expression": [path]} if path else {})}
        for sev, code, text, path in issues]}


OUTCOME_SYSTEM = "urn:feedback-service:intake-outcome"
REASON_SYSTEM = "urn:feedback-service:skip-reason"
STATUS_LINES = {"event": "201 Created", "error": "422 Unprocessable Entity"}


def answer(kind: str, results: list[dict]) -> tuple[int, dict]:
    """The HTTP status and body for a processed request: for a single resource an
    OperationOutcome; for a Bundle a batch- or transaction-response with one entry per entry
    read, in order, each saying what it made (`location` names the event)."""
    if not kind.startswith("Bundle/"):
        result = results[0]
        status = {"event": 201, "error": 422}.get(result["outcome"], 200)
        return status, _result_outcome(result)
    entries = []
    for result in results:
        response = {"status": STATUS_LINES.get(result["outcome"], "200 OK"), "outcome": _result_outcome(result)}
        if result.get("event_id"):
            response["location"] = f"events/{result['event_id']}"
        entries.append({"response": response})
    bundle_type = "transaction-response" if kind == "Bundle/transaction" else "batch-response"
    return 200, {"resourceType": "Bundle", "type": bundle_type, "entry": entries}


def refusal(entries) -> dict:
    """The OperationOutcome refusing a transaction: every problem of every entry."""
    return outcome([("error", "invalid", message, path) for e in entries for path, message in e.errors])


def _result_outcome(result: dict) -> dict:
    if result["outcome"] == "error":
        return outcome([("error", "invalid", e["message"], e["path"]) for e in result["errors"]])
    coding = [{"system": OUTCOME_SYSTEM, "code": result["outcome"]}]
    if result.get("reason"):
        coding.append({"system": REASON_SYSTEM, "code": result["reason"]})
    text = summary(result)
    return {"resourceType": "OperationOutcome", "issue": [{
        "severity": "information", "code": "informational", "details": {"coding": coding, "text": text},
        "diagnostics": text}]}


def summary(result: dict) -> str:
    """What became of one moment, in a sentence for the people reading an interface log."""
    outcome_ = result["outcome"]
    where = result.get("resource") or ""
    if outcome_ in ("event", "duplicate"):
        text = (f"{'duplicate of ' if outcome_ == 'duplicate' else ''}{result['event_type']} event "
                f"{result['event_id']}")
        if result.get("journey"):
            text += f" in {result['journey']}" + (f" ({result['touchpoint']})" if result.get("touchpoint") else "")
        invitation = result.get("invitation")
        if invitation and invitation["status"] == "scheduled":
            text += f": invitation {invitation['id']} scheduled by {invitation['channel']} for {invitation['send_at']}"
        elif result.get("reason"):
            text += f": no survey ({result['reason']})"
        return text
    if outcome_ == "cancelled":
        return f"{result['invitations_cancelled']} unsent invitation(s) cancelled for {result['reference']}"
    if outcome_ == "patient-updated":
        return f"patient details updated from {where}".strip()
    return f"ignored: {result.get('detail') or result.get('reason', '')}"
