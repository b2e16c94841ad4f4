"""Keep the daily rollups current as invitations go out and answers arrive, and rebuild them from
the raw rows. Both paths build a response's contribution with the same function, so a rebuild
gives the same rows as the increments did."""
from __future__ import annotations

from collections import defaultdict, namedtuple
from dataclasses import asdict, fields

from sqlalchemy import delete, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..events.models import Event
from ..journeys.models import QuestionSetVersion
from ..responses.models import Answer, Response
from ..scheduling.models import Invitation
from .models import (CELL_KEY, PLACE_KEY, Comment, DailyCounts, DailyScores, TouchpointDayCounts,
                     TouchpointDayScores)
from .scoring import BOTTOM_BOX_SCORE, NPS, Sums, nps_value

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
SUM_FIELDS = tuple(f.name for f in fields(Sums))
LEVELS = {"counts": (DailyCounts, TouchpointDayCounts), "scores": (DailyScores, TouchpointDayScores)}


def _upsert_add(model, keys: dict, deltas: dict) -> None:
    """Atomic upsert-and-add, so concurrent workers never lose an increment."""
    insert_ = _INSERTS[db.session.get_bind().dialect.name]
    stmt = insert_(model).values(**keys, **deltas)
    stmt = stmt.on_conflict_do_update(
        index_elements=[k for k in keys if k not in ("journey_id", "stage_id")],
        set_={k: getattr(model, k) + stmt.excluded[k] for k in deltas},
    )
    db.session.execute(stmt)


def _place(cell: dict) -> dict:
    return {k: cell[k] for k in ("journey_id", "stage_id", *PLACE_KEY)}


def _increment(kind: str, cell: dict, deltas: dict) -> None:
    """Add to both levels: the detailed row and the touchpoint-day row."""
    detailed, coarse = LEVELS[kind]
    _upsert_add(detailed, cell, deltas)
    _upsert_add(coarse, {**_place(cell), **({"measure": cell["measure"]} if "measure" in cell else {})}, deltas)


def _cell(invitation) -> dict:
    return {"journey_id": invitation.journey_id, "stage_id": invitation.stage_id,
            "touchpoint_id": invitation.touchpoint_id,
            "question_set_version_id": invitation.question_set_version_id,
            "channel": invitation.channel, "locale": invitation.locale,
            "source": invitation.event.source, "day": invitation.event.occurred_at.date()}


def response_sums(questions: dict[str, dict], answers) -> dict[str, Sums]:
    """What one response adds per measure: answers are (question_key, value, measure, score,
    top_box) objects or rows; `questions` maps the version's keys to its questions."""
    scores: dict[str, list] = defaultdict(list)
    for a in answers:
        if a.measure is None:
            continue
        scores[a.measure].append((a.score, a.top_box, a.score <= BOTTOM_BOX_SCORE))
        question = questions.get(a.question_key)
        if question and question["type"] == "nps":
            good = a.score if a.measure == "satisfaction" else 100.0 - a.score
            value = nps_value(good)
            scores[NPS].append((value, value > 0, value < 0))
    return {m: Sums.of_response([s for s, _, _ in rows], [t for _, t, _ in rows], [b for _, _, b in rows])
            for m, rows in scores.items()}


def record_sent(invitation, count: int = 1) -> None:
    """Count a send; -1 takes it back (the provider could not deliver it, and the rule's next
    channel will send, and count, again)."""
    _increment("counts", _cell(invitation), {"sent": count, "responses": 0})


def comment_rows(questions: dict[str, dict], answers, sums: dict[str, Sums]) -> list[dict]:
    """The free-text answers of one response, each with the response's mean score per measure."""
    means = {m: round(s.total / s.n, 4) for m, s in sums.items() if s.n and m in ("satisfaction", "friction")}
    return [{"question_key": a.question_key, "text": a.value, "satisfaction": means.get("satisfaction"),
             "friction": means.get("friction")}
            for a in answers if questions.get(a.question_key, {}).get("type") == "text" and a.value]


def record_answers(invitation, response) -> None:
    """Add one response (flushed, with its answers) to the rollups and its comments to theirs."""
    cell = _cell(invitation)
    _increment("counts", cell, {"sent": 0, "responses": 1})
    questions = invitation.question_set_version.questions_by_key
    sums = response_sums(questions, response.answers)
    for measure, measure_sums in sums.items():
        _increment("scores", {**cell, "measure": measure}, asdict(measure_sums))
    for row in comment_rows(questions, response.answers, sums):
        db.session.add(Comment(**cell, **row, response_id=response.id, submitted_at=response.submitted_at))


# Invitations that count as sent: handed to a provider (or proved so by an answer) and not failed
# afterwards (a failed one's successor on the next channel is counted instead).
COUNTED_SENT = (Invitation.sent_at.is_not(None), Invitation.status != "failed")
_KEY_COLUMNS = (Invitation.journey_id, Invitation.stage_id, Invitation.touchpoint_id,
                Invitation.question_set_version_id, Invitation.channel, Invitation.locale, Event.source,
                Event.occurred_at)
BATCH = 5000
_AnswerRow = namedtuple("_AnswerRow", "question_key value measure score top_box")


def rebuild_rollups(progress=None, session=None) -> dict[str, int]:
    """Recompute every rollup row and comment from the invitations and answers, in one transaction:
    the rollups are replaced all at once or not at all. `progress(n)` is told of each batch of
    responses read. `session`: another than the app's (a migration's)."""
    session = session or db.session
    if session.get_bind().dialect.name == "postgresql":
        # Increments wait until the rebuild commits, then add to the rebuilt rows: none is lost
        # or counted twice (reads go on meanwhile).
        session.execute(text("LOCK TABLE rollup_daily_counts, rollup_daily_scores, rollup_touchpoint_counts, "
                             "rollup_touchpoint_scores, comments IN EXCLUSIVE MODE"))
    for model in (DailyScores, DailyCounts, TouchpointDayScores, TouchpointDayCounts, Comment):
        session.execute(delete(model))
    counts: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])  # cell -> [sent, responses]
    for row in session.execute(select(*_KEY_COLUMNS, db.func.count()).join(Event, Event.id == Invitation.event_id)
                               .where(*COUNTED_SENT).group_by(*_KEY_COLUMNS)):
        counts[_key_of(row)][0] += row[8]
    scores, comments, read = _read_responses(session, counts, progress)
    tables = _tables(counts, scores, comments)
    for model, rows in tables.items():
        for i in range(0, len(rows), BATCH):
            session.execute(insert(model), rows[i:i + BATCH])
    session.commit()
    return {"responses": read, **{model.__tablename__: len(rows) for model, rows in tables.items()}}


_CELL_NAMES = ("journey_id", "stage_id", *CELL_KEY)
_PLACE_NAMES = ("journey_id", "stage_id", *PLACE_KEY)


def _key_of(row) -> tuple:
    """A cell's key from a row starting with _KEY_COLUMNS (the moment's time becomes its day)."""
    *ids, occurred_at = row[:8]
    return (*ids, occurred_at.date())


def _read_responses(session, counts: dict, progress) -> tuple[dict, list, int]:
    """Every response with its answers, in id order: per cell and measure its Sums, the
    comments, and the count read; each response counted in `counts`."""
    questions = {v.id: v.questions_by_key for v in session.scalars(select(QuestionSetVersion))}
    scores: dict[tuple, Sums] = defaultdict(Sums)
    comments: list[dict] = []
    query = (select(*_KEY_COLUMNS, Response.id, Response.submitted_at, Answer.question_key, Answer.value,
                    Answer.measure, Answer.score, Answer.top_box)
             .join(Invitation, Invitation.id == Response.invitation_id).join(Event, Event.id == Invitation.event_id)
             .outerjoin(Answer, Answer.response_id == Response.id).order_by(Response.id))
    read, current, answers = 0, None, []

    def add(response, answers):
        key = _key_of(response)
        counts[key][1] += 1
        version = questions[response[3]]
        sums = response_sums(version, answers)
        for measure, measure_sums in sums.items():
            scores[(*key, measure)].add(measure_sums)
        comments.extend({**dict(zip(_CELL_NAMES, key)), **row, "response_id": response[8],
                         "submitted_at": response[9]} for row in comment_rows(version, answers, sums))

    for row in session.execute(query.execution_options(yield_per=BATCH)):
        if current is not None and row[8] != current[8]:
            add(current, answers)
            read += 1
            if progress and read % BATCH == 0:
                progress(BATCH)
        if current is None or row[8] != current[8]:
            current, answers = row, []
        if row[10] is not None:
            answers.append(_AnswerRow(*row[10:]))
    if current is not None:
        add(current, answers)
        read += 1
    if progress and read % BATCH:
        progress(read % BATCH)
    return scores, comments, read


def _tables(counts: dict, scores: dict, comments: list) -> dict:
    """The rows of every rollup table; the touchpoint-day level is the detailed rows added up."""
    count_rows = [dict(zip(_CELL_NAMES, k), sent=s, responses=r) for k, (s, r) in counts.items()]
    place_counts: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for row in count_rows:
        total = place_counts[tuple(_place(row).values())]
        total[0] += row["sent"]
        total[1] += row["responses"]
    place_scores: dict[tuple, Sums] = defaultdict(Sums)
    for (*key, measure), sums in scores.items():
        place_scores[(*_place(dict(zip(_CELL_NAMES, key))).values(), measure)].add(sums)
    return {
        DailyCounts: count_rows,
        DailyScores: [dict(zip((*_CELL_NAMES, "measure"), k), **asdict(v)) for k, v in scores.items()],
        TouchpointDayCounts: [dict(zip(_PLACE_NAMES, k), sent=s, responses=r) for k, (s, r) in place_counts.items()],
        TouchpointDayScores: [dict(zip((*_PLACE_NAMES, "measure"), k), **asdict(v)) for k, v in place_scores.items()],
        Comment: comments,
    }
