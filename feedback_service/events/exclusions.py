"""Who is never surveyed, after the CAHPS hospital survey's rules; plain functions of a moment."""
from __future__ import annotations

from datetime import date

from .inbound import INPATIENT, Moment, age_on
from .mapping import Mapping


def exclusion(moment: Moment, mapping: Mapping, min_age: int) -> str | None:
    """Why this patient must not be asked about this moment, or None."""
    patient = moment.patient
    if patient.deceased:
        return "deceased"
    # Whatever the visit turns out to be (a follow-up too), a patient who died or went to hospice
    # or another facility is not asked about it.
    reason = mapping.disposition_reason(moment.discharge_disposition)
    if reason:
        return reason
    if under_age(patient.birth_date, moment.occurred_at.date(), min_age):
        return "under-minimum-age"
    if patient.no_publicity:
        return "no-publicity"
    if mapping.sensitive(moment.codes):
        return "sensitive-service-line"
    return None


def under_age(birth: date | None, on: date, min_age: int) -> bool:
    # An unknown birth date is not taken as a child's: JSON and many ADT feeds leave it out.
    return birth is not None and age_on(birth, on) < min_age


def hcahps_eligible(moment: Moment, event_type: str, min_age: int) -> bool:
    """An adult inpatient discharge: the HCAHPS sample frame (exclusions are applied before)."""
    return (event_type == "discharge" and moment.patient_class == INPATIENT
            and not under_age(moment.patient.birth_date, moment.occurred_at.date(), max(min_age, 18)))
