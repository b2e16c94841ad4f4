"""Dashboard forms. The filters are a GET form (no CSRF: they change nothing) read by
rollups.filters.parse_filters, so the pages, the API and the CLI take the same filters."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, Form, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from ..channels.base import MEDIA
from ..journeys.models import Journey

ANY = SelectChoice("", "Any")
MEDIUM_LABELS = {"sms": "Text message", "email": "Email"}


class FilterForm(Form):
    journey = SelectField("Journey")
    # Named as in the API's query string, so a dashboard URL and a feed URL read alike.
    date_from = DateField("From", name="from", validators=[Optional()])
    date_to = DateField("To", name="to", validators=[Optional()])
    stage = SelectField("Stage", validators=[Optional()])
    touchpoint = SelectField("Touchpoint", validators=[Optional()])
    channel = SelectField("Channel", choices=[ANY] + [SelectChoice(m, MEDIUM_LABELS[m]) for m in MEDIA])
    locale = SelectField("Language", validators=[Optional()])
    source = StringField("Event source", validators=[Optional(), Length(max=80)])


def filter_form(args, journeys: list[Journey], journey: Journey, sources: list[str]) -> FilterForm:
    """The filter bar for the chosen journey (its stages, touchpoints and languages)."""
    form = FilterForm(args)
    form.journey.choices = [SelectChoice(j.slug, j.name) for j in journeys]
    form.journey.data = journey.slug
    form.stage.choices = [ANY] + [SelectChoice(s.slug, s.name) for s in journey.stages]
    form.touchpoint.choices = [ANY] + [SelectChoice(tp.slug, f"{tp.name} ({s.name})")
                                       for s in journey.stages for tp in s.touchpoints]
    form.locale.choices = [ANY] + [SelectChoice(loc, loc) for loc in journey.locales]
    form.source.render_kw = {"list": "sources"}
    form.sources = sources
    return form


class AlertActionForm(FlaskForm):
    note = TextAreaField("What was done", validators=[Optional(), Length(max=2000)])


class AlertRuleForm(FlaskForm):
    owner_email = StringField("Stage owner's email (told of each alert)", validators=[Optional(), Length(max=254)])
    low_satisfaction = BooleanField("A satisfaction answer at the bottom of its scale")
    high_friction = BooleanField("A friction answer at the top of its scale")
    terms = StringField("Comments containing any of these words or phrases (comma-separated)",
                        validators=[Optional(), Length(max=4000)])
    active = BooleanField("On")
