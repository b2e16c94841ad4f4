"""Staff forms (Flask-WTF: every one carries a CSRF token)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Email, Length, Optional

from .models import ROLES
from .services import MIN_PASSWORD_LENGTH

ROLE_CHOICES = [SelectChoice(r, r.capitalize()) for r in ROLES]


def show_errors(form, errors: dict[str, str], names: dict[str, str] | None = None) -> None:
    """Put a service's field errors on the form's fields: by name, renamed by `names`, else on the
    first field."""
    for name, message in errors.items():
        name = (names or {}).get(name, name)
        field = form[name] if name in form else next(f for f in form if f.name != "csrf_token")
        field.errors = [*field.errors, message]


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)],
                       render_kw={"autocomplete": "username"})
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)],
                             render_kw={"autocomplete": "current-password"})


class NewUserForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])
    role = SelectField("Role", choices=ROLE_CHOICES)
    password = PasswordField(f"Initial password (at least {MIN_PASSWORD_LENGTH} characters)",
                             validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=200)],
                             render_kw={"autocomplete": "new-password"})


class EditUserForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)
    active = BooleanField("Account active")
    password = PasswordField("New password (leave empty to keep)",
                             validators=[Optional(), Length(min=MIN_PASSWORD_LENGTH, max=200)],
                             render_kw={"autocomplete": "new-password"})


class NewApiKeyForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=80)])
    source = StringField("Source system (default: the name)", validators=[Optional(), Length(max=80)])
    scope_events = BooleanField("May send events in", default=True)
    scope_scores = BooleanField("May read scores and the journey map out")

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        if not (self.scope_events.data or self.scope_scores.data):
            self.scope_events.errors = [*self.scope_events.errors, "choose at least one"]
            return False
        return valid

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(s for s, on in (("events", self.scope_events.data), ("scores", self.scope_scores.data)) if on)


class ConfirmForm(FlaskForm):
    """A bare POST button (revoke, sign out): the CSRF token is the whole form."""
