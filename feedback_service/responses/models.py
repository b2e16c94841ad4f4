"""A patient's answers, tied to the invitation's journey, stage, touchpoint and question-set version."""
from __future__ import annotations

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..sqltypes import UTCDateTime, utcnow


class Response(db.Model):
    __tablename__ = "responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    invitation_id: Mapped[int] = mapped_column(ForeignKey("invitations.id"), unique=True)
    journey_id: Mapped[int] = mapped_column(ForeignKey("journeys.id"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    touchpoint_id: Mapped[int] = mapped_column(ForeignKey("touchpoints.id"))
    question_set_version_id: Mapped[int] = mapped_column(ForeignKey("question_set_versions.id"))
    channel: Mapped[str] = mapped_column(db.String(10))  # web | sms
    locale: Mapped[str] = mapped_column(db.String(20))
    submitted_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    answers: Mapped[list["Answer"]] = relationship(back_populates="response", cascade="all, delete-orphan")
    question_set_version = relationship("QuestionSetVersion")


class Answer(db.Model):
    __tablename__ = "answers"

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id"), index=True)
    question_key: Mapped[str] = mapped_column(db.String(80))
    value: Mapped[str] = mapped_column(db.Text)  # as given: "4", "yes", "parking", free text
    measure: Mapped[str | None] = mapped_column(db.String(20), nullable=True)  # satisfaction | friction
    score: Mapped[float | None] = mapped_column(nullable=True)  # 0-100 on the measure's scale
    top_box: Mapped[bool | None] = mapped_column(nullable=True)

    response: Mapped[Response] = relationship(back_populates="answers")


class InboundMessage(db.Model):
    """A text from a patient we have acted on, by the provider's id: a webhook delivered twice
    (a provider's retry, a replay) is acted on once."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_message_id: Mapped[str] = mapped_column(db.String(64), unique=True)
    received_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
