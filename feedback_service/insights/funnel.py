"""The response funnel per stage: journey moments, invited, skipped (by reason), sent, delivered,
opened, answered. Each moment counts once, by the last invitation made for it (a failed text's
email successor stands for it). Counts of 1 to min_n - 1 are hidden, and so is any step that
would let one be worked out from the step before it."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, time, timedelta, timezone

from sqlalchemy import and_, func, select

from ..events.models import Event
from ..extensions import db
from ..journeys.models import Journey
from ..rollups.filters import Filters
from ..rollups.scoring import complementary_suppression
from ..scheduling.models import Invitation

STEPS = ("events", "invited", "sent", "delivered", "opened", "answered")
# (larger, smaller) pairs where every moment counted in the smaller step is counted in the larger,
# closed under transitivity: the difference of any two such shown steps is a count too. (Delivered
# and opened do not nest: a text opened from the link may have no delivery report.)
CONTAINS = (("events", "invited"), ("events", "sent"), ("events", "delivered"), ("events", "opened"),
            ("events", "answered"), ("invited", "sent"), ("invited", "delivered"), ("invited", "opened"),
            ("invited", "answered"), ("sent", "delivered"), ("sent", "opened"), ("sent", "answered"),
            ("delivered", "answered"), ("opened", "answered"))
# Why a moment got no survey: the invitation's status when it has no reason of its own.
STATUS_REASONS = {"expired": "expired-before-sending", "cancelled": "cancelled-by-hospital"}


def _moments(f: Filters):
    start = datetime.combine(f.start, time.min, tzinfo=timezone.utc)
    return Event.occurred_at >= start, Event.occurred_at < start + timedelta(days=f.days)


def _counts(journey: Journey, f: Filters) -> dict[int, dict]:
    """Per stage id: the raw step counts and skip reasons."""
    tps = {tp.id: s.id for s in journey.stages for tp in s.touchpoints}
    wanted = [tp.id for s in journey.stages for tp in s.touchpoints
              if (not f.stage or s.slug == f.stage) and (not f.touchpoint or tp.slug == f.touchpoint)]
    last = (select(func.max(Invitation.id)).join(Event, Event.id == Invitation.event_id)
            .where(Invitation.journey_id == journey.id, *_moments(f)).group_by(Invitation.event_id))
    conds = [Invitation.id.in_(last), Invitation.touchpoint_id.in_(wanted)]
    for name in ("channel", "locale"):
        if getattr(f, name):
            conds.append(getattr(Invitation, name) == getattr(f, name))
    if f.source:
        conds.append(Event.source == f.source)
    sent = and_(Invitation.sent_at.is_not(None), Invitation.status != "failed")
    answered = Invitation.status == "answered"
    delivered = sent & (answered | (Invitation.delivery_status == "delivered"))
    opened = sent & (answered | Invitation.opened_at.is_not(None) | Invitation.email_opened_at.is_not(None))
    rows = db.session.execute(
        select(Invitation.touchpoint_id, Invitation.status, Invitation.skip_reason, sent, delivered, opened,
               func.count())
        .join(Event, Event.id == Invitation.event_id).where(*conds)
        .group_by(Invitation.touchpoint_id, Invitation.status, Invitation.skip_reason, sent, delivered, opened))
    out: dict[int, dict] = defaultdict(lambda: {"steps": dict.fromkeys(STEPS, 0), "skipped": defaultdict(int)})
    for tp, status, reason, was_sent, was_delivered, was_opened, n in rows:
        cell = out[tps[tp]]
        cell["steps"]["events"] += n
        if status in ("skipped", "cancelled") or (status == "expired" and not was_sent):
            cell["skipped"][reason or STATUS_REASONS.get(status, status)] += n
            continue
        cell["steps"]["invited"] += n
        for step, flag in (("sent", was_sent), ("delivered", was_delivered), ("opened", was_opened),
                           ("answered", status == "answered")):
            cell["steps"][step] += n if flag else 0
    if not (f.channel or f.locale):
        # Moments no invitation was made for (an exclusion, no rule) have no channel or locale.
        skipped = db.session.execute(
            select(Event.touchpoint_id, Event.skip_reason, func.count())
            .where(Event.journey_id == journey.id, Event.touchpoint_id.in_(wanted), Event.skip_reason.is_not(None),
                   ~Event.invitations.any(), *_moments(f), *([Event.source == f.source] if f.source else []))
            .group_by(Event.touchpoint_id, Event.skip_reason))
        for tp, reason, n in skipped:
            cell = out[tps[tp]]
            cell["steps"]["events"] += n
            cell["skipped"][reason] += n
    return out


def suppress_steps(steps: dict[str, int], min_n: int) -> dict[str, int | None]:
    """Hide counts of 1 to min_n - 1, then, until nothing changes, the smaller step of any two
    shown nested steps whose difference is such a count."""
    shown: dict[str, int | None] = {k: (None if 0 < v < min_n else v) for k, v in steps.items()}
    changed = True
    while changed:
        changed = False
        for larger, smaller in CONTAINS:
            a, b = shown[larger], shown[smaller]
            if a is not None and b is not None and 0 < a - b < min_n:
                shown[smaller], changed = None, True
    return shown


def funnel(journey: Journey, f: Filters, min_n: int) -> list[dict]:
    """Per stage in journey order: the steps (None: hidden) and the skip reasons, biggest first
    (reasons too small to show are summed as "other reasons" when that sum may be shown)."""
    counts = _counts(journey, f)
    out = []
    for stage in journey.stages:
        if f.stage and stage.slug != f.stage:
            continue
        cell = counts.get(stage.id, {"steps": dict.fromkeys(STEPS, 0), "skipped": {}})
        steps = suppress_steps(cell["steps"], min_n)
        reasons = sorted(cell["skipped"].items(), key=lambda kv: (-kv[1], kv[0]))
        skipped = None if steps["events"] is None or steps["invited"] is None else steps["events"] - steps["invited"]
        out.append({"slug": stage.slug, "name": stage.name, "steps": steps, "skipped": skipped,
                    "skip_reasons": _shown_reasons(reasons, min_n) if skipped is not None else
                    # The reasons add up to events - invited: any of them would give a hidden step away.
                    [{"reason": "reasons suppressed", "count": None}] if reasons else []})
    return out


def _shown_reasons(reasons: list[tuple[str, int]], min_n: int) -> list[dict]:
    """The reasons, with enough hidden that none small can be worked out from the shown total;
    the hidden ones are summed as "other reasons" (itself hidden when small)."""
    hidden = complementary_suppression([[n for _, n in reasons]], min_n,
                                       {i for i, (_, n) in enumerate(reasons) if n < min_n}) if reasons else set()
    shown = [{"reason": r, "count": n} for i, (r, n) in enumerate(reasons) if i not in hidden]
    other = sum(reasons[i][1] for i in hidden)
    if other:
        shown.append({"reason": "other reasons", "count": other if other >= min_n else None})
    return shown
