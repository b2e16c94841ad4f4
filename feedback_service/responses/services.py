"""Recording a patient's answers against the invitation's journey, stage, touchpoint and version."""
from __future__ import annotations

from sqlalchemy import or_, select, update

from ..alerts.services import raise_alert
from ..extensions import db
from ..journeys.questions import MAX_TEXT_ANSWER, score_answer
from ..patients.services import opt_out
from ..rollups.services import record_answers, record_sent
from ..scheduling.models import Invitation
from ..security import hash_secret, looks_like_token, matches
from ..sqltypes import utcnow
from .models import Answer, Response


class AnswerError(ValueError):
    def __init__(self, errors: dict[str, str]):
        super().__init__(str(errors))
        self.errors = errors


class AlreadyAnswered(Exception):
    pass


def find_invitation(token: str) -> Invitation | None:
    """The invitation a survey-link token was sent for, in whatever state."""
    if not looks_like_token(token):
        return None
    digest = hash_secret(token)
    # The reminder carries a link of its own; both open the same survey.
    invitation = db.session.scalar(select(Invitation).where(
        or_(Invitation.token_hash == digest, Invitation.reminder_token_hash == digest)))
    if invitation is None or not (matches(token, invitation.token_hash)
                                  | matches(token, invitation.reminder_token_hash)):
        return None
    return invitation


# "unknown": a worker died mid-send, so the message may well have reached the patient.
ANSWERABLE = ("sent", "unknown")


def open_invitation(token: str, now=None) -> Invitation | None:
    """The invitation a survey link may still be answered for, or None (unknown, used or expired)."""
    invitation = find_invitation(token)
    now = now or utcnow()
    if invitation is None or invitation.status not in ANSWERABLE or invitation.expires_at <= now:
        return None
    return invitation


def mark_opened(invitation: Invitation, now=None) -> None:
    if invitation.opened_at is None:
        invitation.opened_at = now or utcnow()
        db.session.commit()


def record_response(invitation: Invitation, values: dict[str, str | None], channel: str = "web",
                    now=None) -> Response:
    """Store the answers given (blank optional answers are left out) and update the rollups."""
    now = now or utcnow()
    version = invitation.question_set_version
    answers, errors = [], {}
    for q in version.questions:
        raw = values.get(q["key"])
        raw = raw.strip() if isinstance(raw, str) else raw
        if not raw:
            if q["required"]:
                errors[q["key"]] = "required"
            continue
        if q["type"] == "text" and len(raw) > MAX_TEXT_ANSWER:
            errors[q["key"]] = f"at most {MAX_TEXT_ANSWER} characters"
            continue
        if "\x00" in raw:
            errors[q["key"]] = "contains a NUL character"
            continue
        try:
            measure, score, top = score_answer(q, raw)
        except ValueError as exc:
            errors[q["key"]] = str(exc)
            continue
        answers.append(Answer(question_key=q["key"], value=raw, measure=measure, score=score, top_box=top))
    if errors:
        raise AnswerError(errors)

    # Conditional updates are the "works once" guarantee, even for two submits at the same instant.
    # One whose send was in doubt is answered first on its own, so that a provider callback
    # confirming the send at the same moment cannot count it twice.
    was_in_doubt = db.session.execute(
        update(Invitation).where(Invitation.id == invitation.id, Invitation.status == "unknown")
        .values(status="answered", answered_at=now, sent_at=invitation.handed_over_at)
    ).rowcount == 1
    if not was_in_doubt and db.session.execute(
            update(Invitation).where(Invitation.id == invitation.id, Invitation.status == "sent")
            .values(status="answered", answered_at=now)).rowcount != 1:
        db.session.rollback()
        raise AlreadyAnswered()
    if was_in_doubt:
        # An answer proves the message went out: count the send the crash kept us from recording.
        record_sent(invitation)
    response = Response(
        invitation_id=invitation.id, journey_id=invitation.journey_id, stage_id=invitation.stage_id,
        touchpoint_id=invitation.touchpoint_id, question_set_version_id=version.id, channel=channel,
        locale=invitation.locale, submitted_at=now, answers=answers,
    )
    db.session.add(response)
    db.session.flush()
    record_answers(invitation, response)
    raise_alert(invitation, response)
    db.session.commit()
    return response


def stoppable_invitation(token: str) -> Invitation | None:
    """The invitation behind any link we ever sent: stopping works even after answering or expiry."""
    invitation = find_invitation(token)
    if invitation is None or (invitation.sent_at is None and invitation.status != "unknown"):
        return None
    return invitation


def opt_out_invitation(invitation: Invitation) -> None:
    """The patient asked, from a survey link, for no more surveys at the address that reached them."""
    address = invitation.sent_to or invitation.patient.address(invitation.channel)
    opt_out(invitation.channel, address, source="survey-page")
