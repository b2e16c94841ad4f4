"""Journeys, their ordered stages and touchpoints, versioned question sets and trigger rules."""
from __future__ import annotations

from sqlalchemy import JSON, ForeignKey, UniqueConstraint, event
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..sqltypes import UTCDateTime, utcnow

TOUCHPOINT_KINDS = ("digital", "human", "physical")
EVENT_TYPES = ("booking", "discharge", "follow_up")
# What an HCAHPS-sampled journey's rule does with an eligible adult inpatient discharge.
HCAHPS_HOLDS = ("skip", "delay")


class Journey(db.Model):
    __tablename__ = "journeys"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(db.String(80), unique=True)
    name: Mapped[str] = mapped_column(db.String(200))
    is_default: Mapped[bool] = mapped_column(default=False)
    # Locales the journey's question sets are written in; the first is the fallback.
    locales: Mapped[list] = mapped_column(JSON, default=lambda: ["en"])
    # The hospital's official HCAHPS survey samples this journey's inpatients: our own discharge
    # surveys must not bias it, so eligible discharges are held (see TriggerRule.hcahps).
    hcahps_sampled: Mapped[bool] = mapped_column(default=False)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    # Retired: no new invitations, hidden from the editors; its history stays reportable.
    retired_at = mapped_column(UTCDateTime, nullable=True)

    stages: Mapped[list["Stage"]] = relationship(
        back_populates="journey", order_by="Stage.position", cascade="all, delete-orphan"
    )
    rules: Mapped[list["TriggerRule"]] = relationship(back_populates="journey", cascade="all, delete-orphan")

    def stage(self, slug: str) -> "Stage | None":
        return next((s for s in self.stages if s.slug == slug), None)

    @property
    def question_sets(self) -> list["QuestionSet"]:
        """Every stage's question sets, in journey order (set keys are unique in a journey)."""
        return [qs for st in self.stages for qs in st.question_sets]

    def question_set(self, key) -> "QuestionSet | None":
        return next((qs for qs in self.question_sets if qs.key == key), None)

    def locale_for(self, wanted: str | None) -> str:
        """Best journey locale for a patient's locale tag ("es-MX" -> "es")."""
        if wanted:
            wanted = wanted.replace("_", "-").lower()
            for candidate in (wanted, wanted.split("-")[0]):
                if candidate in self.locales:
                    return candidate
        return self.locales[0]


class Stage(db.Model):
    __tablename__ = "stages"
    __table_args__ = (UniqueConstraint("journey_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id"))
    slug: Mapped[str] = mapped_column(db.String(80))
    name: Mapped[str] = mapped_column(db.String(200))
    position: Mapped[int]
    retired_at = mapped_column(UTCDateTime, nullable=True)
    # Who is told of the stage's alerts (email); None: alerts only show on the dashboard.
    owner_email: Mapped[str | None] = mapped_column(db.String(254), nullable=True)

    journey: Mapped[Journey] = relationship(back_populates="stages")
    touchpoints: Mapped[list["Touchpoint"]] = relationship(
        back_populates="stage", order_by="Touchpoint.position", cascade="all, delete-orphan"
    )
    question_sets: Mapped[list["QuestionSet"]] = relationship(back_populates="stage", order_by="QuestionSet.key")

    def touchpoint(self, slug: str) -> "Touchpoint | None":
        return next((t for t in self.touchpoints if t.slug == slug), None)


class Touchpoint(db.Model):
    __tablename__ = "touchpoints"
    __table_args__ = (UniqueConstraint("stage_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    slug: Mapped[str] = mapped_column(db.String(80))
    name: Mapped[str] = mapped_column(db.String(200))
    kind: Mapped[str] = mapped_column(db.String(20))
    position: Mapped[int]
    retired_at = mapped_column(UTCDateTime, nullable=True)

    stage: Mapped[Stage] = relationship(back_populates="touchpoints")


class QuestionSet(db.Model):
    __tablename__ = "question_sets"
    __table_args__ = (UniqueConstraint("stage_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    key: Mapped[str] = mapped_column(db.String(80))
    # The workspace's working copy: edited freely, never asked; publishing turns it into the next
    # immutable version and clears it.
    draft: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    draft_updated_at = mapped_column(UTCDateTime, nullable=True)

    stage: Mapped[Stage] = relationship(back_populates="question_sets")
    versions: Mapped[list["QuestionSetVersion"]] = relationship(
        back_populates="question_set", order_by="QuestionSetVersion.version"
    )

    @property
    def current(self) -> "QuestionSetVersion | None":
        """Latest published version, the one new invitations ask."""
        published = [v for v in self.versions if v.published_at is not None]
        return published[-1] if published else None


class QuestionSetVersion(db.Model):
    """One immutable published version; `content` is the validated question-set document."""

    __tablename__ = "question_set_versions"
    __table_args__ = (UniqueConstraint("question_set_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    question_set_id: Mapped[int] = mapped_column(ForeignKey("question_sets.id"))
    version: Mapped[int]
    content: Mapped[dict] = mapped_column(JSON)
    # sha256 of the canonical content: loading the same file twice publishes nothing new.
    content_hash: Mapped[str] = mapped_column(db.String(64))
    published_at = mapped_column(UTCDateTime, nullable=True)

    question_set: Mapped[QuestionSet] = relationship(back_populates="versions")

    @property
    def questions(self) -> list[dict]:
        return self.content["questions"]

    @property
    def questions_by_key(self) -> dict[str, dict]:
        return {q["key"]: q for q in self.questions}


@event.listens_for(QuestionSetVersion, "before_update")
def _versions_are_immutable(_mapper, _connection, version: QuestionSetVersion) -> None:
    # Responses point at the version they answered: changing one would rewrite what was asked.
    changed = [attr.key for attr in db.inspect(version).attrs if attr.history.has_changes()]
    if set(changed) - {"question_set"}:
        raise ValueError(f"question-set version {version.id} is published and cannot change ({', '.join(changed)})")


class TriggerRule(db.Model):
    """Event type -> which stage's question set, when, on which channels."""

    __tablename__ = "trigger_rules"
    __table_args__ = (UniqueConstraint("journey_id", "event_type"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id"))
    event_type: Mapped[str] = mapped_column(db.String(20))
    question_set_id: Mapped[int] = mapped_column(ForeignKey("question_sets.id"))
    default_touchpoint_id: Mapped[int] = mapped_column(ForeignKey("touchpoints.id"))
    delay_minutes: Mapped[int]
    channels: Mapped[list] = mapped_column(JSON)  # preference order, e.g. ["sms", "email"]
    link_ttl_days: Mapped[int | None] = mapped_column(nullable=True)  # None: the setting
    fatigue_days: Mapped[int | None] = mapped_column(nullable=True)  # None: the setting
    active: Mapped[bool] = mapped_column(default=True)
    hcahps: Mapped[str] = mapped_column(db.String(10), default="skip")  # one of HCAHPS_HOLDS
    # One reminder this many hours after the invitation went out, if still unanswered; None: none.
    reminder_hours: Mapped[int | None] = mapped_column(nullable=True)
    # The rule's own sending hours ("09:00"-"19:00"), inside the service-wide window; None: that.
    window_start: Mapped[str | None] = mapped_column(db.String(5), nullable=True)
    window_end: Mapped[str | None] = mapped_column(db.String(5), nullable=True)
    # Location, department, appointment-type or service-type codes this rule never surveys.
    exclude_codes: Mapped[list] = mapped_column(JSON, default=list)

    journey: Mapped[Journey] = relationship(back_populates="rules")
    question_set: Mapped[QuestionSet] = relationship()
    default_touchpoint: Mapped[Touchpoint] = relationship()

    @property
    def stage(self) -> Stage:
        return self.question_set.stage
