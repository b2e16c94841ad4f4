"""Daily aggregates, kept up to date as invitations go out and answers come in.

Two levels, both kept by the same increments and the same rebuild:
- per touchpoint, question-set version, channel, locale, event source and day (and, for scores,
  measure): what a filtered view or a version marker reads;
- per touchpoint and day: what an unfiltered view reads, a tenth of the rows or fewer.
The map, the trends and the feed read these rows, never the answers table. The day is the day of
the journey moment (the event's occurred_at, UTC), so a period's response rate compares the
answers and the sends for the same moments. Journey and stage follow from the touchpoint; they
are kept on the row so a journey's rows are one index range.
"""
from __future__ import annotations

from sqlalchemy import Date, ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..sqltypes import UTCDateTime

# What makes a row of each level; journey_id and stage_id follow from the touchpoint.
PLACE_KEY = ("touchpoint_id", "day")
CELL_KEY = ("touchpoint_id", "question_set_version_id", "channel", "locale", "source", "day")


class _Place:
    id: Mapped[int] = mapped_column(primary_key=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    touchpoint_id: Mapped[int] = mapped_column(ForeignKey("touchpoints.id"))
    day = mapped_column(Date, nullable=False)


class _Cell(_Place):
    question_set_version_id: Mapped[int] = mapped_column(ForeignKey("question_set_versions.id"))
    channel: Mapped[str] = mapped_column(db.String(10))  # the invitation's: sms | email
    locale: Mapped[str] = mapped_column(db.String(20))
    source: Mapped[str] = mapped_column(db.String(80))  # the event's source


class _Counts:
    sent: Mapped[int] = mapped_column(default=0)
    responses: Mapped[int] = mapped_column(default=0)


class _Scores:
    measure: Mapped[str] = mapped_column(db.String(20))  # satisfaction | friction | nps
    responses: Mapped[int] = mapped_column(default=0)  # responses with at least one answer on this measure
    # Column for column the fields of rollups.scoring.Sums.
    n: Mapped[int] = mapped_column(default=0)  # scored answers
    total: Mapped[float] = mapped_column(default=0.0)
    resp_total_sq: Mapped[float] = mapped_column(default=0.0)
    resp_n_sq: Mapped[float] = mapped_column(default=0.0)
    resp_cross: Mapped[float] = mapped_column(default=0.0)
    top_box: Mapped[int] = mapped_column(default=0)
    bottom_box: Mapped[int] = mapped_column(default=0)


class DailyCounts(_Cell, _Counts, db.Model):
    __tablename__ = "rollup_daily_counts"
    __table_args__ = (UniqueConstraint(*CELL_KEY, name="uq_rollup_daily_counts_cell"),
                      Index("ix_rollup_daily_counts_journey_day", "journey_id", "day"),
                      # When each version was first used, without reading the rows themselves.
                      Index("ix_rollup_daily_counts_journey_version", "journey_id", "question_set_version_id", "day"))


class DailyScores(_Cell, _Scores, db.Model):
    __tablename__ = "rollup_daily_scores"
    __table_args__ = (UniqueConstraint(*CELL_KEY, "measure", name="uq_rollup_daily_scores_cell"),
                      Index("ix_rollup_daily_scores_journey_day", "journey_id", "day"))


class TouchpointDayCounts(_Place, _Counts, db.Model):
    __tablename__ = "rollup_touchpoint_counts"
    __table_args__ = (UniqueConstraint(*PLACE_KEY, name="uq_rollup_touchpoint_counts_place"),
                      Index("ix_rollup_touchpoint_counts_journey_day", "journey_id", "day"))


class TouchpointDayScores(_Place, _Scores, db.Model):
    __tablename__ = "rollup_touchpoint_scores"
    __table_args__ = (UniqueConstraint(*PLACE_KEY, "measure", name="uq_rollup_touchpoint_scores_place"),
                      Index("ix_rollup_touchpoint_scores_journey_day", "journey_id", "day"))


class Comment(_Cell, db.Model):
    """A patient's free-text answer, kept with the cell it belongs to and its response's scores,
    so that comments are filtered, searched and mined for themes like the scores are."""

    __tablename__ = "comments"
    __table_args__ = (Index("ix_comments_journey_day", "journey_id", "day"),)

    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id"), index=True)
    question_key: Mapped[str] = mapped_column(db.String(80))
    text: Mapped[str] = mapped_column(db.Text)
    submitted_at = mapped_column(UTCDateTime, nullable=False)
    # The response's mean score on each measure (None: not asked or not answered).
    satisfaction: Mapped[float | None] = mapped_column(nullable=True)
    friction: Mapped[float | None] = mapped_column(nullable=True)
