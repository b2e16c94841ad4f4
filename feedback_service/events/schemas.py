"""The JSON event contract, validated with pydantic; errors come back keyed by field path."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (AwareDatetime, BaseModel, BeforeValidator, ConfigDict, EmailStr, Field, StrictBool,
                      StringConstraints, TypeAdapter, ValidationError, field_validator)

MAX_BATCH = 1000
MAX_CLOCK_SKEW = timedelta(hours=1)
_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _no_nul(value):
    # PostgreSQL text cannot hold NUL: refuse it as a client mistake, not a server error.
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _text(**lengths):
    """A string without NUL; its lengths as string constraints, so that an error reads "String
    should have at least 1 character" (a Field() around the validator would count "items")."""
    return Annotated[str, StringConstraints(**lengths), BeforeValidator(_no_nul)]


Text = _text()
Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,79}$")]


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: _text(min_length=1, max_length=128)
    first_name: _text(max_length=100) | None = None
    phone: Text | None = None
    email: EmailStr | None = None
    locale: Annotated[str, Field(max_length=20, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")] | None = None
    timezone: str | None = None
    consent_sms: StrictBool = False
    consent_email: StrictBool = False

    @field_validator("phone")
    @classmethod
    def _e164(cls, value):
        if value is None:
            return None
        try:
            number = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException:
            raise ValueError("must be an E.164 number such as +15551234567") from None
        if not value.startswith("+") or not phonenumbers.is_valid_number(number):
            raise ValueError("must be a valid E.164 number such as +15551234567")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value):
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a folder, or too long
            raise ValueError("must be an IANA time zone such as America/Chicago") from None
        return value


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    external_id: _text(min_length=1, max_length=128)
    type: Literal["booking", "discharge", "follow_up"]
    occurred_at: AwareDatetime
    journey: Slug | None = None
    touchpoint: Slug | None = None
    patient: PatientIn

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _iso_only(cls, value):
        # pydantic would read a number, or a string of digits, as a Unix time; the contract is ISO 8601.
        if isinstance(value, str) and _ISO_DATE_TIME.match(value) or isinstance(value, datetime):
            return value
        raise ValueError("must be an ISO 8601 date-time with an offset, e.g. 2026-03-01T14:30:00+01:00")

    @field_validator("occurred_at")
    @classmethod
    def _plausible(cls, value: datetime):
        # A journey moment is in the past (a little clock skew aside), and not from another century.
        if value > datetime.now(timezone.utc) + MAX_CLOCK_SKEW:
            raise ValueError("is in the future: events report moments that have happened")
        if value.year < 2000:
            raise ValueError("is before the year 2000")
        return value


_batch = TypeAdapter(list[EventIn])


def _path(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def parse_events(body) -> tuple[list[EventIn], bool, dict[str, str]]:
    """(events, was_a_list, errors by field path) from a decoded JSON body."""
    is_list = isinstance(body, list)
    if is_list and not body:
        return [], True, {"body": "the list is empty"}
    if is_list and len(body) > MAX_BATCH:
        return [], True, {"body": f"at most {MAX_BATCH} events per request"}
    if not is_list and not isinstance(body, dict):
        return [], False, {"body": "must be an event object or a list of events"}
    try:
        events = _batch.validate_python(body if is_list else [body])
    except ValidationError as exc:
        errors = {}
        for err in exc.errors():
            loc = err["loc"] if is_list else err["loc"][1:]
            msg = err["msg"].removeprefix("Value error, ")
            errors.setdefault(_path(loc), msg)
        return [], is_list, errors
    return events, is_list, {}
