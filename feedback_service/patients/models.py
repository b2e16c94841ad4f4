"""Patients as the hospital identifies them, with contact details and consent, and opt-outs."""
from __future__ import annotations

from sqlalchemy import Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..sqltypes import UTCDateTime, utcnow


class Patient(db.Model):
    __tablename__ = "patients"
    # Identifiers are the sending system's (an MRN): two hospitals may use the same one.
    __table_args__ = (UniqueConstraint("source", "external_id"), Index("ix_patients_fhir_id", "source", "fhir_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(db.String(80))
    external_id: Mapped[str] = mapped_column(db.String(128))
    first_name: Mapped[str | None] = mapped_column(db.String(100), nullable=True)
    phone: Mapped[str | None] = mapped_column(db.String(20), nullable=True, index=True)  # E.164
    email: Mapped[str | None] = mapped_column(db.String(254), nullable=True)
    locale: Mapped[str | None] = mapped_column(db.String(20), nullable=True)
    timezone: Mapped[str | None] = mapped_column(db.String(64), nullable=True)
    consent_sms: Mapped[bool] = mapped_column(default=False)
    consent_email: Mapped[bool] = mapped_column(default=False)
    # What hospital messages say about the person, read by the exclusion rules (JSON events
    # leave them unknown).
    birth_date = mapped_column(db.Date, nullable=True)
    deceased: Mapped[bool] = mapped_column(default=False)
    no_publicity: Mapped[bool] = mapped_column(default=False)
    # The FHIR Patient resource id, so that a later Appointment can say "Patient/123".
    fhir_id: Mapped[str | None] = mapped_column(db.String(64), nullable=True)
    updated_at = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False)

    def address(self, medium: str) -> str | None:
        return self.phone if medium == "sms" else self.email

    def consents_to(self, medium: str) -> bool:
        return self.consent_sms if medium == "sms" else self.consent_email


class OptOut(db.Model):
    """An address that asked for no more surveys; checked at scheduling and again at send time."""

    __tablename__ = "opt_outs"
    __table_args__ = (UniqueConstraint("medium", "address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    medium: Mapped[str] = mapped_column(db.String(10))  # sms | email
    address: Mapped[str] = mapped_column(db.String(254))  # E.164 or lower-cased email
    source: Mapped[str] = mapped_column(db.String(40))  # survey-page, cli, ...
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
