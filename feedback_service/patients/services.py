"""Patient records and opt-outs."""
from __future__ import annotations

from sqlalchemy import delete, select

from ..extensions import db, insert_once
from .models import OptOut, Patient


def normalise_address(medium: str, address: str) -> str:
    return address.strip().lower() if medium == "email" else address.strip()


def lock_patients(source: str, external_ids) -> dict[str, Patient]:
    """The known patients among these ids, by id, locked (PostgreSQL) for this transaction so that
    two requests for one patient see each other's invitations (fatigue, text limits). Rows are
    locked in one fixed order: two batches naming them in different orders cannot deadlock."""
    return {p.external_id: p for p in db.session.scalars(
        select(Patient).where(Patient.source == source, Patient.external_id.in_(set(external_ids)))
        .order_by(Patient.external_id).with_for_update())}


def upsert_patient(source: str, data, known: dict[str, Patient]) -> Patient:
    """Create or update the patient from an event's patient block (the latest event wins);
    `known` is lock_patients()'s answer, and learns the patients created here."""
    patient = known.get(data.id)
    if patient is None:
        patient = known[data.id] = Patient(source=source, external_id=data.id)
        db.session.add(patient)
    patient.first_name = data.first_name
    patient.phone = data.phone
    patient.email = normalise_address("email", data.email) if data.email else None
    patient.locale = data.locale
    patient.timezone = data.timezone
    patient.consent_sms = data.consent_sms
    patient.consent_email = data.consent_email
    return patient


def is_opted_out(medium: str, address: str | None) -> bool:
    """Whether this address asked for no more surveys (whichever patient record it belongs to)."""
    if not address:
        return False
    address = normalise_address(medium, address)
    return db.session.scalar(
        select(OptOut.id).where(OptOut.medium == medium, OptOut.address == address)
    ) is not None


def opt_out(medium: str, address: str | None, source: str) -> bool:
    """Record an opt-out (committed); returns False if there is no address or it had already
    opted out, also when a second request (a double tap) recorded it a moment before."""
    if not address or is_opted_out(medium, address):
        return False
    return insert_once(OptOut(medium=medium, address=normalise_address(medium, address), source=source))


def opt_in(medium: str, address: str) -> bool:
    """The address asked for surveys again (START by text); returns whether it had opted out."""
    removed = db.session.execute(delete(OptOut).where(
        OptOut.medium == medium, OptOut.address == normalise_address(medium, address))).rowcount
    db.session.commit()
    return bool(removed)


def upsert_from_hospital(source: str, facts, consent_sms: bool, consent_email: bool) -> Patient:
    """Create or update a patient from a hospital message (locked for this transaction). A field the
    message leaves out (None) keeps what an earlier message said, an empty one ("") clears it; a
    recorded death is never undone by an older message arriving late. Consent follows the mapping
    file's policy for hospital feeds."""
    patient = db.session.scalar(select(Patient).where(
        Patient.source == source, Patient.external_id == facts.id).with_for_update()
        .execution_options(populate_existing=True))
    if patient is None:
        patient = Patient(source=source, external_id=facts.id, deceased=False, no_publicity=False)
        db.session.add(patient)
    for name in ("first_name", "phone", "email", "locale", "birth_date", "fhir_id"):
        value = getattr(facts, name)
        if value is not None:
            setattr(patient, name, value or None)  # "" clears (HL7's explicit null)
    patient.deceased = bool(patient.deceased or facts.deceased)
    if facts.no_publicity is not None:
        patient.no_publicity = facts.no_publicity
    patient.consent_sms, patient.consent_email = consent_sms, consent_email
    return patient


def find_by_fhir_id(source: str, fhir_id: str) -> Patient | None:
    # The latest: a Patient first sent without an MRN and later with one is two rows.
    return db.session.scalar(select(Patient).where(Patient.source == source, Patient.fhir_id == fhir_id)
                             .order_by(Patient.updated_at.desc(), Patient.id.desc()).limit(1))
