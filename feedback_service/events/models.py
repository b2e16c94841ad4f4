"""Journey events as received, whatever their source, and the hospital messages they came in."""
from __future__ import annotations

from sqlalchemy import JSON, ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..sqltypes import UTCDateTime, utcnow


class Event(db.Model):
    __tablename__ = "events"
    # The idempotency key: a resent event from the same source changes nothing.
    __table_args__ = (UniqueConstraint("source", "external_id"), Index("ix_events_reference", "source", "reference"))

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(db.String(80))
    external_id: Mapped[str] = mapped_column(db.String(128))
    type: Mapped[str] = mapped_column(db.String(20))
    occurred_at = mapped_column(UTCDateTime, nullable=False)
    received_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # None: a hospital message whose codes the mapping file does not place in any journey.
    journey_id: Mapped[int | None] = mapped_column(ForeignKey("journeys.id"), nullable=True)
    touchpoint_id: Mapped[int | None] = mapped_column(ForeignKey("touchpoints.id"), nullable=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    # Why this event leads to no survey, when no invitation was made: no rule, unmapped, or an
    # exclusion (deceased, hospice, ...). Invitations carry their own reason.
    skip_reason: Mapped[str | None] = mapped_column(db.String(40), nullable=True)
    # From hospital messages: the appointment or visit this is about (a cancellation names it),
    # the codes the mapping file read, the patient class and the discharge disposition.
    reference: Mapped[str | None] = mapped_column(db.String(128), nullable=True)
    codes: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    patient_class: Mapped[str | None] = mapped_column(db.String(20), nullable=True)
    discharge_disposition: Mapped[str | None] = mapped_column(db.String(40), nullable=True)
    # What the HCAHPS rule did: "hcahps-skipped" or "hcahps-delayed"; None when it did not apply.
    hold: Mapped[str | None] = mapped_column(db.String(20), nullable=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("hospital_messages.id"), nullable=True)

    journey = relationship("Journey")
    touchpoint = relationship("Touchpoint")
    patient = relationship("Patient")
    invitations = relationship("Invitation", back_populates="event", order_by="Invitation.id")


class HospitalMessage(db.Model):
    """An HL7 v2 message or FHIR request as received, stored before it is acknowledged; processing
    it into events may come later (the MLLP listener answers first)."""

    __tablename__ = "hospital_messages"
    # A sender retrying a message it saw no ACK for sends the same control id: stored once.
    __table_args__ = (UniqueConstraint("source", "protocol", "control_id"),
                      Index("ix_hospital_messages_pending", "status", "id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(db.String(80))
    protocol: Mapped[str] = mapped_column(db.String(10))  # hl7v2 | fhir
    control_id: Mapped[str] = mapped_column(db.String(128))  # MSH-10, or a hash of the FHIR body
    message_type: Mapped[str] = mapped_column(db.String(40))  # SIU^S12, Bundle/transaction, ...
    body: Mapped[str] = mapped_column(db.Text)
    received_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # received -> processing -> processed | failed (a bug; `feedback-service events retry`);
    # FHIR requests are processed at once: processed, refused (a transaction) or failed.
    status: Mapped[str] = mapped_column(db.String(12), default="received")
    # When a processor took it: one HL7 message is processed at a time, in arrival order, and a
    # processor that died leaves it to be taken again after a lease.
    claimed_at = mapped_column(UTCDateTime, nullable=True)
    processed_at = mapped_column(UTCDateTime, nullable=True)
    # Per moment in the message: what became of it ({"event_id", "outcome", "reason", ...}).
    result: Mapped[list | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(db.String(200), nullable=True)
