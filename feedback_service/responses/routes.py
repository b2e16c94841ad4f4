"""The patient's survey page: open the link, answer, thank you. Thin: the work is in services."""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from ..protection import token_guessing
from .forms import build_survey_form
from .services import (AlreadyAnswered, AnswerError, find_invitation, mark_opened, open_invitation,
                       opt_out_invitation, record_response, stoppable_invitation)
from .texts import TEXTS, texts_for

bp = Blueprint("survey", __name__, url_prefix="/s")


def _unavailable():
    # One page for unknown, malformed, used and expired links, in the browser's language:
    # it reveals nothing about the token.
    locale = request.accept_languages.best_match(list(TEXTS)) or "en"
    return render_template("survey/unavailable.html", t=texts_for(locale), locale=locale), 404


@bp.route("/<token>", methods=["GET", "POST"])
@token_guessing
def survey(token: str):
    invitation = open_invitation(token)
    if invitation is None:
        return _unavailable()
    version = invitation.question_set_version
    locale = invitation.locale
    t = texts_for(locale)
    form = build_survey_form(version.questions, locale)
    if form.validate_on_submit():
        values = {q["key"]: form[q["key"]].data for q in version.questions}
        try:
            record_response(invitation, values)
            return redirect(url_for("survey.thanks", token=token))
        except AlreadyAnswered:
            return _unavailable()
        except AnswerError as exc:
            # The form's validators catch nearly everything; the service has the last word.
            for key in exc.errors:
                form[key].errors = [*form[key].errors, t["invalid"]]
    mark_opened(invitation)
    return render_template("survey/form.html", form=form, questions=version.questions,
                           content=version.content, locale=locale, t=t, token=token,
                           csrf_failed=bool(form.errors.get("csrf_token"))), 200 if not form.errors else 422


@bp.route("/<token>/thanks")
@token_guessing
def thanks(token: str):
    invitation = find_invitation(token)
    if invitation is None or invitation.status != "answered":
        return _unavailable()
    return render_template("survey/thanks.html", t=texts_for(invitation.locale), locale=invitation.locale)


@bp.route("/<path:mangled>", methods=["GET", "POST"])
@token_guessing
def mangled_link(mangled: str):
    # A link cut or joined wrongly by a mail client ("/s/<token>/", "/s/<token>%2F..."): the same
    # page as any link that opens nothing, and counted as one.
    return _unavailable()


@bp.route("/<token>/stop", methods=["GET", "POST"])
def stop(token: str):
    # Links sent before /unsubscribe existed keep working.
    return redirect(url_for("unsubscribe.unsubscribe", token=token), 308)


unsubscribe_bp = Blueprint("unsubscribe", __name__)


@unsubscribe_bp.route("/unsubscribe/<path:mangled>", methods=["GET", "POST"])
@token_guessing
def mangled_unsubscribe(mangled: str):
    return _unavailable()


@unsubscribe_bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
@token_guessing
def unsubscribe(token: str):
    """GET asks to confirm (link scanners and previews must not opt anyone out); POST opts out at
    once: the confirm button, or a mail provider's RFC 8058 one-click, which carries no cookie and
    so no CSRF token. The token itself is the secret that proves the link was ours."""
    invitation = stoppable_invitation(token)
    if invitation is None:
        return _unavailable()
    locale = invitation.locale
    if request.method == "POST":
        opt_out_invitation(invitation)
        return render_template("survey/stopped.html", t=texts_for(locale), locale=locale)
    return render_template("survey/stop.html", t=texts_for(locale), locale=locale, token=token)
