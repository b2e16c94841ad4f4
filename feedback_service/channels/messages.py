"""Compose invitation messages from templates/messages/<name>/<locale>/: no clinical detail, ever."""
from __future__ import annotations

from flask import current_app, render_template
from jinja2 import TemplateNotFound

from .base import Message

FALLBACK_LOCALE = "en"


def _render(name: str, part: str, locale: str, **context) -> str:
    for loc in (locale, FALLBACK_LOCALE):
        try:
            return render_template(f"messages/{name}/{loc}/{part}", **context).strip()
        except TemplateNotFound:
            continue
    raise TemplateNotFound(f"messages/{name}/{locale}/{part}")


def invitation_message(invitation, survey_url: str) -> Message:
    """The survey invitation for one claimed invitation row (its address fixed by the claim), in the
    patient's language."""
    patient = invitation.patient
    context = {
        # First name only: a message may be read by someone else on a shared phone or inbox.
        "first_name": (patient.first_name or "").split(" ")[0],
        "organisation": current_app.config["FEEDBACK_ORGANISATION_NAME"],
        "survey_url": survey_url,
        "stop_url": f"{survey_url}/stop",
        "ttl_days": invitation.link_ttl_days,
    }
    name, locale = "survey_invitation", invitation.locale
    if invitation.channel == "sms":
        return Message(invitation.id, "sms", invitation.sent_to, _render(name, "sms.txt", locale, **context),
                       survey_url, locale)
    return Message(invitation.id, "email", invitation.sent_to, _render(name, "body.txt", locale, **context),
                   survey_url, locale, subject=_render(name, "subject.txt", locale, **context),
                   html=_render(name, "body.html", locale, **context))
