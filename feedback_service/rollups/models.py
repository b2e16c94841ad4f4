"""Daily aggregates per touchpoint, kept up to date as invitations go out and answers come in.

Rows are keyed by the day of the journey moment (the event's occurred_at, UTC), so a period's
response rate compares the answers and the sends for the same moments.
"""
from __future__ import annotations

from sqlalchemy import Date, ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class DailyCounts(db.Model):
    __tablename__ = "rollup_daily_counts"
    __table_args__ = (UniqueConstraint("touchpoint_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    touchpoint_id: Mapped[int] = mapped_column(ForeignKey("touchpoints.id"))
    day = mapped_column(Date, nullable=False)
    sent: Mapped[int] = mapped_column(default=0)
    responses: Mapped[int] = mapped_column(default=0)


class DailyScores(db.Model):
    __tablename__ = "rollup_daily_scores"
    __table_args__ = (UniqueConstraint("touchpoint_id", "day", "measure"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    touchpoint_id: Mapped[int] = mapped_column(ForeignKey("touchpoints.id"))
    day = mapped_column(Date, nullable=False)
    measure: Mapped[str] = mapped_column(db.String(20))
    responses: Mapped[int] = mapped_column(default=0)  # responses with at least one answer on this measure
    # Column for column the fields of rollups.scoring.Sums.
    n: Mapped[int] = mapped_column(default=0)  # scored answers
    total: Mapped[float] = mapped_column(default=0.0)
    resp_total_sq: Mapped[float] = mapped_column(default=0.0)
    resp_n_sq: Mapped[float] = mapped_column(default=0.0)
    resp_cross: Mapped[float] = mapped_column(default=0.0)
    top_box: Mapped[int] = mapped_column(default=0)
