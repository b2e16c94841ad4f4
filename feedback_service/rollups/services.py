"""Keep the daily rollups current as invitations go out and answers arrive; read scores from them."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, fields
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..journeys.models import Journey
from .models import DailyCounts, DailyScores
from .scoring import Sums, cell_summary, sibling_suppression

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def _increment(model, keys: dict, deltas: dict) -> None:
    """Atomic upsert-and-add, so concurrent workers never lose an increment."""
    insert = _INSERTS[db.session.get_bind().dialect.name]
    stmt = insert(model).values(**keys, **deltas)
    stmt = stmt.on_conflict_do_update(
        index_elements=[k for k in keys if k not in ("journey_id", "stage_id")],
        set_={k: getattr(model, k) + stmt.excluded[k] for k in deltas},
    )
    db.session.execute(stmt)


def _cell(invitation) -> dict:
    return {"journey_id": invitation.journey_id, "stage_id": invitation.stage_id,
            "touchpoint_id": invitation.touchpoint_id, "day": invitation.event.occurred_at.date()}


def record_sent(invitation, count: int = 1) -> None:
    """Count a send; -1 takes it back (the provider could not deliver it, and the rule's next
    channel will send, and count, again)."""
    _increment(DailyCounts, _cell(invitation), {"sent": count, "responses": 0})


def record_answers(invitation, answers) -> None:
    """Add one response's scored answers (objects with measure, score, top_box) to the rollups."""
    _increment(DailyCounts, _cell(invitation), {"sent": 0, "responses": 1})
    per_measure: dict[str, list] = defaultdict(list)
    for a in answers:
        if a.measure is not None:
            per_measure[a.measure].append(a)
    for measure, scored in per_measure.items():
        sums = Sums.of_response([a.score for a in scored], [a.top_box for a in scored])
        _increment(DailyScores, {**_cell(invitation), "measure": measure}, asdict(sums))


def journey_scores(journey: Journey, start: date | None, end: date | None, min_n: int) -> dict:
    """Per stage (journey order) and per touchpoint scores for moments between start and end, inclusive."""
    def period(q, model):
        q = q.where(model.journey_id == journey.id)
        if start:
            q = q.where(model.day >= start)
        if end:
            q = q.where(model.day <= end)
        return q

    counts = db.session.execute(period(
        select(DailyCounts.touchpoint_id, func.sum(DailyCounts.sent), func.sum(DailyCounts.responses))
        .group_by(DailyCounts.touchpoint_id), DailyCounts)).all()
    sum_names = [f.name for f in fields(Sums)]
    scores = db.session.execute(period(
        select(DailyScores.touchpoint_id, DailyScores.measure,
               *(func.sum(getattr(DailyScores, name)) for name in sum_names))
        .group_by(DailyScores.touchpoint_id, DailyScores.measure), DailyScores)).all()

    tp_counts = {tp: (int(sent), int(resp)) for tp, sent, resp in counts}
    tp_measures: dict[int, dict[str, Sums]] = defaultdict(dict)
    for tp, measure, *values in scores:
        tp_measures[tp][measure] = Sums(*values)

    stages = []
    for stage in journey.stages:
        tps = stage.touchpoints
        pairs = [tp_counts.get(tp.id, (0, 0)) for tp in tps]
        sent, resp = [p[0] for p in pairs], [p[1] for p in pairs]
        measures = [tp_measures.get(tp.id, {}) for tp in tps]
        stage_measures: dict[str, Sums] = defaultdict(Sums)
        for per_tp in measures:
            for measure, s in per_tp.items():
                stage_measures[measure].add(s)
        # The stage is the touchpoints' total: hide enough that no small count can be worked out.
        hidden = sibling_suppression(sent, resp, measures, min_n)
        touchpoints = [{"slug": tp.slug, "name": tp.name, "kind": tp.kind,
                        **cell_summary(sent[i], resp[i], measures[i], min_n, hidden[i])}
                       for i, tp in enumerate(tps)]
        stages.append({"slug": stage.slug, "name": stage.name, "position": stage.position,
                       **cell_summary(sum(sent), sum(resp), stage_measures, min_n),
                       "touchpoints": touchpoints})
    return {"journey": journey.slug, "from": start.isoformat() if start else None,
            "to": end.isoformat() if end else None, "min_reporting_n": min_n, "stages": stages}
