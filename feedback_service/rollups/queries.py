"""Reading the rollups: the journey map (stages and touchpoints, with the change against the
period before) and the weekly or monthly trends per stage. Plain functions over the daily rows;
never the answers table."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import date, timedelta

from sqlalchemy import func, select

from ..extensions import db
from ..journeys.models import Journey, QuestionSetVersion
from .filters import DETAILED, Filters
from .models import DailyCounts, DailyScores, TouchpointDayCounts, TouchpointDayScores
from .scoring import (NPS, REPORTED, SCALE, Hidden, Sums, cell_summary, complementary_suppression, measure_summary,
                      sibling_suppression, skipped_small, small)
from .services import SUM_FIELDS

INTERVALS = ("week", "month")


def cell_filter(model, journey: Journey, f: Filters, *, from_start: bool = True) -> list:
    """WHERE conditions for a rollup or comment table: the journey and the filters."""
    conds = [model.journey_id == journey.id, model.day <= f.end]
    if from_start:
        conds.append(model.day >= f.start)
    if f.stage:
        conds.append(model.stage_id == journey.stage(f.stage).id)
    if f.touchpoint:
        conds.append(model.touchpoint_id.in_([tp.id for s in journey.stages for tp in s.touchpoints
                                              if tp.slug == f.touchpoint]))
    for name in DETAILED:
        if getattr(f, name):
            conds.append(getattr(model, name) == getattr(f, name))
    return conds


def levels(f: Filters) -> tuple:
    """The (counts, scores) rollups to read: per touchpoint and day unless a filter needs more."""
    if f.detailed:
        return DailyCounts, DailyScores
    return TouchpointDayCounts, TouchpointDayScores


def _sums(rows) -> Sums:
    return Sums(*(v or 0 for v in rows))


def touchpoint_sums(journey: Journey, f: Filters) -> tuple[dict, dict]:
    """({touchpoint_id: (sent, responses)}, {touchpoint_id: {measure: Sums}}) for the filters."""
    counts_model, scores_model = levels(f)
    counts = db.session.execute(
        select(counts_model.touchpoint_id, func.sum(counts_model.sent), func.sum(counts_model.responses))
        .where(*cell_filter(counts_model, journey, f)).group_by(counts_model.touchpoint_id)).all()
    scores = db.session.execute(
        select(scores_model.touchpoint_id, scores_model.measure,
               *(func.sum(getattr(scores_model, n)) for n in SUM_FIELDS))
        .where(*cell_filter(scores_model, journey, f)).group_by(scores_model.touchpoint_id, scores_model.measure)).all()
    measures: dict[int, dict[str, Sums]] = defaultdict(dict)
    for tp, measure, *values in scores:
        measures[tp][measure] = _sums(values)
    return {tp: (int(s), int(r)) for tp, s, r in counts}, measures


def _stages(journey: Journey, f: Filters):
    """The stages and, per stage, the touchpoints the filters keep, in journey order."""
    for stage in journey.stages:
        if f.stage and stage.slug != f.stage:
            continue
        tps = [tp for tp in stage.touchpoints if not f.touchpoint or tp.slug == f.touchpoint]
        if tps:
            yield stage, tps


def _narrowing_hides(wider: tuple, narrower: tuple, min_n: int) -> Hidden:
    """What a cell under a filter must hide because the same cell without that filter differs
    from it by 1 to min_n - 1 patients: the figure that would give the difference away. Responses:
    the cell; a measure's responses: the measure; its skippers: its counts; its answers in or out of
    the top box: its top-box share (never shown for NPS); non-responders: the sent count."""
    (w_sent, w_resp), w_measures = wider
    (n_sent, n_resp), n_measures = narrower
    measures, counts, top_box = set(), set(), set()
    for m in REPORTED:
        w, n = w_measures.get(m, Sums()), n_measures.get(m, Sums())
        if small(w.responses - n.responses, min_n):
            measures.add(m)
        if small((w_resp - w.responses) - (n_resp - n.responses), min_n):
            counts.add(m)
        if m != NPS and (small(w.top_box - n.top_box, min_n) or small((w.n - w.top_box) - (n.n - n.top_box), min_n)):
            top_box.add(m)
    return Hidden(cell=small(w_resp - n_resp, min_n), sent=small((w_sent - w_resp) - (n_sent - n_resp), min_n),
                  measures=frozenset(measures), top_box=frozenset(top_box), counts=frozenset(counts))


def _union(hiddens) -> Hidden:
    hiddens = list(hiddens)
    return Hidden(cell=any(h.cell for h in hiddens), sent=any(h.sent for h in hiddens),
                  measures=frozenset().union(*(h.measures for h in hiddens)),
                  top_box=frozenset().union(*(h.top_box for h in hiddens)),
                  counts=frozenset().union(*(h.counts for h in hiddens)))


def cells(journey: Journey, f: Filters, min_n: int) -> list[dict]:
    """Per stage (journey order) and touchpoint: counts, response rate and every measure, with
    small counts and what would reveal them suppressed. What would reveal them includes the
    stage's other touchpoints (the touchpoint filter selects from the stage's cells, it does not
    recompute them) and the same cells without a channel, language or source filter."""
    whole = replace(f, touchpoint=None)
    sums = touchpoint_sums(journey, whole)
    wider = [touchpoint_sums(journey, replace(whole, **{name: None})) for name in DETAILED if getattr(f, name)]

    def cell(sums_, tp_id):
        counts, measures = sums_
        return counts.get(tp_id, (0, 0)), measures.get(tp_id, {})

    def total(sums_, tps):
        counts, measures = [cell(sums_, tp.id) for tp in tps], defaultdict(Sums)
        for _, per_tp in counts:
            for m, s in per_tp.items():
                measures[m].add(s)
        return (sum(c[0][0] for c in counts), sum(c[0][1] for c in counts)), dict(measures)

    out = []
    for stage, tps in _stages(journey, whole):
        mine = [cell(sums, tp.id) for tp in tps]
        sent, resp, measures = [c[0][0] for c in mine], [c[0][1] for c in mine], [c[1] for c in mine]
        forced = [_union(_narrowing_hides(cell(w, tp.id), mine[i], min_n) for w in wider) for i, tp in enumerate(tps)]
        # The stage is the touchpoints' total: hide enough that no small count can be worked out.
        hidden = sibling_suppression(sent, resp, measures, min_n, forced)
        shown = [i for i, tp in enumerate(tps) if not f.touchpoint or tp.slug == f.touchpoint]
        if not shown:
            continue
        summaries = [cell_summary(sent[i], resp[i], measures[i], min_n, hidden[i]) for i in range(len(tps))]
        touchpoints = [{"slug": tps[i].slug, "name": tps[i].name, "kind": tps[i].kind, **summaries[i]}
                       for i in shown]
        if f.touchpoint:
            # The stage narrowed to one touchpoint is that touchpoint's cell.
            stage_cell = {k: v for k, v in touchpoints[0].items() if k not in ("slug", "name", "kind")}
        else:
            stage_total = total(sums, tps)
            (stage_sent, stage_resp), stage_measures = stage_total
            # What a filter hid in a touchpoint could be worked out as the stage less its siblings:
            # the stage hides it too, as it hides what its own total would give away.
            own = _union(_narrowing_hides(total(w, tps), stage_total, min_n) for w in wider)
            # A touchpoint showing its cell but not a measure: the stage does not show the measure
            # either, or the touchpoint's would be the stage's less its siblings'.
            dark = frozenset(m for i in range(len(tps)) for m in REPORTED if not hidden[i].cell
                             and summaries[i][m]["suppressed"] and m in measures[i])
            stage_hidden = _union([own, *forced, Hidden(measures=dark,
                                                        counts=_stage_counts_hidden(resp, measures, hidden, min_n))])
            stage_cell = cell_summary(stage_sent, stage_resp, stage_measures, min_n, stage_hidden)
        out.append({"slug": stage.slug, "name": stage.name, "position": stage.position, **stage_cell,
                    "touchpoints": touchpoints})
    return out


def _stage_counts_hidden(resp: list[int], measures: list[dict], hidden: list, min_n: int) -> frozenset:
    """Measures whose counts the stage must not show: else the patients who skipped the measure,
    or answered more than one of its questions, in touchpoints whose counts are not shown could
    be worked out as the stage's less the shown touchpoints'."""
    out = set()
    for m in REPORTED:
        skipped = [r - tp[m].responses if m in tp else 0 for r, tp in zip(resp, measures)]
        extra = [tp[m].n - tp[m].responses if m in tp else 0 for tp in measures]
        unseen = [i for i, h in enumerate(hidden) if h.cell or m in h.measures or m in h.counts
                  or skipped_small(resp[i], measures[i].get(m), min_n)]
        if small(sum(skipped[i] for i in unseen), min_n) or small(sum(extra[i] for i in unseen), min_n):
            out.add(m)
    return frozenset(out)


def _change(now: dict, before: dict) -> dict:
    """Per measure, the score of the period before and the change, where both are shown."""
    trend = {}
    for m in REPORTED:
        a, b = now.get(m, {}), before.get(m, {})
        shown = not a.get("suppressed", True) and not b.get("suppressed", True)
        trend[m] = {"previous": b["score"] if shown else None,
                    "change": round(a["score"] - b["score"], 1) if shown else None}
    return trend


def journey_map(journey: Journey, f: Filters, min_n: int) -> dict:
    """The journey map for a period, each stage and touchpoint with its change against the
    period of the same length just before."""
    previous = f.previous()
    stages, before = cells(journey, f, min_n), cells(journey, previous, min_n)
    for stage, prev in zip(stages, before):
        stage["trend"] = _change(stage, prev)
        for tp, tp_prev in zip(stage["touchpoints"], prev["touchpoints"]):
            tp["trend"] = _change(tp, tp_prev)
    return {"journey": journey.slug, "name": journey.name, "from": f.start.isoformat(), "to": f.end.isoformat(),
            "previous": {"from": previous.start.isoformat(), "to": previous.end.isoformat()},
            "filters": f.selection(),
            "min_reporting_n": min_n, "stages": stages}


def journey_scores(journey: Journey, start: date | None, end: date | None, min_n: int) -> dict:
    """Per stage and touchpoint scores between start and end (either open), without trends."""
    f = Filters(start=start or date.min, end=end or date.max)
    return {"journey": journey.slug, "from": start.isoformat() if start else None,
            "to": end.isoformat() if end else None, "min_reporting_n": min_n, "stages": cells(journey, f, min_n)}


def period_start(day: date, interval: str) -> date:
    return day - timedelta(days=day.weekday()) if interval == "week" else day.replace(day=1)


def period_end(start: date, interval: str) -> date:
    if interval == "week":
        return start + timedelta(days=6)
    following = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - timedelta(days=1)


def _periods(f: Filters, interval: str) -> list[date]:
    starts, day = [], period_start(f.start, interval)
    while day <= f.end:
        starts.append(day)
        day = period_end(day, interval) + timedelta(days=1)
    return starts


def version_changes(journey: Journey, f: Filters) -> dict[int, list[dict]]:
    """Per stage, the question-set versions first used for a moment inside the period, other than
    the first version of a set."""
    firsts = dict(db.session.execute(
        select(DailyCounts.question_set_version_id, func.min(DailyCounts.day))
        .where(*cell_filter(DailyCounts, journey, f, from_start=False))
        .group_by(DailyCounts.question_set_version_id)).all())
    versions = db.session.scalars(select(QuestionSetVersion).where(QuestionSetVersion.id.in_(firsts)))
    changes: dict[int, list[dict]] = defaultdict(list)
    seen: set[tuple] = set()
    for v in sorted(versions, key=lambda v: (firsts[v.id], v.question_set.key, v.version)):
        stage_id, key = v.question_set.stage_id, v.question_set.key
        # A set's first version in use is its start, not a change.
        if (stage_id, key) in seen and firsts[v.id] >= f.start:
            changes[stage_id].append({"date": firsts[v.id].isoformat(), "label": f"{key} v{v.version}"})
        seen.add((stage_id, key))
    return changes


def trends(journey: Journey, f: Filters, interval: str, min_n: int) -> dict:
    """Per stage, one point per week (Monday to Sunday) or calendar month touching the period:
    score, 95% interval and responses for each measure, and the question-set version changes.
    Periods are suppressed like cells, and across the stage's periods enough more that no
    suppressed one can be worked out from the period's total."""
    _counts, scores = levels(f)
    rows = db.session.execute(
        select(scores.stage_id, scores.day, scores.measure, *(func.sum(getattr(scores, n)) for n in SUM_FIELDS))
        .where(*cell_filter(scores, journey, f)).group_by(scores.stage_id, scores.day, scores.measure)).all()
    buckets: dict[tuple, Sums] = defaultdict(Sums)
    for stage_id, day, measure, *values in rows:
        buckets[(stage_id, period_start(day, interval), measure)].add(_sums(values))
    starts, changes = _periods(f, interval), version_changes(journey, f)
    stages = []
    for stage, _tps in _stages(journey, f):
        series = {}
        for m in REPORTED:
            sums = [buckets.get((stage.id, s, m), Sums()) for s in starts]
            answered = [s.responses for s in sums]
            hidden = complementary_suppression([answered], min_n, {i for i, n in enumerate(answered) if n < min_n})
            series[m] = [{"start": s.isoformat(), "end": period_end(s, interval).isoformat(),
                          **measure_summary(sums[i], min_n, hidden=i in hidden, top_box_reported=False,
                                            scale=SCALE.get(m, (0.0, 100.0)))}
                         for i, s in enumerate(starts)]
        stages.append({"slug": stage.slug, "name": stage.name, "series": series,
                       "version_changes": changes.get(stage.id, [])})
    return {"journey": journey.slug, "from": f.start.isoformat(), "to": f.end.isoformat(), "interval": interval,
            "min_reporting_n": min_n, "stages": stages}
