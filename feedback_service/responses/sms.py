"""Texts from patients: opt-out and opt-in keywords, HELP, and answers to one-question text surveys."""
from __future__ import annotations

import logging

from sqlalchemy import select, update

from ..channels.messages import question_prompt, sms_reply
from ..extensions import db, insert_once
from ..journeys.questions import parse_sms_answer, reply_words, sms_question
from ..patients.models import Patient
from ..patients.services import is_opted_out, opt_in, opt_out
from ..scheduling.models import Invitation
from ..sqltypes import utcnow
from .models import InboundMessage
from .services import ANSWERABLE, AlreadyAnswered, record_response

log = logging.getLogger(__name__)

# The carriers' and CTIA's keywords (Twilio honours the same ones on its side).
STOP_WORDS = {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout", "opt out"}
START_WORDS = {"start", "unstop", "yes"}
HELP_WORDS = {"help", "info"}


def keyword(body: str) -> str:
    return " ".join(reply_words(body))


def handle_text(number: str, body: str, message_id: str, now=None, opt_out_type: str | None = None) -> str | None:
    """Act on a text from `number`, once per provider message id; returns our reply, if one is
    due. `opt_out_type` is what Twilio's Advanced Opt-Out made of it (STOP, START or HELP, for
    keywords configured there)."""
    now = now or utcnow()
    if db.session.scalar(select(InboundMessage.id).where(InboundMessage.provider_message_id == message_id[:64])):
        log.info("inbound text: already handled")
        return None
    reply = _act(number, body, now, (opt_out_type or "").lower() or keyword(body))
    # Noted once acted on: a crash before this lets Twilio's retry act again, which every effect
    # below tolerates; a replay after it changes nothing.
    insert_once(InboundMessage(provider_message_id=message_id[:64], received_at=now))
    return reply


def _act(number: str, body: str, now, word: str) -> str | None:
    if word in STOP_WORDS:
        # Twilio confirms the opt-out to the patient itself, and would block a reply from us.
        opt_out("sms", number, source="sms-keyword")
        log.info("inbound text: opt-out keyword")
        return None
    # YES opts back in only a number that opted out; otherwise it may answer a yes/no question.
    if word in START_WORDS and (word != "yes" or is_opted_out("sms", number)):
        opt_in("sms", number)
        log.info("inbound text: opt-in keyword")
        return None
    invitation = _open_text_invitation(number, now)
    if word in HELP_WORDS:
        return sms_reply("help", invitation.locale if invitation else _locale_of(number))
    if invitation is None:
        log.info("inbound text: no open survey for this number")
        return None
    question = sms_question(invitation.question_set_version.content)
    value = parse_sms_answer(question, body) if question else None
    if value is not None:
        try:
            record_response(invitation, {question["key"]: value}, channel="sms", now=now)
        except AlreadyAnswered:
            return None
        return sms_reply("thanks", invitation.locale)
    # One polite retry prompt per invitation; after that we stay quiet rather than nag.
    prompted = db.session.execute(
        update(Invitation).where(Invitation.id == invitation.id, Invitation.reply_prompted_at.is_(None))
        .values(reply_prompted_at=now)).rowcount == 1
    db.session.commit()
    if not prompted:
        return None
    return sms_reply("retry", invitation.locale,
                     question=question_prompt(question, invitation.locale) if question else None)


def _open_text_invitation(number: str, now) -> Invitation | None:
    """The latest survey texted to this number that can still be answered."""
    return db.session.scalar(
        select(Invitation).where(Invitation.channel == "sms", Invitation.sent_to == number,
                                 Invitation.status.in_(ANSWERABLE), Invitation.expires_at > now)
        .order_by(Invitation.claimed_at.desc(), Invitation.id.desc()).limit(1))


def _locale_of(number: str) -> str:
    locale = db.session.scalar(select(Patient.locale).where(Patient.phone == number, Patient.locale.is_not(None))
                               .order_by(Patient.updated_at.desc()).limit(1))
    return (locale or "en").split("-")[0]
