"""Closing the loop: a bad moment raises an alert for the stage's owner, who acknowledges it and
resolves it with a note. Plain functions; the owner's email goes out through the channel
interface from a job (jobs/alerts.py), so a crash neither loses nor repeats it."""
from __future__ import annotations

import statistics
import unicodedata
from collections import defaultdict
from datetime import datetime, time, timedelta, timezone

from sqlalchemy import select, update

from ..errors import FieldErrors
from ..extensions import db
from ..journeys.models import Journey, Stage
from ..journeys.questions import TOP_BOX_SCORE
from ..rollups.filters import Filters
from ..rollups.scoring import BOTTOM_BOX_SCORE
from ..sqltypes import utcnow
from ..staff.services import is_email_address, normalise_email
from .models import Alert, AlertRule

MAX_TERMS, MAX_TERM_LENGTH = 50, 80
NOTE_LENGTH = 2000


class AlertError(FieldErrors):
    """An alert or rule change that cannot be made (fields name what is wrong)."""


def _fold(text: str) -> str:
    """Lower case without accents: "Esperé" matches the term "espere"."""
    return "".join(c for c in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(c))


def rule_for(stage: Stage) -> AlertRule | None:
    """The stage's own rule, else its journey's."""
    rules = db.session.scalars(select(AlertRule).where(AlertRule.journey_id == stage.journey_id,
                                                       (AlertRule.stage_id == stage.id) | AlertRule.stage_id.is_(None)))
    by_stage = {r.stage_id: r for r in rules}
    return by_stage.get(stage.id) or by_stage.get(None)


def reasons_for(rule: AlertRule, questions: dict[str, dict], answers) -> list[dict]:
    """What in one response's answers the rule alerts on."""
    reasons = []
    terms = [t for t in (rule.terms or []) if t.strip()]
    for a in answers:
        if rule.low_satisfaction and a.measure == "satisfaction" and a.score <= BOTTOM_BOX_SCORE:
            reasons.append({"kind": "low-satisfaction", "question": a.question_key, "value": a.value})
        elif rule.high_friction and a.measure == "friction" and a.score >= TOP_BOX_SCORE:
            reasons.append({"kind": "high-friction", "question": a.question_key, "value": a.value})
        elif terms and questions.get(a.question_key, {}).get("type") == "text":
            # Whole words or phrases, read alike on both sides: "pain" is no alarm in "painting",
            # and "didn't listen" matches "Didn't listen!".
            text = _words(a.value)
            matched = [t for t in terms if _words(t).strip() and _words(t) in text]
            if matched:
                reasons.append({"kind": "term", "question": a.question_key, "terms": matched})
    return reasons


def _words(text: str) -> str:
    """Lower case, no accents, words separated by single spaces and padded with one each side."""
    return " " + " ".join("".join(c if c.isalnum() else " " for c in _fold(text)).split()) + " "


def raise_alert(invitation, response) -> Alert | None:
    """An alert for a response (flushed, with its answers) if its stage's rule says so; added to
    the response's transaction."""
    rule = rule_for(invitation.stage)
    if rule is None or not rule.active:
        return None
    questions = invitation.question_set_version.questions_by_key
    reasons = reasons_for(rule, questions, response.answers)
    if not reasons:
        return None
    alert = Alert(response_id=response.id, journey_id=invitation.journey_id, stage_id=invitation.stage_id,
                  touchpoint_id=invitation.touchpoint_id, reasons=reasons, moment_at=invitation.event.occurred_at,
                  created_at=response.submitted_at, state="open", notify_status="pending")
    db.session.add(alert)
    return alert


def save_rule(journey: Journey, stage: Stage | None, *, low_satisfaction: bool, high_friction: bool,
              terms: list[str], active: bool, owner_email: str | None = None) -> AlertRule:
    """Create or change the journey's rule (stage None) or a stage's, and the stage's owner. Not committed."""
    errors = {}
    terms = list(dict.fromkeys(t.strip() for t in terms if t.strip()))
    if len(terms) > MAX_TERMS:
        errors["terms"] = f"at most {MAX_TERMS} terms"
    elif any(len(t) > MAX_TERM_LENGTH for t in terms):
        errors["terms"] = f"each term at most {MAX_TERM_LENGTH} characters"
    owner_email = normalise_email(owner_email) or None
    if owner_email and not is_email_address(owner_email):
        errors["owner_email"] = "must be an email address"
    if errors:
        raise AlertError(errors)
    rule = db.session.scalar(select(AlertRule).where(
        AlertRule.journey_id == journey.id,
        AlertRule.stage_id == stage.id if stage else AlertRule.stage_id.is_(None)))
    if rule is None:
        rule = AlertRule(journey_id=journey.id, stage_id=stage.id if stage else None)
        db.session.add(rule)
    rule.low_satisfaction, rule.high_friction, rule.terms, rule.active = low_satisfaction, high_friction, terms, active
    if stage is not None:
        stage.owner_email = owner_email
    return rule


def acknowledge(alert_id: int, who: str, now: datetime | None = None) -> Alert:
    """Open -> acknowledged. Not committed; AlertError if it is not open (someone else was quicker)."""
    now = now or utcnow()
    done = db.session.execute(update(Alert).where(Alert.id == alert_id, Alert.state == "open")
                              .values(state="acknowledged", acknowledged_at=now, acknowledged_by=who)).rowcount
    alert = db.session.get(Alert, alert_id)
    if not done:
        db.session.refresh(alert)
        raise AlertError({"state": f"already {alert.state}"})
    db.session.refresh(alert)
    return alert


def resolve(alert_id: int, who: str, note: str, now: datetime | None = None) -> Alert:
    """Open or acknowledged -> resolved, with a note of what was done (an open one is acknowledged
    by resolving it). Not committed."""
    now = now or utcnow()
    note = (note or "").strip()
    if not note:
        raise AlertError({"note": "say what was done"})
    if len(note) > NOTE_LENGTH:
        raise AlertError({"note": f"at most {NOTE_LENGTH} characters"})
    alert = db.session.get(Alert, alert_id)
    done = db.session.execute(
        update(Alert).where(Alert.id == alert_id, Alert.state.in_(("open", "acknowledged")))
        .values(state="resolved", resolved_at=now, resolved_by=who, note=note,
                acknowledged_at=db.func.coalesce(Alert.acknowledged_at, now),
                acknowledged_by=db.func.coalesce(Alert.acknowledged_by, who))).rowcount
    db.session.refresh(alert)
    if not done:
        raise AlertError({"state": f"already {alert.state}"})
    return alert


def alerts_query(journey: Journey, f: Filters, states: tuple[str, ...] = ("open", "acknowledged", "resolved")):
    """Alerts for moments in the period, under the stage and touchpoint filters, newest first."""
    start = datetime.combine(f.start, time.min, tzinfo=timezone.utc)
    query = select(Alert).where(Alert.journey_id == journey.id, Alert.state.in_(states), Alert.moment_at >= start,
                                Alert.moment_at < start + timedelta(days=f.days))
    if f.stage:
        query = query.where(Alert.stage_id == journey.stage(f.stage).id)
    if f.touchpoint:
        query = query.where(Alert.touchpoint_id.in_([tp.id for s in journey.stages for tp in s.touchpoints
                                                     if tp.slug == f.touchpoint]))
    return query.order_by(Alert.created_at.desc(), Alert.id.desc())


def _hours(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 1)


def recovery(journey: Journey, f: Filters) -> list[dict]:
    """Per stage: alerts open, acknowledged and resolved, and the median hours from the journey
    moment to acknowledgement and to resolution."""
    per_stage: dict[int, list[Alert]] = defaultdict(list)
    for alert in db.session.scalars(alerts_query(journey, f)):
        per_stage[alert.stage_id].append(alert)
    out = []
    for stage in journey.stages:
        alerts = per_stage.get(stage.id, [])
        if f.stage and stage.slug != f.stage:
            continue
        acked = [_hours(a.acknowledged_at - a.moment_at) for a in alerts if a.acknowledged_at]
        resolved = [_hours(a.resolved_at - a.moment_at) for a in alerts if a.resolved_at]
        out.append({"slug": stage.slug, "name": stage.name, "owner": stage.owner_email,
                    **{s: sum(a.state == s for a in alerts) for s in ("open", "acknowledged", "resolved")},
                    "hours_to_acknowledge": round(statistics.median(acked), 1) if acked else None,
                    "hours_to_resolve": round(statistics.median(resolved), 1) if resolved else None})
    return out
