"""The invitation outbox: one row per survey invitation, driven by a small state machine."""
from __future__ import annotations

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..sqltypes import UTCDateTime, utcnow

# scheduled -> sending -> sent -> answered
#                      -> scheduled (transient error, retried later) | failed
#           -> skipped (reason) | expired
# sending left past its lease -> unknown (never resent blindly)
STATUSES = ("scheduled", "sending", "sent", "answered", "failed", "expired", "skipped", "unknown")


class Invitation(db.Model):
    __tablename__ = "invitations"
    __table_args__ = (
        Index("ix_invitations_due", "status", "send_at"),
        Index("ix_invitations_patient_sent", "patient_id", "channel", "send_at"),
        Index("ix_invitations_sent_to", "sent_to", "channel"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    touchpoint_id: Mapped[int] = mapped_column(ForeignKey("touchpoints.id"))
    question_set_version_id: Mapped[int] = mapped_column(ForeignKey("question_set_versions.id"))
    channel: Mapped[str | None] = mapped_column(db.String(10), nullable=True)  # sms | email
    locale: Mapped[str] = mapped_column(db.String(20))
    status: Mapped[str] = mapped_column(db.String(12), default="scheduled")
    skip_reason: Mapped[str | None] = mapped_column(db.String(40), nullable=True)
    send_at = mapped_column(UTCDateTime, nullable=True)
    link_ttl_days: Mapped[int]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(db.String(200), nullable=True)
    claimed_at = mapped_column(UTCDateTime, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(db.String(80), nullable=True)
    # sha256 of the survey-link token; the token itself exists only in the sent message.
    token_hash: Mapped[str | None] = mapped_column(db.String(64), unique=True, nullable=True)
    provider_message_id: Mapped[str | None] = mapped_column(db.String(100), nullable=True)
    # The address the message went to (fixed when claimed): text limits count per handset, and a
    # "stop" from this link opts out this address.
    sent_to: Mapped[str | None] = mapped_column(db.String(254), nullable=True)
    sent_at = mapped_column(UTCDateTime, nullable=True)
    expires_at = mapped_column(UTCDateTime, nullable=True)
    opened_at = mapped_column(UTCDateTime, nullable=True)
    answered_at = mapped_column(UTCDateTime, nullable=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    event = relationship("Event", back_populates="invitations")
    patient = relationship("Patient")
    journey = relationship("Journey")
    stage = relationship("Stage")
    touchpoint = relationship("Touchpoint")
    question_set_version = relationship("QuestionSetVersion")
