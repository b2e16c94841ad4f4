"""Sending rules as plain functions: quiet hours, survey fatigue, healthcare text limits."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class SendPolicy:
    """The settings every scheduling decision reads; built once from the app config."""

    window_start: time
    window_end: time
    default_timezone: str
    fatigue_days: int
    sms_per_day: int
    sms_per_week: int
    link_ttl_days: int
    max_send_delay: timedelta
    # A discharge survey goes no sooner than this after discharge, and never later than this.
    discharge_earliest: timedelta = timedelta(hours=48)
    discharge_latest: timedelta = timedelta(days=42)

    def too_late(self, send_at: datetime, now: datetime) -> bool:
        """A survey this long after its moment would not be answered well: it is not sent."""
        return send_at < now - self.max_send_delay

    def __post_init__(self):
        if self.sms_per_day < 1 or self.sms_per_week < self.sms_per_day:
            # To stop texting, take "sms" out of the trigger rules' channels.
            raise ValueError("text limits: at least 1 a day, and no fewer a week than a day")
        if self.window_start >= self.window_end:
            raise ValueError("send window: the start must come before the end")
        if self.discharge_earliest >= self.discharge_latest:
            raise ValueError("discharge contact window: the earliest must come before the latest")

    @classmethod
    def from_config(cls, config) -> "SendPolicy":
        return cls(
            window_start=time.fromisoformat(config["FEEDBACK_SEND_WINDOW_START"]),
            window_end=time.fromisoformat(config["FEEDBACK_SEND_WINDOW_END"]),
            default_timezone=config["FEEDBACK_DEFAULT_TIMEZONE"],
            fatigue_days=config["FEEDBACK_FATIGUE_DAYS"],
            sms_per_day=config["FEEDBACK_SMS_MAX_PER_DAY"],
            sms_per_week=config["FEEDBACK_SMS_MAX_PER_WEEK"],
            link_ttl_days=config["FEEDBACK_LINK_TTL_DAYS"],
            max_send_delay=timedelta(days=config["FEEDBACK_MAX_SEND_DELAY_DAYS"]),
            discharge_earliest=timedelta(hours=config["FEEDBACK_DISCHARGE_CONTACT_MIN_HOURS"]),
            discharge_latest=timedelta(days=config["FEEDBACK_DISCHARGE_CONTACT_MAX_DAYS"]),
        )


def next_send_time(when: datetime, tz_name: str, start: time, end: time) -> datetime:
    """The earliest moment at or after `when` that falls inside [start, end) local time."""
    tz = ZoneInfo(tz_name)
    local = when.astimezone(tz)
    if start <= local.time() < end:
        return when
    day = local.date() if local.time() < start else local.date() + DAY
    # Built from wall-clock parts so a DST change between now and then is honoured.
    morning = datetime.combine(day, start, tzinfo=tz)
    return morning.astimezone(timezone.utc)


def next_sms_slot(earliest: datetime, texts: list[datetime], per_day: int, per_week: int) -> datetime:
    """The first moment at or after `earliest` when one more text keeps within the limits."""
    # The answer is `earliest` or the moment some earlier text leaves a day or week window.
    candidates = {earliest} | {t + span for t in texts for span in (DAY, WEEK) if t + span > earliest}
    for moment in sorted(candidates):
        if within_sms_limits(moment, texts, per_day, per_week) is None:
            return moment
    raise ValueError("the text limits allow no text at all")


def within_sms_limits(send_at: datetime, others: list[datetime], per_day: int, per_week: int) -> str | None:
    """None if one more text at send_at keeps every rolling day and week within the limits,
    else the reason ("sms-daily-limit" or "sms-weekly-limit")."""
    times = sorted([*others, send_at])
    for limit, span, reason in ((per_day, DAY, "sms-daily-limit"), (per_week, WEEK, "sms-weekly-limit")):
        # Any window of length `span` holding the new text starts at one of the texts before it.
        for start in times:
            if start > send_at:
                break
            if send_at - start >= span:
                continue
            count = sum(1 for t in times if start <= t < start + span)
            if count > limit:
                return reason
    return None
