"""Quiet hours and healthcare text limits (feedback_service/scheduling/rules.py)."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from feedback_service.scheduling.rules import next_send_time, within_sms_limits

NY = "America/New_York"
START, END = time(8, 0), time(20, 0)
UTC = timezone.utc
H = timedelta(hours=1)
D = timedelta(days=1)


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def local(tz: str, *parts, fold: int = 0) -> datetime:
    return datetime(*parts, tzinfo=ZoneInfo(tz), fold=fold)


# --- next_send_time ----------------------------------------------------------------------------------


@pytest.mark.parametrize("when", [
    local(NY, 2026, 6, 15, 8, 0),                   # the start is inclusive
    local(NY, 2026, 6, 15, 13, 30),
    local(NY, 2026, 6, 15, 19, 59, 59, 999999),     # last instant before the end
    utc(2026, 6, 15, 14, 0),                        # 10:00 EDT, given in UTC
], ids=["at-start", "midday", "just-before-end", "utc-input"])
def test_inside_window_is_unchanged(when):
    assert next_send_time(when, NY, START, END) == when


@pytest.mark.parametrize(("when", "expected"), [
    (local(NY, 2026, 6, 15, 7, 59), utc(2026, 6, 15, 12, 0)),      # before start: same day
    (local(NY, 2026, 6, 15, 0, 30), utc(2026, 6, 15, 12, 0)),      # after midnight: same day
    (local(NY, 2026, 6, 15, 20, 0), utc(2026, 6, 16, 12, 0)),      # end is exclusive: next day
    (local(NY, 2026, 6, 15, 23, 45), utc(2026, 6, 16, 12, 0)),     # after end: next day
    (utc(2026, 6, 16, 3, 0), utc(2026, 6, 16, 12, 0)),             # 23:00 EDT on the 15th, as UTC
    (local(NY, 2026, 1, 15, 6, 0), utc(2026, 1, 15, 13, 0)),       # winter: 08:00 EST
    (local(NY, 2026, 12, 31, 21, 0), utc(2027, 1, 1, 13, 0)),      # across a year end
], ids=["before-start", "after-midnight", "at-end", "after-end", "utc-input-late", "winter", "year-end"])
def test_outside_window_moves_to_next_start(when, expected):
    result = next_send_time(when, NY, START, END)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


@pytest.mark.parametrize(("when", "expected"), [
    # 2026-03-08: clocks go from 02:00 EST to 03:00 EDT; 08:00 that morning is 12:00 UTC.
    (local(NY, 2026, 3, 7, 22, 0), utc(2026, 3, 8, 12, 0)),        # evening before, still EST
    (utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 12, 0)),              # 01:30 EST, before the jump
    (utc(2026, 3, 8, 7, 30), utc(2026, 3, 8, 12, 0)),              # 03:30 EDT, after the jump
    (local(NY, 2026, 3, 8, 20, 0), utc(2026, 3, 9, 12, 0)),
    # 2026-11-01: clocks go from 02:00 EDT back to 01:00 EST; 08:00 that morning is 13:00 UTC.
    (local(NY, 2026, 10, 31, 21, 0), utc(2026, 11, 1, 13, 0)),     # evening before, still EDT
    (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 13, 0)),            # first 01:30 (EDT)
    (utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 13, 0)),            # second 01:30 (EST)
    (local(NY, 2026, 10, 31, 20, 0), utc(2026, 11, 1, 13, 0)),
], ids=["spring-eve", "spring-before-jump", "spring-after-jump", "spring-evening",
        "fall-eve", "fall-first-0130", "fall-second-0130", "fall-eve-at-end"])
def test_dst_transition_day_gives_eight_local(when, expected):
    result = next_send_time(when, NY, START, END)
    assert result == expected
    assert result.astimezone(ZoneInfo(NY)).time() == START


@pytest.mark.parametrize(("tz", "when", "expected"), [
    ("Europe/London", utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 7, 0)),   # BST starts: 08:00 BST
    ("Asia/Kolkata", utc(2026, 6, 15, 0, 0), utc(2026, 6, 15, 2, 30)),    # 05:30 IST -> 08:00 IST
    ("Pacific/Auckland", utc(2026, 6, 15, 10, 0), utc(2026, 6, 15, 20, 0)),  # 22:00 NZST -> 08:00 next day
])
def test_other_time_zones(tz, when, expected):
    assert next_send_time(when, tz, START, END) == expected


@pytest.mark.parametrize("day", [datetime(2026, 3, 7), datetime(2026, 10, 31)], ids=["spring", "fall"])
def test_result_is_the_first_window_instant_around_dst(day):
    """Every 15 minutes over three days around a change: the result is never earlier than `when`,
    always inside the window, and no earlier window instant was skipped."""
    tz = ZoneInfo(NY)
    start_utc = day.replace(tzinfo=tz).astimezone(UTC)
    for step in range(3 * 24 * 4):
        when = start_utc + timedelta(minutes=15 * step)
        result = next_send_time(when, NY, START, END)
        result_local = result.astimezone(tz)
        assert result >= when
        assert START <= result_local.time() < END
        if result != when:
            assert result_local.time() == START
            # Walking back from the result to `when`, no instant was inside the window.
            probe = result - timedelta(minutes=15)
            while probe >= when:
                assert not START <= probe.astimezone(tz).time() < END, (when, result, probe)
                probe -= timedelta(minutes=15)


# --- within_sms_limits ----------------------------------------------------------------------------------

NOW = utc(2026, 6, 15, 15, 0)


def check(others, per_day=1, per_week=3, send_at=NOW):
    return within_sms_limits(send_at, [NOW + o for o in others], per_day, per_week)


@pytest.mark.parametrize(("others", "reason"), [
    ([], None),
    ([-30 * D, -20 * D, -10 * D, -8 * D], None),      # old texts fall outside the week
    ([-23 * H], "sms-daily-limit"),
    ([-24 * H + timedelta(seconds=1)], "sms-daily-limit"),
    ([-24 * H], None),                                  # exactly a day apart is allowed
    ([+23 * H], "sms-daily-limit"),                     # a text already scheduled after
    ([+24 * H - timedelta(seconds=1)], "sms-daily-limit"),
    ([+24 * H], None),
    ([timedelta(0)], "sms-daily-limit"),                # same instant
], ids=["none", "old", "23h-before", "just-under-day-before", "24h-before", "23h-after",
        "just-under-day-after", "24h-after", "same-instant"])
def test_daily_limit(others, reason):
    assert check(others) == reason


@pytest.mark.parametrize(("others", "reason"), [
    ([-6 * D, -4 * D, -2 * D], "sms-weekly-limit"),
    ([-7 * D, -4 * D, -2 * D], None),                   # the first is exactly a week before
    ([-7 * D + H, -4 * D, -2 * D], "sms-weekly-limit"),
    ([-4 * D, -2 * D], None),                           # three in the week is the limit, not over it
    ([+2 * D, +4 * D, +6 * D], "sms-weekly-limit"),     # texts after the new one
    ([+2 * D, +4 * D, +7 * D], None),
    ([-3 * D, +2 * D, +3 * D], "sms-weekly-limit"),     # before and after
    ([-4 * D, -2 * D, +2 * D, +4 * D], "sms-weekly-limit"),
    ([-6 * D, -3 * D, +3 * D, +6 * D], None),           # every rolling week holds exactly three
], ids=["three-before", "first-a-week-before", "first-inside-week", "two-before", "three-after",
        "last-a-week-after", "before-and-after", "two-either-side", "rolling-weeks-ok"])
def test_weekly_limit(others, reason):
    assert check(others) == reason


def test_order_of_other_texts_does_not_matter():
    others = [+4 * D, -2 * D, +2 * D, -4 * D]
    assert check(others) == check(sorted(others)) == "sms-weekly-limit"


def test_daily_limit_is_reported_before_weekly():
    assert check([-1 * H, -2 * D, -4 * D]) == "sms-daily-limit"


@pytest.mark.parametrize(("others", "per_day", "per_week", "reason"), [
    ([-1 * H], 2, 3, None),
    ([-2 * H, -1 * H], 2, 3, "sms-daily-limit"),
    ([-5 * D, -3 * D, -1 * D], 1, 4, None),
    ([-5 * D, -3 * D, -1 * D], 1, 2, "sms-weekly-limit"),
])
def test_configured_limits_are_honoured(others, per_day, per_week, reason):
    assert check(others, per_day=per_day, per_week=per_week) == reason


def test_existing_texts_already_over_the_limit_elsewhere_do_not_block():
    """Two texts an hour apart a fortnight ago (legacy data) say nothing about today."""
    assert check([-14 * D, -14 * D + H]) is None
