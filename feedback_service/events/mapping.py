"""The mapping file: which hospital codes (locations, departments, appointment and service types)
belong to which journey and touchpoint, which visits are follow-ups, which service lines are
never surveyed, and which discharge dispositions exclude a patient. Loaded once, checked whole."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import phonenumbers
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..journeys.models import EVENT_TYPES
from .inbound import Codes

CODE_KINDS = ("location", "department", "appointment_type", "service_type")
# Exclusion reasons for discharge dispositions, as the events record them.
DISPOSITION_REASONS = {"deceased": "deceased", "hospice": "discharged-to-hospice",
                       "other-facility": "discharged-to-facility", "law-enforcement": "discharged-to-law-enforcement"}

CodeList = list[Annotated[str, Field(min_length=1, max_length=128)]]
Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,79}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Match(_Strict):
    location: CodeList = []
    department: CodeList = []
    appointment_type: CodeList = []
    service_type: CodeList = []

    @model_validator(mode="after")
    def _something(self):
        # An empty match would take every message, unmapped ones included: say so if meant.
        if not any(getattr(self, k) for k in CODE_KINDS):
            raise ValueError(f"name at least one code ({', '.join(CODE_KINDS)})")
        return self


class RouteDoc(_Strict):
    name: str = ""
    match: Match
    journey: Slug
    follow_up: bool = False
    touchpoints: dict[Literal[EVENT_TYPES], Slug] = {}


class Consent(_Strict):
    sms: bool = False
    email: bool = False


class MappingDoc(_Strict):
    region: str = "US"
    consent: Consent = Consent()
    sensitive_service_lines: CodeList = []
    dispositions: dict[Literal[tuple(DISPOSITION_REASONS)], CodeList] = {}
    routes: list[RouteDoc] = []

    @field_validator("region")
    @classmethod
    def _region(cls, value):
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("must be an ISO 3166 region code such as US")
        return value


class MappingError(ValueError):
    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Route:
    journey: str
    follow_up: bool
    touchpoints: dict[str, str]
    name: str


class Mapping:
    def __init__(self, doc: MappingDoc):
        self.region = doc.region
        self.consent = doc.consent
        self._sensitive = {c.casefold() for c in doc.sensitive_service_lines}
        self._dispositions = {code.casefold(): DISPOSITION_REASONS[group]
                              for group, codes in doc.dispositions.items() for code in codes}
        self._routes = [(r, {k: {c.casefold() for c in getattr(r.match, k)} for k in CODE_KINDS
                             if getattr(r.match, k)}) for r in doc.routes]

    @classmethod
    def load(cls, path: Path) -> "Mapping":
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise MappingError([f"{path}: cannot read: {exc.strerror}"]) from None
        except yaml.YAMLError as exc:
            raise MappingError([f"{path}: not valid YAML: {exc}"]) from None
        try:
            return cls(MappingDoc.model_validate(raw))
        except ValidationError as exc:
            raise MappingError([f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                for e in exc.errors()]) from None

    def route(self, codes: Codes) -> Route | None:
        """The first route all of whose code lists share a code with the message's."""
        for doc, wanted in self._routes:
            if all(wanted[k] & {c.casefold() for c in getattr(codes, k)} for k in wanted):
                return Route(doc.journey, doc.follow_up, dict(doc.touchpoints), doc.name)
        return None

    def sensitive(self, codes: Codes) -> bool:
        return any(c.casefold() in self._sensitive for k in CODE_KINDS for c in getattr(codes, k))

    def disposition_reason(self, code: str | None) -> str | None:
        return self._dispositions.get(code.casefold()) if code else None

    def journeys(self) -> set[str]:
        return {doc.journey for doc, _ in self._routes}
