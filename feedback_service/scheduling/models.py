"""The invitation outbox: one row per survey invitation, driven by a small state machine."""
from __future__ import annotations

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..sqltypes import UTCDateTime, utcnow

# scheduled -> sending -> sent -> answered
#                      -> scheduled (transient error, retried later) | failed (-> a new row on
#                         the rule's next channel)
#           -> skipped (reason) | expired | cancelled (the appointment or discharge was cancelled)
# sending past its lease -> scheduled if never handed to a provider, else unknown (never resent
# blindly; a provider callback, an event or an answer for it proves it went out: -> sent)
STATUSES = ("scheduled", "sending", "sent", "answered", "failed", "expired", "skipped", "unknown", "cancelled")


class Invitation(db.Model):
    __tablename__ = "invitations"
    __table_args__ = (
        Index("ix_invitations_due", "status", "send_at"),
        Index("ix_invitations_due_by_channel", "status", "channel", "send_at"),  # each medium claims its own
        Index("ix_invitations_patient_sent", "patient_id", "channel", "send_at"),
        Index("ix_invitations_sent_to", "sent_to", "channel"),
        Index("ix_invitations_reminder_status", "reminder_status"),  # the few "sending" ones, for recovery
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    touchpoint_id: Mapped[int] = mapped_column(ForeignKey("touchpoints.id"))
    question_set_version_id: Mapped[int] = mapped_column(ForeignKey("question_set_versions.id"))
    channel: Mapped[str | None] = mapped_column(db.String(10), nullable=True)  # sms | email
    # The rule's channel order ("sms,email"): after a permanent failure the next one is tried.
    channels: Mapped[str | None] = mapped_column(db.String(40), nullable=True)
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("invitations.id"), nullable=True)
    locale: Mapped[str] = mapped_column(db.String(20))
    status: Mapped[str] = mapped_column(db.String(12), default="scheduled")
    skip_reason: Mapped[str | None] = mapped_column(db.String(40), nullable=True)
    send_at = mapped_column(UTCDateTime, nullable=True)
    # Never sent after this (a discharge survey's contact window); None: no such bound.
    send_by = mapped_column(UTCDateTime, nullable=True)
    link_ttl_days: Mapped[int]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(db.String(200), nullable=True)
    error_code: Mapped[str | None] = mapped_column(db.String(40), nullable=True)  # the provider's
    claimed_at = mapped_column(UTCDateTime, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(db.String(80), nullable=True)
    # Set (committed) just before the message is handed to the provider: a claimed row without it
    # surely never left us, so a dead worker's claim on it can be given back to the queue.
    send_started_at = mapped_column(UTCDateTime, nullable=True)
    # sha256 of the survey-link token; the token itself exists only in the sent message.
    token_hash: Mapped[str | None] = mapped_column(db.String(64), unique=True, nullable=True)
    provider_message_id: Mapped[str | None] = mapped_column(db.String(100), nullable=True, index=True)
    # The address the message went to (fixed when claimed): text limits count per handset, and a
    # "stop" from this link opts out this address.
    sent_to: Mapped[str | None] = mapped_column(db.String(254), nullable=True)
    sent_at = mapped_column(UTCDateTime, nullable=True)
    # What the provider said since: queued, sent, delivered, undelivered, failed (Twilio);
    # processed, deferred, delivered, bounce, dropped (SendGrid).
    delivery_status: Mapped[str | None] = mapped_column(db.String(20), nullable=True)
    delivered_at = mapped_column(UTCDateTime, nullable=True)
    email_opened_at = mapped_column(UTCDateTime, nullable=True)  # SendGrid's open pixel
    # The one polite "please reply with a number" a text survey gets.
    reply_prompted_at = mapped_column(UTCDateTime, nullable=True)
    expires_at = mapped_column(UTCDateTime, nullable=True)
    # The rule's one reminder, if unanswered (due reminder_hours after sent_at): reminder_status is
    # sending, sent, skipped (reminder_reason), failed, or unknown (a worker died mid-send: never
    # resent). It carries a link of its own (hash below), so both links open the same survey.
    reminder_status: Mapped[str | None] = mapped_column(db.String(12), nullable=True)
    reminder_reason: Mapped[str | None] = mapped_column(db.String(40), nullable=True)
    reminder_token_hash: Mapped[str | None] = mapped_column(db.String(64), unique=True, nullable=True)
    reminded_at = mapped_column(UTCDateTime, nullable=True)
    opened_at = mapped_column(UTCDateTime, nullable=True)
    answered_at = mapped_column(UTCDateTime, nullable=True)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    @property
    def handed_over_at(self):
        """When the message went to the provider, for one whose send we could not record."""
        return self.send_started_at or self.claimed_at

    event = relationship("Event", back_populates="invitations")
    patient = relationship("Patient")
    journey = relationship("Journey")
    stage = relationship("Stage")
    touchpoint = relationship("Touchpoint")
    question_set_version = relationship("QuestionSetVersion")
