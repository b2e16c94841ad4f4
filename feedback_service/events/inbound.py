"""What a hospital message says, whatever its protocol: the facts the mapping, the exclusion rules
and the trigger rules need, and nothing of the clinical detail around them."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import phonenumbers

# What a moment is; mapping and patient class then make a booking, discharge or follow-up event.
BOOKING = "booking"
VISIT_END = "visit-end"  # ADT^A03, a finished Encounter, a fulfilled Appointment
CANCEL = "cancel"  # SIU^S15, ADT^A13, a cancelled Appointment
CONTACT_UPDATE = "contact-update"  # ADT^A08, a Patient resource

INPATIENT, EMERGENCY, OUTPATIENT = "inpatient", "emergency", "outpatient"


class MessageError(ValueError):
    """A message we cannot act on; `reject` when it is not a message we take at all (HL7 AR,
    rather than AE for a message with bad content)."""

    def __init__(self, reason: str, reject: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.reject = reject


@dataclass
class PatientFacts:
    id: str  # the hospital's identifier (an MRN)
    first_name: str | None = None
    phone: str | None = None  # E.164
    email: str | None = None
    locale: str | None = None
    birth_date: date | None = None
    deceased: bool = False
    no_publicity: bool | None = None  # None: the message does not say (an earlier one may have)
    fhir_id: str | None = None


@dataclass
class Codes:
    """The codes the mapping file routes on, each as every code the message gave for it."""

    location: list[str] = field(default_factory=list)
    department: list[str] = field(default_factory=list)
    appointment_type: list[str] = field(default_factory=list)
    service_type: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {k: v for k, v in vars(self).items() if v}


@dataclass
class Moment:
    kind: str  # BOOKING, VISIT_END, CANCEL, CONTACT_UPDATE
    external_id: str  # idempotency key within the source
    occurred_at: datetime | None  # aware; None for a contact update
    patient: PatientFacts
    reference: str | None = None  # the appointment or visit
    codes: Codes = field(default_factory=Codes)
    patient_class: str | None = None
    discharge_disposition: str | None = None
    # The end of a stay (ADT^A03, an inpatient or emergency Encounter): a discharge unless the
    # mapping makes the visit a follow-up. Other visit ends are surveyed only as follow-ups.
    discharge: bool = False
    label: str = ""  # what it was, for people: "SIU^S12 521", "Appointment/example"


def e164(raw: str | None, region: str) -> str | None:
    """A phone number as E.164, read with the hospital's region for national formats; None when
    it is not a valid number (a message's bad phone is not worth refusing the message for)."""
    if not raw or not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def locale_tag(raw: str | None) -> str | None:
    """A BCP 47-ish tag from a language code as hospitals send them: "es", "en-US", or the
    ISO 639-2 codes HL7 systems often use ("SPA", "eng")."""
    if not raw:
        return None
    raw = raw.strip().replace("_", "-")
    three = {"eng": "en", "spa": "es", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de", "por": "pt",
             "zho": "zh", "chi": "zh", "vie": "vi", "kor": "ko", "rus": "ru", "ara": "ar", "ita": "it"}
    head = raw.split("-")[0].lower()
    if head in three:
        return three[head]
    if 2 <= len(head) <= 3 and head.isalpha():
        return raw
    return None


# Column sizes the stored moment must fit (a 200-character visit number is the sender's mistake,
# not a reason to lose the message after acknowledging it).
LIMITS = (("external_id", 128, "the appointment or visit id"), ("discharge_disposition", 40, "the discharge disposition"))
PATIENT_LIMITS = (("id", 128, "the patient identifier"), ("locale", 20, "the language"), ("fhir_id", 64, "the Patient id"))


def check(moment: "Moment", names: dict[str, str]) -> "Moment":
    """Refuse (MessageError, naming the field as the sender knows it) what would not fit."""
    for owner, limits in ((moment, LIMITS), (moment.patient, PATIENT_LIMITS)):
        for attr, size, what in limits:
            value = getattr(owner, attr)
            if value is not None and len(value) > size:
                raise MessageError(f"{names.get(attr, what)}: longer than {size} characters")
    return moment


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
