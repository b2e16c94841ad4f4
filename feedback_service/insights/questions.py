"""Scores per question across question-set versions, for the dashboard's trends page. A plain function."""
from __future__ import annotations

from datetime import date, datetime, time, timezone

from sqlalchemy import func, select

from ..extensions import db
from ..journeys.models import Journey, QuestionSetVersion
from ..responses.models import Answer, Response

COMMENTS_SHOWN = 50


def _since(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=timezone.utc)


def question_scores(journey: Journey, since: date, min_n: int) -> list[dict]:
    """Per stage and question key, across every version that asked a question with that key:
    answers, mean score 0-100 and the versions; means from fewer than min_n answers are hidden."""
    rows = db.session.execute(
        select(Response.stage_id, Answer.question_key, Answer.measure, func.count(Answer.id), func.avg(Answer.score),
               func.min(QuestionSetVersion.version), func.max(QuestionSetVersion.version))
        .join(Response, Answer.response_id == Response.id)
        .join(QuestionSetVersion, QuestionSetVersion.id == Response.question_set_version_id)
        .where(Response.journey_id == journey.id, Response.submitted_at >= _since(since), Answer.score.is_not(None))
        .group_by(Response.stage_id, Answer.question_key, Answer.measure)).all()
    stages = {s.id: s for s in journey.stages}
    out = []
    for stage_id, key, measure, n, mean, first, last in rows:
        shown = n >= min_n
        out.append({"stage": stages[stage_id].name, "position": stages[stage_id].position, "question": key,
                    "measure": measure, "n": n if shown else None, "score": round(mean, 1) if shown else None,
                    "versions": f"v{first}" if first == last else f"v{first}-v{last}"})
    return sorted(out, key=lambda r: (r["position"], r["question"]))
