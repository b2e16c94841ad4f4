"""The filters every report takes (period, stage, touchpoint, channel, locale, event source),
read the same way from the API's query string, the dashboard's form and the command line."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

from ..channels.base import MEDIA
from ..journeys.models import Journey

DEFAULT_DAYS = 90
MAX_DAYS = 3660
NAMES = ("from", "to", "stage", "touchpoint", "channel", "locale", "source")
# The filters only the detailed rollups can answer: each keeps a share of a touchpoint's patients.
DETAILED = ("channel", "locale", "source")


@dataclass(frozen=True)
class Filters:
    start: date  # inclusive, by the day of the journey moment (UTC)
    end: date  # inclusive
    stage: str | None = None
    touchpoint: str | None = None
    channel: str | None = None
    locale: str | None = None
    source: str | None = None

    @property
    def detailed(self) -> bool:
        """Whether a filter needs the detailed rollups (channel, language, source)."""
        return any(getattr(self, name) for name in DETAILED)

    @property
    def narrowed(self) -> bool:
        """Whether a filter leaves out part of a stage's patients (the touchpoint, or a detailed one)."""
        return self.detailed or bool(self.touchpoint)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> "Filters":
        """The same filters over the period of the same length just before."""
        return replace(self, start=self.start - timedelta(days=self.days), end=self.start - timedelta(days=1))

    def selection(self) -> dict[str, str]:
        """The filters other than the period, as query parameters."""
        return {k: v for k, v in self.as_query().items() if k not in ("from", "to")}

    def as_query(self) -> dict[str, str]:
        """The filters as query parameters (what parse reads back)."""
        values = {"from": self.start.isoformat(), "to": self.end.isoformat(), "stage": self.stage,
                  "touchpoint": self.touchpoint, "channel": self.channel, "locale": self.locale,
                  "source": self.source}
        return {k: v for k, v in values.items() if v}


class FilterError(ValueError):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


EARLIEST, LATEST = date(1900, 1, 1), date(9000, 12, 31)


def parse_filters(args, journey: Journey, today: date, default_days: int = DEFAULT_DAYS) -> Filters:
    """Filters from a mapping of strings (blank means not given); FilterError names each bad one.
    Without dates, the period is the `default_days` days up to today."""
    errors: dict[str, str] = {}
    raw = {name: (args.get(name) or "").strip() or None for name in NAMES}
    for name, value in raw.items():
        if value is not None and "\x00" in value:  # PostgreSQL refuses NUL in text outright
            errors[name], raw[name] = "must not contain a NUL character", None
    bounds = {}
    for name in ("from", "to"):
        try:
            bounds[name] = date.fromisoformat(raw[name]) if raw[name] else None
        except ValueError:
            errors[name] = "must be a date, YYYY-MM-DD"
            continue
        # Far from the calendar's ends, so that the period before, the default period and the
        # weeks and months around it are dates too.
        if bounds[name] is not None and not EARLIEST <= bounds[name] <= LATEST:
            errors[name] = f"must be between {EARLIEST} and {LATEST}"
            bounds[name] = None
    end = bounds.get("to") or (today if "to" not in errors else None)
    start = bounds.get("from") or (end - timedelta(days=default_days - 1) if end and "from" not in errors else None)
    if start and end:
        if start > end:
            errors["from"] = "must not be after 'to'"
        elif (end - start).days >= MAX_DAYS:
            errors["from"] = f"a period is at most {MAX_DAYS} days"
    stage = journey.stage(raw["stage"]) if raw["stage"] else None
    if raw["stage"] and stage is None:
        errors["stage"] = f"journey {journey.slug!r} has no stage {raw['stage']!r}"
    if raw["touchpoint"]:
        stages = [stage] if stage else journey.stages
        if not any(s.touchpoint(raw["touchpoint"]) for s in stages):
            errors["touchpoint"] = f"no touchpoint {raw['touchpoint']!r} in " + (
                f"stage {stage.slug!r}" if stage else f"journey {journey.slug!r}")
    if raw["channel"] and raw["channel"] not in MEDIA:
        errors["channel"] = f"must be one of {', '.join(MEDIA)}"
    for name in ("locale", "source"):
        if raw[name] and len(raw[name]) > 80:
            errors[name] = "at most 80 characters"
    if errors:
        raise FilterError(errors)
    return Filters(start=start, end=end, **{k: raw[k] for k in NAMES[2:]})
