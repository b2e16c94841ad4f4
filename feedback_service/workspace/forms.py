"""Workspace forms (Flask-WTF, CSRF on each). The question-set editor posts a whole document and is
read by drafts.doc_from_form; its FlaskForm carries the CSRF token."""
from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import (BooleanField, DateTimeLocalField, EmailField, FloatField, IntegerField, SelectChoice,
                     SelectField, StringField, TelField, TextAreaField)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, Regexp

from ..channels.base import MEDIA
from ..journeys.models import EVENT_TYPES, HCAHPS_HOLDS, TOUCHPOINT_KINDS

SLUG = [DataRequired(), Length(max=80),
        Regexp(r"^[a-z][a-z0-9-]*$", message="lower-case letters, digits and dashes, starting with a letter")]
NAME = [DataRequired(), Length(max=200)]
HHMM = [Optional(), Regexp(r"^([01]\d|2[0-3]):[0-5]\d$", message="a time as HH:MM")]
MEDIUM_CHOICES = [SelectChoice(m, {"sms": "Text message (SMS)", "email": "Email"}[m]) for m in MEDIA]
HCAHPS_LABELS = {"skip": "Do not survey", "delay": "Survey after the HCAHPS window"}
KIND_CHOICES = [SelectChoice(k, k.capitalize()) for k in TOUCHPOINT_KINDS]
EVENT_LABELS = {"booking": "Booking", "discharge": "Discharge", "follow_up": "Follow-up"}


class JourneyForm(FlaskForm):
    slug = StringField("Short name (in URLs and files)", validators=SLUG)
    name = StringField("Name", validators=NAME)
    locales = StringField("Languages (codes, the fallback first)", default="en",
                          validators=[DataRequired(), Length(max=100)])


class JourneySettingsForm(FlaskForm):
    name = StringField("Name", validators=NAME)
    locales = StringField("Languages (codes, the fallback first)", validators=[DataRequired(), Length(max=100)])
    hcahps_sampled = BooleanField("The hospital's HCAHPS survey samples this journey's inpatients")


class StageForm(FlaskForm):
    slug = StringField("Short name", validators=SLUG)
    name = StringField("Stage name", validators=NAME)


class TouchpointForm(FlaskForm):
    slug = StringField("Short name", validators=SLUG)
    name = StringField("Touchpoint name", validators=NAME)
    kind = SelectField("Kind", choices=KIND_CHOICES)


class RenameForm(FlaskForm):
    name = StringField("Name", validators=NAME)
    kind = SelectField("Kind", choices=[SelectChoice("", "(unchanged)")] + KIND_CHOICES, validators=[Optional()])


class QuestionSetForm(FlaskForm):
    key = StringField("Short name of the question set", validators=SLUG)
    stage = SelectField("Stage", coerce=int)


class RuleForm(FlaskForm):
    question_set = SelectField("Question set (its stage is surveyed)")
    touchpoint = SelectField("Touchpoint, when the event names none")
    delay_hours = FloatField("Wait after the event (hours)", validators=[InputRequired(message="required"),
                                                                         NumberRange(min=0, max=24 * 365)])
    first_channel = SelectField("Send by", choices=MEDIUM_CHOICES)
    second_channel = SelectField("If that is not possible, then by",
                                 choices=[SelectChoice("", "(nothing else)")] + MEDIUM_CHOICES, validators=[Optional()])
    reminder_hours = IntegerField("One reminder, if unanswered, after (hours; empty: none)",
                                  validators=[Optional(), NumberRange(min=1, max=24 * 30)])
    link_ttl_days = IntegerField("Link works for (days; empty: the service default)",
                                 validators=[Optional(), NumberRange(min=1, max=90)])
    fatigue_days = IntegerField("Ask a patient at most once per (days; empty: the service default)",
                                validators=[Optional(), NumberRange(min=1, max=365)])
    window_start = StringField("Send no earlier than (HH:MM; empty: the service's hours)", validators=HHMM,
                               render_kw={"type": "time"})
    window_end = StringField("Send no later than (HH:MM)", validators=HHMM, render_kw={"type": "time"})
    exclude_codes = TextAreaField("Never survey events with these codes (location, department, appointment "
                                  "or service type; one per line)", validators=[Optional(), Length(max=4000)])
    hcahps = SelectField("For HCAHPS-sampled inpatient discharges",
                         choices=[SelectChoice(h, HCAHPS_LABELS[h]) for h in HCAHPS_HOLDS])
    active = BooleanField("Rule is on", default=True)


class TrialForm(FlaskForm):
    occurred_at = DateTimeLocalField("When the event happened (patient's local time)", format="%Y-%m-%dT%H:%M",
                                     validators=[DataRequired()])
    timezone = StringField("Patient's time zone", validators=[Optional(), Length(max=64)])
    phone = TelField("Mobile number (E.164, e.g. +15555550123)", validators=[Optional(), Length(max=20)])
    email = EmailField("Email", validators=[Optional(), Length(max=254)])
    consent_sms = BooleanField("Consents to texts", default=True)
    consent_email = BooleanField("Consents to email", default=True)
    locale = StringField("Language", default="en", validators=[DataRequired(), Length(max=20)])
    codes = StringField("Codes the event carries (comma separated)", validators=[Optional(), Length(max=400)])


class ImportForm(FlaskForm):
    archive = FileField("Library archive (.zip of journey folders)",
                        validators=[FileRequired(), FileAllowed(["zip"], "a .zip file")])


def event_choices() -> list[tuple[str, str]]:
    """(event type, label) pairs for the journey page's rule table."""
    return [(e, EVENT_LABELS[e]) for e in EVENT_TYPES]
