"""The survey form, built from a question-set version: each field is named by its question key."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import RadioField, SelectChoice, TextAreaField
from wtforms.validators import InputRequired, Length, Optional

from ..journeys.questions import MAX_TEXT_ANSWER, choices
from .texts import texts_for


class SurveyForm(FlaskForm):
    class Meta:
        # A patient may keep the page open for a while: the token is tied to the session, not a clock.
        csrf_time_limit = None


def build_survey_form(questions: list[dict], locale: str, **kwargs) -> SurveyForm:
    t = texts_for(locale)
    fields = {}
    for q in questions:
        label = q["text"].get(locale) or next(iter(q["text"].values()))
        presence = InputRequired(message=t["required"]) if q["required"] else Optional()
        if q["type"] == "text":
            presence = InputRequired(message=t["required_text"]) if q["required"] else Optional()
            fields[q["key"]] = TextAreaField(
                label, validators=[presence, Length(max=MAX_TEXT_ANSWER, message=t["too_long"].format(n=MAX_TEXT_ANSWER))])
        else:
            fields[q["key"]] = RadioField(label, choices=[SelectChoice(v, text) for v, text in choices(q, locale)], validators=[presence],
                                          validate_choice=True)
    form_class = type("Survey", (SurveyForm,), fields)
    return form_class(**kwargs)
