"""Alert rules per journey and stage, and the alerts they raise on a bad moment."""
from __future__ import annotations

from sqlalchemy import JSON, ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..sqltypes import UTCDateTime, utcnow

STATES = ("open", "acknowledged", "resolved")
# The owner's email: pending -> sending -> sent | failed; a worker that died mid-send leaves it
# "unknown" (never resent blindly: the alert is on the dashboard either way). "no-owner": the
# stage has nobody to tell.
NOTIFY_STATES = ("pending", "sending", "sent", "failed", "unknown", "no-owner")


class AlertRule(db.Model):
    """What raises an alert in a stage; the journey's rule (stage_id None) covers stages without
    a rule of their own."""

    __tablename__ = "alert_rules"
    __table_args__ = (UniqueConstraint("journey_id", "stage_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id"))
    stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id"), nullable=True)
    low_satisfaction: Mapped[bool] = mapped_column(default=True)  # an answer at the bottom of its scale
    high_friction: Mapped[bool] = mapped_column(default=True)  # an answer at the top of its scale
    terms: Mapped[list] = mapped_column(JSON, default=list)  # a comment containing any of these
    active: Mapped[bool] = mapped_column(default=True)


class Alert(db.Model):
    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_journey_state", "journey_id", "state"),
                      Index("ix_alerts_notify", "notify_status"))

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id"), unique=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    touchpoint_id: Mapped[int] = mapped_column(ForeignKey("touchpoints.id"))
    # Why: [{"kind": "low-satisfaction" | "high-friction" | "term", "question": key, "value"/"term"}]
    reasons: Mapped[list] = mapped_column(JSON)
    moment_at = mapped_column(UTCDateTime, nullable=False)  # the journey moment (the event's time)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    state: Mapped[str] = mapped_column(db.String(12), default="open")
    acknowledged_at = mapped_column(UTCDateTime, nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(db.String(254), nullable=True)
    resolved_at = mapped_column(UTCDateTime, nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(db.String(254), nullable=True)
    note: Mapped[str | None] = mapped_column(db.Text, nullable=True)
    notify_status: Mapped[str] = mapped_column(db.String(10), default="pending")
    notified_to: Mapped[str | None] = mapped_column(db.String(254), nullable=True)
    notify_claimed_at = mapped_column(UTCDateTime, nullable=True)
    notified_at = mapped_column(UTCDateTime, nullable=True)

    response = relationship("Response")
    stage = relationship("Stage")
    touchpoint = relationship("Touchpoint")
