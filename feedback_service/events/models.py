"""Journey events as received, whatever their source."""
from __future__ import annotations

from sqlalchemy import ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..sqltypes import UTCDateTime, utcnow


class Event(db.Model):
    __tablename__ = "events"
    # The idempotency key: a resent event from the same source changes nothing.
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(db.String(80))
    external_id: Mapped[str] = mapped_column(db.String(128))
    type: Mapped[str] = mapped_column(db.String(20))
    occurred_at = mapped_column(UTCDateTime, nullable=False)
    received_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id"))
    touchpoint_id: Mapped[int | None] = mapped_column(ForeignKey("touchpoints.id"), nullable=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    # Why this event leads to no survey, when no rule applied (invitations carry their own reason).
    skip_reason: Mapped[str | None] = mapped_column(db.String(40), nullable=True)

    journey = relationship("Journey")
    touchpoint = relationship("Touchpoint")
    patient = relationship("Patient")
    invitations = relationship("Invitation", back_populates="event", order_by="Invitation.id")
