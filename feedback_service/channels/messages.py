"""Compose invitation messages from templates/messages/<name>/<locale>/: no clinical detail, ever."""
from __future__ import annotations

from flask import current_app, render_template
from jinja2 import TemplateNotFound

from ..journeys.questions import SCALES, choices, sms_question
from .base import Message

FALLBACK_LOCALE = "en"


def _render(name: str, part: str, locale: str, **context) -> str:
    for loc in (locale, FALLBACK_LOCALE):
        try:
            return render_template(f"messages/{name}/{loc}/{part}", **context).strip()
        except TemplateNotFound:
            continue
    raise TemplateNotFound(f"messages/{name}/{locale}/{part}")


def invitation_message(invitation, survey_url: str, unsubscribe_url: str, first_text: bool = False,
                       reminder: bool = False) -> Message:
    """The survey invitation for one claimed invitation row (its address fixed by the claim), in the
    patient's language. A one-question survey sent by text asks its question in the text itself.
    `reminder`: the rule's one reminder, to the same address, with a link of its own."""
    patient = invitation.patient
    locale = invitation.locale
    context = {
        # First name only: a message may be read by someone else on a shared phone or inbox.
        "first_name": (patient.first_name or "").split(" ")[0],
        "organisation": current_app.config["FEEDBACK_ORGANISATION_NAME"],
        "survey_url": survey_url,
        "stop_url": unsubscribe_url,
        "ttl_days": invitation.link_ttl_days,
        "first_text": first_text,
    }
    name = "survey_reminder" if reminder else "survey_invitation"
    if invitation.channel == "sms":
        # A reminder is the plain link, even for a survey asked in the text: replying still works.
        question = None if reminder else sms_question(invitation.question_set_version.content)
        if question is not None:
            context["question"] = question_prompt(question, locale)
            name = "sms_question"
        return Message(invitation.id, "sms", invitation.sent_to, _render(name, "sms.txt", locale, **context),
                       survey_url, locale, reminder=reminder)
    return Message(invitation.id, "email", invitation.sent_to, _render(name, "body.txt", locale, **context),
                   survey_url, locale, subject=_render(name, "subject.txt", locale, **context),
                   html=_render(name, "body.html", locale, **context), unsubscribe_url=unsubscribe_url,
                   reminder=reminder)


def question_prompt(question: dict, locale: str) -> dict:
    """What a text needs to ask one question: its wording, and the replies it takes."""
    text = question["text"].get(locale) or next(iter(question["text"].values()))
    prompt = {"text": text, "type": question["type"]}
    if question["type"] in SCALES:
        low, high, _ = SCALES[question["type"]]
        anchors = question.get("anchors", {}).get(locale) or ["", ""]
        prompt.update(low=low, high=high, low_label=anchors[0], high_label=anchors[1])
    elif question["type"] == "single_choice":
        prompt["options"] = [label for _value, label in choices(question, locale)]
    return prompt


def sms_reply(kind: str, locale: str, **context) -> str:
    """One of our answers to an incoming text (help, thanks, retry), in the patient's language."""
    return _render("sms_reply", f"{kind}.txt", locale,
                   organisation=current_app.config["FEEDBACK_ORGANISATION_NAME"],
                   support=current_app.config["FEEDBACK_SUPPORT_CONTACT"], **context)
