"""The JSON event contract, validated with pydantic; errors come back keyed by field path."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, StrictBool, TypeAdapter,
                      ValidationError, field_validator)

MAX_BATCH = 1000
Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,79}$")]


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: Annotated[str, Field(min_length=1, max_length=128)]
    first_name: Annotated[str, Field(max_length=100)] | None = None
    phone: str | None = None
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

    external_id: Annotated[str, Field(min_length=1, max_length=128)]
    type: Literal["booking", "discharge", "follow_up"]
    occurred_at: AwareDatetime
    journey: Slug | None = None
    touchpoint: Slug | None = None
    patient: PatientIn

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _iso_only(cls, value):
        # pydantic would read a bare number as a Unix time; the contract is ISO 8601 with an offset.
        if not isinstance(value, (str, datetime)):
            raise ValueError("must be an ISO 8601 date-time with an offset, e.g. 2026-03-01T14:30:00+01:00")
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
