"""The journey-map feed (GET /api/v1/journeys/<slug>/map and map.csv, `export map`, `rollups rebuild`,
migration 0005), checked number for number against a recomputation from the raw invitations,
events and answers of a journey of the test module's own.

The journey's data is made through the real services: events posted by two API keys of two
sources, sent by the jobs, answered on the survey page, with a question-set version published
half way through the period. Its moments span six weeks, so the module runs the service with
surveys allowed up to 40 days after their moment (FEEDBACK_MAX_SEND_DELAY_DAYS)."""
from __future__ import annotations

import csv
import io
import json
import math
import random
import sqlite3
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from itertools import combinations
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, update

from feedback_service import MIGRATIONS_DIR, create_app
from feedback_service.events.models import Event
from feedback_service.extensions import db
from feedback_service.insights.feed import CSV_COLUMNS
from feedback_service.journeys.library import publish_version
from feedback_service.journeys.models import Journey
from feedback_service.journeys.questions import validate_question_set
from feedback_service.responses.models import Answer, Response
from feedback_service.rollups.models import (Comment, DailyCounts, DailyScores, TouchpointDayCounts,
                                             TouchpointDayScores)
from feedback_service.rollups.services import rebuild_rollups
from feedback_service.scheduling.models import Invitation
from feedback_service.sqltypes import utcnow
from tests.conftest import csrf_of, event_body, load_journey_copy, outbox_lines, run_jobs_of, token_of, uid

MIN_N = 11  # FEEDBACK_MIN_REPORTING_N: counts of 1 to 10 are never shown
Z95 = statistics.NormalDist().inv_cdf(0.975)
TOP = 90.0  # an answer is in the top box when its score on its measure reaches this
MEASURES = ("satisfaction", "friction", "nps")
SCALES = {"satisfaction": (0.0, 100.0), "friction": (0.0, 100.0), "nps": (-100.0, 100.0)}
SCORE_TOL = 0.05 + 1e-6  # a figure rounded to one decimal is within half a unit of the exact one
RATE_TOL = 0.00005 + 1e-9  # the response rate is rounded to four decimals
SEED = 20261127


# -- Journeys of the module's own -----------------------------------------------------------------

def load_journey(app, folder: Path) -> str:
    return load_journey_copy(app, folder, "map")


def create_key(app, source: str) -> dict:
    """An API key of a source of its own, created through the CLI; the Authorization header."""
    result = app.test_cli_runner().invoke(args=["api-key", "create", uid("feed-key"), "--source", source,
                                                "--scope", "events", "--scope", "scores"])
    assert result.exit_code == 0, result.output
    return {"Authorization": f"Bearer {result.stdout.strip().splitlines()[0]}"}


def post_events(client, auth, bodies: list[dict]) -> list[dict]:
    """POST a list of events; each one's single invitation outcome."""
    r = client.post("/api/v1/events", json=bodies, headers=auth)
    assert r.status_code == 202, r.get_json()
    outcomes = []
    for recorded in r.get_json()["events"]:
        [invitation] = recorded["invitations"]
        assert invitation["status"] == "scheduled", invitation
        outcomes.append(invitation)
    return outcomes


def tokens_by_invitation(outbox: Path, ids) -> dict[int, str]:
    """The survey token each of these invitations was sent with (each sent exactly once)."""
    ids, found = set(ids), defaultdict(list)
    for message in outbox_lines(outbox):
        if message["invitation_id"] in ids:
            found[message["invitation_id"]].append(token_of(message))
    assert {i: len(found[i]) for i in ids} == dict.fromkeys(ids, 1)
    return {i: tokens[0] for i, tokens in found.items()}


def answer(client, token: str, values: dict, csrf: str | None = None) -> str:
    """Answer on the survey page; the form's CSRF token, which the same client may send again."""
    if csrf is None:
        page = client.get(f"/s/{token}")
        assert page.status_code == 200, page.text
        csrf = csrf_of(page.text)
    done = client.post(f"/s/{token}", data={"csrf_token": csrf, **values})
    assert done.status_code == 302, done.text
    return csrf


def moment(day: date, rng: random.Random) -> datetime:
    """A moment on this UTC day, written in one of several UTC offsets (the day is the UTC one)."""
    at = datetime.combine(day, time(0, 0), tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(86400))
    offset = rng.choice([0, -5, 9.5, -11, 13])
    return at.astimezone(timezone(timedelta(hours=offset)))


COMMENTS = {
    "discharge": ["The pharmacy wait was far too long before I could leave.",
                  "Waited hours for the pharmacy and the discharge papers.", "Nurses were kind.", ""],
    "booking": ["I was on hold on the phone line forever.", "Phone line hold music for twenty minutes.",
                "Easy enough.", ""],
    "follow-up": ["Fine.", "Parking was hard to find.", ""],
}


def answer_values(questions: list[dict], stage: str, rng: random.Random) -> dict:
    """Random answers to a question set, leaving some optional questions blank."""
    values = {}
    for q in questions:
        if not q["required"] and rng.random() < 0.3:
            continue
        kind = q["type"]
        if kind == "rating":
            values[q["key"]] = str(rng.choices(range(1, 6), weights=[1, 1, 2, 4, 4])[0])
        elif kind == "effort":
            values[q["key"]] = str(rng.randint(1, 7))
        elif kind == "nps":
            values[q["key"]] = str(rng.choices(range(11), weights=[1, 1, 1, 1, 1, 1, 2, 3, 3, 4, 4])[0])
        elif kind == "yes_no":
            values[q["key"]] = rng.choice(["yes", "no"])
        elif kind == "text":
            text = rng.choice(COMMENTS[stage])
            if text:
                values[q["key"]] = text
    return values


# -- The recomputation from raw rows -------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One counted send, or one response with its scores per measure (NPS as +100/0/-100)."""
    stage: str
    touchpoint: str
    channel: str
    locale: str
    source: str
    day: date
    scores: dict | None = None  # None: a send
    version: tuple | None = None  # (question set, version) answered


@dataclass
class Raw:
    sends: list[Row]
    responses: list[Row]
    stages: list[tuple[str, list[str]]]  # journey order


def read_raw(app, slug: str) -> Raw:
    """Every send and response of the journey, straight from invitations, events and answers."""
    with app.app_context():
        journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
        where = {tp.id: (st.slug, tp.slug) for st in journey.stages for tp in st.touchpoints}
        stages = [(st.slug, [tp.slug for tp in st.touchpoints]) for st in journey.stages]
        sends = [Row(*where[tp], channel, locale, source, occurred.astimezone(timezone.utc).date())
                 for tp, channel, locale, source, occurred in db.session.execute(
                     select(Invitation.touchpoint_id, Invitation.channel, Invitation.locale, Event.source,
                            Event.occurred_at).join(Event, Event.id == Invitation.event_id)
                     .where(Invitation.journey_id == journey.id, Invitation.sent_at.is_not(None),
                            Invitation.status != "failed"))]
        kinds = {}
        labels = {}
        for qs in journey.question_sets:
            for version in qs.versions:
                kinds[version.id] = {q["key"]: q for q in version.questions}
                labels[version.id] = (qs.key, version.version)
        answers = defaultdict(list)
        for response_id, key, value, measure, score, top_box in db.session.execute(
                select(Answer.response_id, Answer.question_key, Answer.value, Answer.measure, Answer.score,
                       Answer.top_box).join(Response, Response.id == Answer.response_id)
                .where(Response.journey_id == journey.id)):
            answers[response_id].append((key, value, measure, score, top_box))
        responses = []
        for rid, version_id, tp, channel, locale, source, occurred in db.session.execute(
                select(Response.id, Response.question_set_version_id, Invitation.touchpoint_id, Invitation.channel,
                       Invitation.locale, Event.source, Event.occurred_at)
                .join(Invitation, Invitation.id == Response.invitation_id).join(Event, Event.id == Invitation.event_id)
                .where(Response.journey_id == journey.id)):
            scores = defaultdict(list)
            for key, value, measure, score, top_box in answers[rid]:
                if measure is None:
                    continue
                assert top_box == (score >= TOP)
                scores[measure].append(score)
                question = kinds[version_id][key]
                if question["type"] == "nps":  # promoters 9-10, detractors 0-6
                    v = int(value)
                    scores["nps"].append(100.0 if v >= 9 else -100.0 if v <= 6 else 0.0)
            responses.append(Row(*where[tp], channel, locale, source, occurred.astimezone(timezone.utc).date(),
                                 {m: tuple(s) for m, s in scores.items()}, labels[version_id]))
    return Raw(sends, responses, stages)


@dataclass(frozen=True)
class Query:
    start: date
    end: date
    stage: str | None = None
    touchpoint: str | None = None
    channel: str | None = None
    locale: str | None = None
    source: str | None = None

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def keeps(self, row: Row) -> bool:
        return (self.start <= row.day <= self.end and all(
            getattr(self, k) in (None, getattr(row, k)) for k in ("stage", "touchpoint", "channel", "locale",
                                                                   "source")))

    def previous(self) -> Query:
        days = (self.end - self.start).days + 1
        return Query(self.start - timedelta(days=days), self.start - timedelta(days=1), self.stage, self.touchpoint,
                     self.channel, self.locale, self.source)

    def params(self) -> dict:
        out = {"from": self.start.isoformat(), "to": self.end.isoformat()}
        out.update({k: getattr(self, k) for k in ("stage", "touchpoint", "channel", "locale", "source")
                    if getattr(self, k)})
        return out

    def cli(self) -> list[str]:
        return [a for k, v in self.params().items() for a in (f"--{k}", v)]


@dataclass
class Tally:
    """Sends, responses and each measure's scores, per response, of one stage or touchpoint."""
    sent: int = 0
    responses: int = 0
    measures: dict = field(default_factory=lambda: defaultdict(list))  # measure -> [per-response scores]

    def add(self, other: Tally) -> None:
        self.sent += other.sent
        self.responses += other.responses
        for m, groups in other.measures.items():
            self.measures[m].extend(groups)


def figures(groups: list[tuple], measure: str) -> dict:
    """Mean of the answers, top box, and the cluster-robust 95% interval over responses."""
    scores = [s for g in groups for s in g]
    n, r = len(scores), len(groups)
    mean = sum(scores) / n
    half = 0.0
    if r > 1:
        m_bar = n / r
        variance = sum((sum(g) - mean * len(g)) ** 2 for g in groups) / (r * (r - 1) * m_bar ** 2)
        half = Z95 * math.sqrt(variance)
    lo, hi = SCALES[measure]
    top = sum(1 for s in scores if s >= TOP) if measure != "nps" else sum(1 for s in scores if s > 0)
    bottom = sum(1 for s in scores if s <= 100 - TOP) if measure != "nps" else sum(1 for s in scores if s < 0)
    return {"score": mean, "n": n, "responses": r, "top": top, "rest": n - top, "bottom": bottom,
            "ci95": [max(lo, mean - half), min(hi, mean + half)]}


def small(count: int) -> bool:
    return 0 < count < MIN_N


def widen(vectors: list[list[int]], hidden: set[int]) -> set[int]:
    """Hide more siblings, smallest first, until no hidden total of 1-10 is left to subtract out."""
    hidden = set(hidden)
    while len(hidden) < len(vectors[0]):
        leaking = next((v for v in vectors if small(sum(v[i] for i in hidden))), None)
        if leaking is None:
            break
        hidden.add(min((i for i in range(len(leaking)) if i not in hidden), key=lambda i: leaking[i]))
    return hidden


def cell(t: Tally, hide_cell=False, hide_sent=False, hide_measure=frozenset(), hide_top=frozenset(),
         hide_counts=frozenset()) -> dict:
    """The expected JSON of one stage or touchpoint (exact, unrounded figures)."""
    if hide_cell or t.responses < MIN_N:
        return {"suppressed": True, **{m: {"suppressed": True} for m in MEASURES}}
    sent_shown = not (hide_sent or small(t.sent - t.responses))
    out = {"suppressed": False, "responses": t.responses, "sent": t.sent if sent_shown else None,
           "response_rate": t.responses / t.sent if sent_shown and t.sent else None}
    for m in MEASURES:
        groups = t.measures.get(m, [])
        if m in hide_measure or len(groups) < MIN_N:
            out[m] = {"suppressed": True}
            continue
        f = figures(groups, m)
        top_sensitive = m in hide_top or small(f["top"]) or small(f["rest"])
        if top_sensitive and f["top"] + f["bottom"] == f["n"]:
            # Every answer at one end or the other: score and n would give the top box away.
            out[m] = {"suppressed": True}
            continue
        top_hidden = m == "nps" or top_sensitive
        # Patients who answered but skipped the measure: 1 to 10 of them must not be worked out.
        counted = m not in hide_counts and not skipped_small(t, m) and not small(extra_of(t, m))
        out[m] = {"suppressed": False, "score": f["score"], "n": f["n"] if counted else None,
                  "responses": f["responses"] if counted else None,
                  "top_box_pct": None if top_hidden else 100.0 * f["top"] / f["n"], "ci95": f["ci95"]}
    return out


def skipped_of(t: Tally, measure: str) -> int:
    """The cell's patients who answered but skipped the measure (0 where nobody answered it)."""
    answered = len(t.measures.get(measure, []))
    return t.responses - answered if answered else 0


def extra_of(t: Tally, measure: str) -> int:
    """The measure's answers beyond one per response: patients who answered two of its questions."""
    groups = t.measures.get(measure, [])
    return sum(len(g) for g in groups) - len(groups)


def skipped_small(t: Tally, measure: str) -> bool:
    """1 to 10 of the cell's responses have no answer on the measure (which someone answered)."""
    return small(skipped_of(t, measure))


NARROWING = ("channel", "locale", "source")


def wider_queries(q: Query) -> list[Query]:
    """The same query without one of its channel, locale and source filters, for each it has."""
    return [replace(q, **{name: None}) for name in NARROWING if getattr(q, name)]


def tallies_of(raw: Raw, q: Query) -> dict[tuple[str, str], Tally]:
    """Per (stage, touchpoint), the sends, responses and scores the filters of q keep."""
    tallies = defaultdict(Tally)
    for r in raw.sends:
        if q.keeps(r):
            tallies[(r.stage, r.touchpoint)].sent += 1
    for r in raw.responses:
        if q.keeps(r):
            t = tallies[(r.stage, r.touchpoint)]
            t.responses += 1
            for m, scores in r.scores.items():
                if scores:
                    t.measures[m].append(scores)
    return tallies


def counts_of(t: Tally) -> dict:
    """The counts of patients (and of answers) of one cell that a narrowing filter must not change
    by 1 to 10, by kind: responses and, per measure, the responses to it, the patients who skipped
    it, and its answers in and out of the top box (NPS: promoters and the rest)."""
    out = {"responses": t.responses}
    for m in MEASURES:
        groups = t.measures.get(m, [])
        scores = [s for g in groups for s in g]
        top = sum(1 for s in scores if (s > 0 if m == "nps" else s >= TOP))
        out |= {f"{m} responses": len(groups), f"{m} skipped": t.responses - len(groups),
                f"{m} top box": top, f"{m} not top box": len(scores) - top}
    return out


@dataclass(frozen=True)
class Hide:
    """What one stage or touchpoint must hide whatever its own counts: the cell, its sent count,
    and per measure the whole measure, its n and responses (counts), or its top-box share."""
    cell: bool = False
    sent: bool = False
    measures: frozenset = frozenset()
    counts: frozenset = frozenset()
    top: frozenset = frozenset()

    def __or__(self, other: Hide) -> Hide:
        return Hide(self.cell or other.cell, self.sent or other.sent, self.measures | other.measures,
                    self.counts | other.counts, self.top | other.top)

    def __bool__(self) -> bool:
        return self.cell or self.sent or bool(self.measures or self.counts or self.top)


def union(hides) -> Hide:
    out = Hide()
    for h in hides:
        out |= h
    return out


def left_out_a_little(wider: Tally, narrower: Tally) -> Hide:
    """What a cell under a filter must hide because the patients the filter leaves out are 1 to
    10 by one of its counts: the figure that would give them away. Responses: the cell; a
    measure's responses: the measure; its skippers: its n and responses; its answers in or out of
    the top box: its top-box share (NPS shows none); non-responders: the sent count."""
    w, n = counts_of(wider), counts_of(narrower)

    def differs(kind: str) -> bool:
        return small(w[kind] - n[kind])

    return Hide(cell=differs("responses"),
                sent=small((wider.sent - wider.responses) - (narrower.sent - narrower.responses)),
                measures=frozenset(m for m in MEASURES if differs(f"{m} responses")),
                counts=frozenset(m for m in MEASURES if differs(f"{m} skipped")),
                top=frozenset(m for m in MEASURES if m != "nps" and (differs(f"{m} top box")
                                                                     or differs(f"{m} not top box"))))


def total_of(tallies: list[Tally]) -> Tally:
    out = Tally()
    for t in tallies:
        out.add(t)
    return out


def expected_cells(raw: Raw, q: Query) -> list[dict]:
    """Per stage the filters keep (journey order) and its touchpoints, the expected cells: counts
    and measures from the raw rows, hidden as the threshold and complementary suppression say.
    What is hidden is decided among all the stage's touchpoints (the touchpoint filter then picks
    one). A touchpoint whose counts differ by 1 to 10 from the same cell without one of the
    channel, locale or source filters hides the figure that would give the difference away
    (left_out_a_little), and its siblings hide enough more that it cannot be subtracted out. The
    stage hides all its touchpoints were made to hide, what its own total's difference gives
    away, and a measure's counts where its touchpoints without them hold 1 to 10 skippers."""
    whole = replace(q, touchpoint=None)
    tallies = tallies_of(raw, whole)
    wider = [tallies_of(raw, w) for w in wider_queries(whole)]
    out = []
    for stage, tps in raw.stages:
        if q.stage and stage != q.stage:
            continue
        listed = [i for i, tp in enumerate(tps) if not q.touchpoint or tp == q.touchpoint]
        if not listed:
            continue
        per = [tallies[(stage, tp)] for tp in tps]
        forced = [union(left_out_a_little(w[(stage, tp)], per[i]) for w in wider) for i, tp in enumerate(tps)]
        resp = [t.responses for t in per]
        hidden = widen([resp], {i for i, v in enumerate(resp) if v < MIN_N}
                       | {i for i, h in enumerate(forced) if h.cell})
        silent = [t.sent - t.responses for t in per]
        no_sent = widen([silent], hidden | {i for i, h in enumerate(forced) if h.sent}
                        | {i for i, v in enumerate(silent) if small(v)})
        hide_m, hide_top = {}, {}
        for m in MEASURES:
            answered = [len(t.measures.get(m, [])) for t in per]
            hide_m[m] = widen([answered], hidden | {i for i, v in enumerate(answered) if v < MIN_N}
                              | {i for i, h in enumerate(forced) if m in h.measures})
            fig = [figures(t.measures[m], m) if t.measures.get(m) else {"top": 0, "rest": 0} for t in per]
            top, rest = [f["top"] if m != "nps" else 0 for f in fig], [f["rest"] if m != "nps" else 0 for f in fig]
            hide_top[m] = widen([top, rest], hide_m[m] | {i for i, h in enumerate(forced) if m in h.top}
                                | {i for i in range(len(per)) if small(top[i]) or small(rest[i])})
        touchpoints = [{"slug": tps[i], **cell(per[i], i in hidden, i in no_sent,
                                               frozenset(m for m in MEASURES if i in hide_m[m]),
                                               frozenset(m for m in MEASURES if i in hide_top[m]), forced[i].counts)}
                       for i in listed]
        if q.touchpoint:
            stage_cell = {k: v for k, v in touchpoints[0].items() if k != "slug"}
        else:
            # The patients who skipped a measure in touchpoints that do not show its counts would
            # be the stage's skippers less the shown touchpoints'.
            unseen = {m: [i for i in range(len(per)) if i in hidden or i in hide_m[m] or m in forced[i].counts
                          or small(skipped_of(per[i], m)) or small(extra_of(per[i], m))] for m in MEASURES}
            counts_hidden = frozenset(m for m in MEASURES if small(sum(skipped_of(per[i], m) for i in unseen[m]))
                                      or small(sum(extra_of(per[i], m) for i in unseen[m])))
            total = total_of(per)
            # What a filter made a touchpoint hide would be the stage less its siblings: the stage
            # hides it too, whether or not the touchpoint is shown.
            # A touchpoint that shows its cell but not a measure: the stage hides the measure too.
            dark = frozenset(m for i, t in enumerate(per) for m in MEASURES if i not in hidden and t.measures.get(m)
                             and cell(t, False, i in no_sent, frozenset(x for x in MEASURES if i in hide_m[x]),
                                      frozenset(x for x in MEASURES if i in hide_top[x]),
                                      forced[i].counts)[m]["suppressed"])
            hide = union([*forced, *(left_out_a_little(total_of([w[(stage, tp)] for tp in tps]), total)
                                     for w in wider), Hide(measures=dark, counts=counts_hidden)])
            stage_cell = cell(total, hide.cell, hide.sent, hide.measures, hide.top, hide.counts)
        out.append({"slug": stage, **stage_cell, "touchpoints": touchpoints})
    return out


def trend(now: dict, before: dict) -> dict:
    out = {}
    for m in MEASURES:
        shown = not now[m]["suppressed"] and not before[m]["suppressed"]
        out[m] = {"previous": before[m]["score"] if shown else None,
                  "change": now[m]["score"] - before[m]["score"] if shown else None}
    return out


def expected_map(raw: Raw, q: Query) -> list[dict]:
    """The stages of the map of q, with the trend against the period before, recomputed."""
    stages, before = expected_cells(raw, q), expected_cells(raw, q.previous())
    for st, prev in zip(stages, before):
        st["trend"] = trend(st, prev)
        for tp, tp_prev in zip(st["touchpoints"], prev["touchpoints"]):
            tp["trend"] = trend(tp, tp_prev)
    return stages


IDENTITY = {"slug", "name", "kind", "position", "trend", "touchpoints", "themes"}


def close(actual, expected, tol: float, where: str) -> None:
    assert actual is not None and abs(actual - expected) <= tol, f"{where}: {actual} != {expected}"


def assert_cell(actual: dict, expected: dict, where: str) -> None:
    assert set(actual) - IDENTITY == set(expected) - IDENTITY, f"{where}: keys {sorted(actual)}"
    assert actual["suppressed"] is expected["suppressed"], f"{where}: suppressed {actual['suppressed']}"
    for key in ("responses", "sent"):
        if key in expected:
            assert actual[key] == expected[key], f"{where}.{key}: {actual[key]} != {expected[key]}"
    if expected.get("response_rate") is None:
        assert actual.get("response_rate") is None, f"{where}.response_rate"
    else:
        close(actual["response_rate"], expected["response_rate"], RATE_TOL, f"{where}.response_rate")
    for m in MEASURES:
        a, e = actual[m], expected[m]
        if e["suppressed"]:
            assert a == {"suppressed": True}, f"{where}.{m}: {a}"
            continue
        assert set(a) == set(e) and a["suppressed"] is False, f"{where}.{m}: {a}"
        assert (a["n"], a["responses"]) == (e["n"], e["responses"]), f"{where}.{m}: {a} != {e}"
        close(a["score"], e["score"], SCORE_TOL, f"{where}.{m}.score")
        assert a["score"] == round(a["score"], 1)
        close(a["ci95"][0], e["ci95"][0], SCORE_TOL, f"{where}.{m}.ci95[0]")
        close(a["ci95"][1], e["ci95"][1], SCORE_TOL, f"{where}.{m}.ci95[1]")
        if e["top_box_pct"] is None:
            assert a["top_box_pct"] is None, f"{where}.{m}.top_box_pct: {a['top_box_pct']}"
        else:
            close(a["top_box_pct"], e["top_box_pct"], SCORE_TOL, f"{where}.{m}.top_box_pct")
    if "trend" in expected:
        for m in MEASURES:
            a, e = actual["trend"][m], expected["trend"][m]
            if e["previous"] is None:
                assert a == {"previous": None, "change": None}, f"{where}.trend.{m}: {a}"
            else:
                close(a["previous"], e["previous"], SCORE_TOL, f"{where}.trend.{m}.previous")
                # The change is that of the figures shown, so a reader's subtraction agrees with it.
                assert a["change"] == round(actual[m]["score"] - a["previous"], 1), f"{where}.trend.{m}"
                close(a["change"], e["change"], 2 * SCORE_TOL, f"{where}.trend.{m}.change")


def assert_map(doc: dict, raw: Raw, q: Query) -> list[dict]:
    """The map document (or one week's or month's of a feed) equals the recomputation of q,
    figure for figure; the expected stages."""
    assert (doc["from"], doc["to"]) == (q.start.isoformat(), q.end.isoformat())
    prev = q.previous()
    assert doc["previous"] == {"from": prev.start.isoformat(), "to": prev.end.isoformat()}
    assert doc["filters"] == {k: v for k, v in q.params().items() if k not in ("from", "to")}
    assert doc["min_reporting_n"] == MIN_N
    expected = expected_map(raw, q)
    assert [s["slug"] for s in doc["stages"]] == [s["slug"] for s in expected]
    for st, exp in zip(doc["stages"], expected):
        assert_cell(st, exp, st["slug"])
        if "themes" in st:  # (a week's or month's map of a feed has none)
            assert_themes({st["slug"]: st["themes"]}, narrowed=bool(wider_queries(q) or q.touchpoint))
        assert [tp["slug"] for tp in st["touchpoints"]] == [tp["slug"] for tp in exp["touchpoints"]]
        for tp, tp_exp in zip(st["touchpoints"], exp["touchpoints"]):
            assert_cell(tp, tp_exp, f"{st['slug']}/{tp['slug']}")
    return expected


def assert_feed_heading(doc: dict, q: Query, interval: str) -> None:
    """A feed cut into weeks or months: the heading, and no whole period's figures beside them."""
    assert set(doc) == {"journey", "name", "from", "to", "interval", "filters", "min_reporting_n", "themes",
                        "periods"}, sorted(doc)
    assert (doc["from"], doc["to"], doc["interval"]) == (q.start.isoformat(), q.end.isoformat(), interval)
    assert doc["filters"] == {k: v for k, v in q.params().items() if k not in ("from", "to")}
    assert doc["min_reporting_n"] == MIN_N
    assert_themes(doc["themes"], narrowed=bool(wider_queries(q) or q.touchpoint))


def assert_themes(themes: dict, narrowed: bool = False) -> None:
    """Themes by stage slug: a term and the count of comments only (with a share, the count would
    give the number of comments). Under a touchpoint, channel, locale or source filter, no count:
    less the same theme's count without the filter, it would count the comments of the patients
    left out."""
    for found in themes.values():
        for theme in found:
            assert set(theme) == {"term", "count"} and isinstance(theme["term"], str), theme
            if narrowed:
                assert theme["count"] is None, theme
            else:
                assert isinstance(theme["count"], int) and theme["count"] >= MIN_N, theme


def shown_figures(doc: dict) -> dict:
    """Every figure the map shows, by path: to tell two maps apart."""
    out = {}
    for st in doc["stages"]:
        for c in [st, *st["touchpoints"]]:
            key = (st["slug"], c.get("kind") and c["slug"])
            out[key + ("responses",)] = c.get("responses")
            for m in MEASURES:
                out[key + (m,)] = c[m].get("score")
    return out


# -- Leaks: no count of 1 to 10, shown or worked out --------------------------------------------

COUNT_KEYS = ("responses", "sent", "n", "count")


def shown_counts(node, path="$"):
    """(path, value) of every count in a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in COUNT_KEYS and isinstance(v, int) and not isinstance(v, bool):
                yield f"{path}.{k}", v
            yield from shown_counts(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from shown_counts(v, f"{path}[{i}]")


def cell_counts(c: dict) -> dict:
    """The counts of patients (and of answers) one cell gives, by kind; None where it gives none:
    those shown, sends less responses, responses less a measure's (patients who skipped it), and
    a top-box share times its answers and the rest."""
    shown = not c["suppressed"]
    out = {"responses": c["responses"] if shown else None,
           "non-responders": c["sent"] - c["responses"] if shown and c["sent"] is not None else None}
    for m in MEASURES:
        s = c[m]
        counted = not s["suppressed"] and s["responses"] is not None
        top = round(s["top_box_pct"] * s["n"] / 100) if counted and s["top_box_pct"] is not None else None
        out |= {f"{m} responses": s["responses"] if counted else None, f"{m} answers": s["n"] if counted else None,
                f"{m} skipped": c["responses"] - s["responses"] if counted else None,
                f"{m} top box": top, f"{m} not top box": s["n"] - top if top is not None else None}
    return out


def known_counts(doc: dict) -> dict:
    """Every count a reader of one map knows, by (stage, touchpoints, kind): per group of a stage's
    listed touchpoints, the sum of those that show the count, plus, when the group holds all that
    do not, the stage's count less all those shown."""
    out = {}
    for st in doc["stages"]:
        slugs = [tp["slug"] for tp in st["touchpoints"]]
        per = [cell_counts(tp) for tp in st["touchpoints"]]
        for kind, whole in cell_counts(st).items():
            values = {slug: p[kind] for slug, p in zip(slugs, per)}
            unseen = {slug for slug, v in values.items() if v is None}
            rest = whole - sum(v for v in values.values() if v is not None) if whole is not None else None
            for size in range(1, len(slugs) + 1):
                for group in combinations(slugs, size):
                    inside = unseen & set(group)
                    if inside and (inside != unseen or rest is None):
                        continue
                    out[(st["slug"], group, kind)] = sum(values[s] for s in group if s not in unseen) + (
                        rest if inside else 0)
    return out


def maps_of(doc: dict) -> list[dict]:
    """The maps of a document: itself, or its weeks or months."""
    return doc.get("periods", [doc])


def assert_no_small_counts(doc: dict) -> None:
    """No count of 1 to 10 is shown, nor can be worked out from the figures of one map."""
    for path, value in shown_counts(doc):
        assert not small(value), f"{path} shows {value}"
    for part in maps_of(doc):
        for (stage, group, kind), value in known_counts(part).items():
            assert not small(value), f"{part['from']}..{part['to']} {stage} {'+'.join(group)}: {kind} is {value}"


# What a filter's map must not differ from its map without that filter by (1 to 10 of): the
# counts of patients the product claims to protect, and the answers they gave on each measure.
DIFFERENCED = ("responses", "non-responders", *(f"{m} {k}" for m in MEASURES for k in (
    "responses", "answers", "skipped", "top box", "not top box")))


def assert_no_small_differences(narrow: dict, wide: dict, kinds=DIFFERENCED) -> int:
    """No count known from a filtered map (shown or worked out) differs by 1 to 10 from the same
    count known from the map without that filter: the difference is the patients left out. The
    number of counts compared."""
    assert len(maps_of(narrow)) == len(maps_of(wide))
    compared = 0
    for a, b in zip(maps_of(narrow), maps_of(wide)):
        assert (a["from"], a["to"]) == (b["from"], b["to"])
        known = known_counts(b)
        for key, value in known_counts(a).items():
            if key[2] in kinds and key in known:
                compared += 1
                assert not small(known[key] - value), (
                    f"{a['from']}..{a['to']} {key[0]} {'+'.join(key[1])}: {key[2]} {value} under "
                    f"{a['filters']}, {known[key]} under {b['filters']}")
    return compared


def assert_csv_has_no_small_counts(text: str) -> None:
    for row in csv.DictReader(io.StringIO(text)):
        if row["n"]:
            assert not small(int(row["n"])), row
        if row["metric"] == "responses" or row["metric"].startswith("theme:"):
            assert row["value"] == "" or not small(int(row["value"])), row


# -- The module's journey ----------------------------------------------------------------------

@dataclass
class World:
    """The module's journey: its slug, its two event sources, an API key, its main period and the
    raw rows everything is recomputed from."""
    slug: str
    sources: tuple[str, str]
    auth: dict
    period: Query  # fourteen days, Wednesday to the Tuesday two weeks after, both versions in it
    monday: date  # the Monday of the period's first week
    raw: Raw


@pytest.fixture(scope="module")
def wide_app(app, settings):
    """The service on the session's database, sending surveys up to 40 days after their moment."""
    wide = create_app({"TESTING": True, **settings, "FEEDBACK_MAX_SEND_DELAY_DAYS": 40})
    yield wide
    with wide.app_context():
        db.engine.dispose()


# (event type, touchpoint, events in the period, events in the period before, share answered).
# The follow-up visit, alone in its stage with answers, is big enough that every channel, locale
# and source leaves out more than ten patients of each count there (responses, and per measure
# its responses, skippers, answers in and out of the top box): it and its stage stay shown under
# those filters. The others, whose top boxes hold a dozen or two answers, hide at least their
# top-box shares under them, and often the cell.
PLAN = [("discharge", "discharge-desk", 40, 30, 0.8), ("discharge", "discharge-information", 26, 20, 0.7),
        ("booking", "phone-booking", 150, 26, 0.6), ("booking", "online-booking", 26, 20, 0.65),
        ("follow_up", "follow-up-visit", 150, 0, 0.8)]
ANSWERED = {tp: share for _, tp, _, _, share in PLAN}


def discharge_v2(content: dict) -> dict:
    """The discharge set's second version: home information dropped, a yes/no friction question
    added, the recommend question made optional."""
    by_key = {q["key"]: q for q in content["questions"]}
    doc = {**content, "questions": [
        by_key["discharge_smooth"],
        {"key": "waited_long", "type": "yes_no", "measure": "friction", "better": "no", "required": False,
         "text": {"en": "Did you wait long to leave?", "es": "¿Esperó mucho para salir?"}},
        {**by_key["recommend"], "required": False},
        by_key["comment"]]}
    return validate_question_set(doc, ["en", "es"])


@pytest.fixture(scope="module")
def world(app, wide_app, outbox, tmp_path_factory) -> World:
    rng = random.Random(SEED)
    slug = load_journey(app, tmp_path_factory.mktemp("journeys"))
    tag = uid("src")
    sources = (f"{tag}-ehr", f"{tag}-kiosk")
    keys = {s: create_key(app, s) for s in sources}
    today = utcnow().date()
    monday = today - timedelta(days=18)
    monday -= timedelta(days=monday.weekday())  # 18 to 24 days ago: every discharge is due by now
    period = Query(monday + timedelta(days=2), monday + timedelta(days=15))
    before = period.previous()
    switch = monday + timedelta(days=8)  # the discharge set's v2 is asked from this day's moments on

    events = []
    for kind, tp, in_period, in_before, _ in PLAN:
        for count, q in ((in_period, period), (in_before, before)):
            events += [(kind, tp, q.start + timedelta(days=rng.randrange(q.days))) for _ in range(count)]
    # Moments just outside both periods, which no map of them may count.
    events += [("discharge", "discharge-desk", before.start - timedelta(days=1))] * 6
    events += [("booking", "phone-booking", period.end + timedelta(days=1))] * 6
    rng.shuffle(events)

    def body(kind, tp, day):
        patient = {"locale": rng.choices(["en", "es", "es-MX"], weights=[6, 3, 1])[0]}
        if rng.random() < 0.45:
            patient["consent_sms"] = False  # reached by email
        source = rng.choices(sources, weights=[11, 9])[0]
        return source, event_body(kind, journey=slug, touchpoint=tp, occurred_at=moment(day, rng), **patient)

    client = wide_app.test_client()

    def post(batch):
        outcomes = []
        for source in sources:
            bodies = [b for s, b in batch if s == source]
            outcomes += post_events(client, keys[source], bodies)
        return outcomes

    bodies = [(e[2] < switch or (e[2] == switch and rng.random() < 0.5), body(*e)) for e in events]
    outcomes = post([b for early, b in bodies if early])
    with app.app_context():
        qs = db.session.scalar(select(Journey).where(Journey.slug == slug)).question_set("discharge")
        assert publish_version(qs, discharge_v2(qs.current.content)).version == 2
        db.session.commit()
        questions = {(s.key, v.version): v.questions for s in
                     db.session.scalar(select(Journey).where(Journey.slug == slug)).question_sets
                     for v in s.versions}
    outcomes += post([b for early, b in bodies if not early])

    assert run_jobs_of(wide_app)["dispatch"]["sent"] >= len(outcomes)
    tokens = tokens_by_invitation(outbox, [o["id"] for o in outcomes])
    survey, csrf, answered = wide_app.test_client(), None, 0
    for inv in outcomes:
        if rng.random() < ANSWERED[inv["touchpoint"]]:
            # The first answer opens the page; the others post the same browser's form token.
            questions_asked = questions[(inv["question_set"], inv["question_set_version"])]
            csrf = answer(survey, tokens[inv["id"]], answer_values(questions_asked, inv["stage"], rng), csrf)
            answered += 1
    raw = read_raw(app, slug)
    assert (len(raw.sends), len(raw.responses)) == (len(outcomes), answered)
    return World(slug, sources, keys[sources[0]], period, monday, raw)


def get_map(client, auth, slug: str, params: dict, csv_: bool = False):
    r = client.get(f"/api/v1/journeys/{slug}/map{'.csv' if csv_ else ''}", query_string=params, headers=auth)
    assert r.status_code == 200, r.text
    return r


def map_doc(client, auth, slug: str, params: dict) -> dict:
    """The map as JSON, checked for small counts shown or worked out."""
    doc = get_map(client, auth, slug, params).get_json()
    assert_no_small_counts(doc)
    return doc


def cells_of(doc: dict) -> dict:
    return {(st["slug"], tp["slug"] if tp is not st else ""): tp for st in doc["stages"]
            for tp in [st, *st["touchpoints"]]}


# -- 1. The map, figure for figure ---------------------------------------------------------------

def test_every_figure_of_the_map_equals_the_recomputation_from_raw_rows(world, client):
    q = world.period
    in_period = [r for r in world.raw.responses if q.keeps(r)]
    # The period holds what the map must keep apart and add up: two touchpoints in a stage, two
    # channels, locales and sources, and both versions of the discharge set.
    assert {r.channel for r in in_period} == {"sms", "email"}
    assert {r.locale for r in in_period} == {"en", "es"}
    assert {r.source for r in in_period} == set(world.sources)
    assert {r.version for r in in_period if r.stage == "discharge"} == {("discharge", 1), ("discharge", 2)}
    assert any(len(r.scores.get("friction", ())) == 2 for r in in_period)  # v2: two friction answers
    assert any(r.stage == "discharge" and "satisfaction" not in r.scores for r in in_period)  # v2: skipped

    doc = map_doc(client, world.auth, world.slug, q.params())
    expected = assert_map(doc, world.raw, q)
    assert doc["journey"] == world.slug

    cells = cells_of(doc)
    # The figures are there to be checked: every touchpoint with answers in the period is shown.
    for key in [("discharge", ""), ("discharge", "discharge-desk"), ("discharge", "discharge-information"),
                ("booking", ""), ("booking", "phone-booking"), ("booking", "online-booking"),
                ("follow-up", ""), ("follow-up", "follow-up-visit")]:
        assert cells[key]["suppressed"] is False, key
        assert cells[key]["satisfaction"]["suppressed"] is False and cells[key]["friction"]["suppressed"] is False
    # A touchpoint without answers hides nothing of its sibling (0 cannot be "worked out").
    assert cells[("follow-up", "telehealth")]["suppressed"] is True
    assert cells[("follow-up", "")]["responses"] == cells[("follow-up", "follow-up-visit")]["responses"]
    # NPS is reported for discharge only (the only set with a 0-10 recommend question), never top box.
    assert cells[("discharge", "")]["nps"]["suppressed"] is False
    assert cells[("discharge", "")]["nps"]["top_box_pct"] is None
    assert cells[("booking", "")]["nps"] == {"suppressed": True}
    # Fewer patients answered NPS than answered the survey (optional in v2): 1 to 10 fewer, so the
    # NPS counts are hidden (its score is not), or they would give that number away.
    answered_nps = sum(1 for r in in_period if r.stage == "discharge" and r.scores.get("nps"))
    assert small(cells[("discharge", "")]["responses"] - answered_nps)
    assert cells[("discharge", "")]["nps"]["responses"] is cells[("discharge", "")]["nps"]["n"] is None
    # Friction has two questions there, one optional: 1 to 10 patients answered both, so its n and
    # responses are hidden (n less responses would count them).
    assert cells[("discharge", "")]["friction"]["n"] is cells[("discharge", "")]["friction"]["responses"] is None
    assert not cells[("discharge", "")]["friction"]["suppressed"]
    # Stages with nothing are there, suppressed, in journey order.
    assert [s["slug"] for s in doc["stages"]] == ["awareness", "booking", "pre-visit", "visit", "discharge",
                                                 "follow-up"]
    assert all(s["suppressed"] for s in doc["stages"] if s["slug"] in ("awareness", "pre-visit", "visit"))
    shown_sent = [c for c in cells.values() if not c["suppressed"] and c["sent"] is not None]
    assert shown_sent and all(0 < c["response_rate"] <= 1 for c in shown_sent)
    assert len(expected) == 6


def test_the_period_defaults_to_the_90_days_up_to_today(world, client):
    today = utcnow().date()
    doc = map_doc(client, world.auth, world.slug, {})
    q = Query(today - timedelta(days=89), today)
    assert_map(doc, world.raw, q)
    # Every moment of the journey is in it.
    cells = cells_of(doc)
    assert cells[("discharge", "")]["responses"] == sum(1 for r in world.raw.responses if r.stage == "discharge")
    # Enough patients did not answer for touchpoints' sends and response rates to be shown too.
    assert [key for key, c in cells.items() if key[1] and c.get("sent")] == [
        ("booking", "phone-booking"), ("booking", "online-booking"), ("discharge", "discharge-desk"),
        ("discharge", "discharge-information"), ("follow-up", "follow-up-visit")]
    # Given only one end, the other is today, or 90 days before the end.
    since = world.period.start
    assert_map(map_doc(client, world.auth, world.slug, {"from": since.isoformat()}), world.raw, Query(since, today))
    until = world.period.end
    assert_map(map_doc(client, world.auth, world.slug, {"to": until.isoformat()}), world.raw,
               Query(until - timedelta(days=89), until))


# -- 2. Filters --------------------------------------------------------------------------------

FILTERS = {
    "sms": {"channel": "sms"}, "email": {"channel": "email"},
    "en": {"locale": "en"}, "es": {"locale": "es"},
    "first-source": {"source": 0}, "second-source": {"source": 1},
    "stage": {"stage": "discharge"}, "touchpoint": {"touchpoint": "discharge-information"},
    "stage-and-touchpoint": {"stage": "booking", "touchpoint": "online-booking"},
    "second-week": {"from": 7, "to": 13}, "first-days": {"from": 2, "to": 6},
    "sms-es-second-source": {"channel": "sms", "locale": "es", "source": 1},
}


def filter_query(world: World, name: str) -> Query:
    """The query of FILTERS[name] over the world's period (days counted from its first Monday)."""
    spec = dict(FILTERS[name])
    if "source" in spec:
        spec["source"] = world.sources[spec["source"]]
    start = world.monday + timedelta(days=spec.pop("from")) if "from" in spec else world.period.start
    end = world.monday + timedelta(days=spec.pop("to")) if "to" in spec else world.period.end
    return Query(start, end, **spec)


@pytest.mark.parametrize("name", FILTERS)
def test_each_filter_changes_the_figures_as_the_recomputation_says(world, client, name):
    q = filter_query(world, name)
    kept = [r for r in world.raw.responses if q.keeps(r)]
    assert 0 < len(kept) < sum(1 for r in world.raw.responses if world.period.keeps(r))

    doc = map_doc(client, world.auth, world.slug, q.params())
    assert_map(doc, world.raw, q)
    whole = map_doc(client, world.auth, world.slug, world.period.params())
    assert shown_figures(doc) != shown_figures(whole)
    if name != "sms-es-second-source":
        # Something is shown, so that the filter's figures were compared, not only hidden.
        assert any(not c["suppressed"] for c in cells_of(doc).values()), name


@pytest.mark.parametrize("name", [name for name, spec in FILTERS.items() if set(spec) & set(NARROWING)])
def test_a_cell_shown_under_a_filter_is_more_than_ten_patients_from_the_cell_without_it(world, client, name):
    """Under a channel, locale or source filter, each count shown or worked out (a cell's or its
    stage less its shown siblings: responses, non-responders, and per measure its responses,
    answers, skippers, answers in and out of the top box) differs from the same count without
    that filter (the other filters kept) by 0 or more than 10: the difference is the patients of
    the other channels, locales or sources."""
    q = filter_query(world, name)
    doc = map_doc(client, world.auth, world.slug, q.params())
    compared = 0
    for wider in wider_queries(q):
        compared += assert_no_small_differences(doc, map_doc(client, world.auth, world.slug, wider.params()))
        # The same, week by week, in the feed cut into weeks.
        weekly = {"interval": "week"}
        compared += assert_no_small_differences(
            map_doc(client, world.auth, world.slug, {**q.params(), **weekly}),
            map_doc(client, world.auth, world.slug, {**wider.params(), **weekly}))
    # The rule had work to do: touchpoints of 11 or more patients under the filter with 1 to 10 left
    # out by some count (assert_map checks what they hide); and shown counts were compared.
    tallies, wider = tallies_of(world.raw, q), [tallies_of(world.raw, w) for w in wider_queries(q)]
    held_back = [key for key, t in tallies.items() if t.responses >= MIN_N and any(
        left_out_a_little(w[key], t) for w in wider)]
    if name != "sms-es-second-source":  # (too few patients there to show or hide anything)
        assert held_back and compared, name


@pytest.mark.parametrize("name", ["touchpoint", "stage-and-touchpoint"])
def test_the_touchpoint_filter_picks_the_cell_of_the_map_without_it(world, client, name):
    """The touchpoint is the same cell, trend and all, as in the map of its whole stage; the stage
    row is that cell too (a stage of one touchpoint)."""
    q = filter_query(world, name)
    doc = map_doc(client, world.auth, world.slug, q.params())
    [stage] = doc["stages"]
    [tp] = stage["touchpoints"]
    unpicked = map_doc(client, world.auth, world.slug, replace(q, touchpoint=None).params())
    assert tp == cells_of(unpicked)[(stage["slug"], q.touchpoint)] and tp["suppressed"] is False
    identity = ("slug", "name", "kind", "position", "touchpoints", "themes")
    assert {k: v for k, v in stage.items() if k not in identity} == {k: v for k, v in tp.items() if k not in identity}


def test_filters_echo_in_the_document_and_unknown_values_match_nothing(world, client):
    q = Query(world.period.start, world.period.end, locale="fr", source="no-such-source")
    doc = map_doc(client, world.auth, world.slug, q.params())
    assert doc["filters"] == {"locale": "fr", "source": "no-such-source"}
    assert all(c["suppressed"] for c in cells_of(doc).values())
    assert_map(doc, world.raw, q)


# -- 3. Suppression at the threshold, between siblings, between filters ------------------------

GOOD_BOOKING = {"booking_ease": "7", "booking_satisfaction": "5"}
NO_SATISFACTION = {"booking_ease": "7"}  # the booking set's satisfaction question left blank
ON_HOLD = {"booking_ease": "2", "booking_satisfaction": "2", "comment": "I was on hold on the phone line forever."}


def small_journey(wide_app, outbox, slug: str, auth, plan: dict[tuple, int], kind: str = "booking") -> list[str]:
    """Per (touchpoint, day) or (touchpoint, day, "email"), that many events of the kind (booking
    unless told) of the journey, sent (by SMS unless told); their survey tokens, in the plan's order."""
    bodies = [event_body(kind, journey=slug, touchpoint=key[0], consent_sms=key[2:] != ("email",),
                         occurred_at=datetime.combine(key[1], time(12, 0), tzinfo=timezone.utc))
              for key, count in plan.items() for _ in range(count)]
    outcomes = post_events(wide_app.test_client(), auth, bodies)
    run_jobs_of(wide_app)
    tokens = tokens_by_invitation(outbox, [o["id"] for o in outcomes])
    assert [o["channel"] for o in outcomes] == [key[2] if key[2:] else "sms" for key, count in plan.items()
                                                for _ in range(count)]
    return [tokens[o["id"]] for o in outcomes]


def satisfaction_optional(app, slug: str) -> None:
    """Publish the journey's booking set again with its satisfaction question optional."""
    with app.app_context():
        qs = db.session.scalar(select(Journey).where(Journey.slug == slug)).question_set("booking")
        content = qs.current.content
        doc = {**content, "questions": [{**q, "required": False} if q["key"] == "booking_satisfaction" else q
                                        for q in content["questions"]]}
        assert publish_version(qs, validate_question_set(doc, ["en", "es"])).version == 2
        db.session.commit()


def answer_all(app, tokens: list[str], values: dict = GOOD_BOOKING) -> None:
    """Answer each survey the same way, from one browser."""
    survey, csrf = app.test_client(), None
    for token in tokens:
        csrf = answer(survey, token, values, csrf)


def one_day(day: date) -> dict:
    """The query parameters of a period of one day."""
    return {"from": day.isoformat(), "to": day.isoformat()}


def test_ten_responses_are_hidden_and_the_eleventh_shows_the_touchpoint(app, wide_app, client, auth, outbox,
                                                                       new_journey):
    day = utcnow().date() - timedelta(days=3)
    slug = new_journey()
    tokens = small_journey(wide_app, outbox, slug, auth, {("phone-booking", day): 11})
    params = one_day(day)
    answer_all(app, tokens[:10])
    doc = map_doc(client, auth, slug, params)
    booking = cells_of(doc)
    for key in (("booking", ""), ("booking", "phone-booking")):
        assert booking[key]["suppressed"] is True and "responses" not in booking[key] and "sent" not in booking[key]
        assert all(booking[key][m] == {"suppressed": True} for m in MEASURES)
    text = get_map(client, auth, slug, params, csv_=True).text
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r["stage"] == "booking"]
    assert rows and all(r["value"] == "" and r["n"] == "" and r["suppressed"] == "true" for r in rows)
    assert_map(doc, read_raw(app, slug), Query(day, day))

    answer_all(app, tokens[10:])
    doc = map_doc(client, auth, slug, params)
    cells = cells_of(doc)
    for key in (("booking", ""), ("booking", "phone-booking")):
        c = cells[key]
        assert (c["suppressed"], c["responses"], c["sent"], c["response_rate"]) == (False, 11, 11, 1.0)
        assert c["satisfaction"] == {"suppressed": False, "score": 100.0, "n": 11, "responses": 11,
                                     "top_box_pct": 100.0, "ci95": [100.0, 100.0]}
        assert c["friction"]["score"] == 0.0 and c["friction"]["top_box_pct"] == 0.0
    assert cells[("booking", "online-booking")]["suppressed"] is True  # none there: nothing to hide for it
    assert_map(doc, read_raw(app, slug), Query(day, day))


@pytest.fixture
def thirty_and_five(app, wide_app, auth, outbox, new_journey):
    """A booking stage of 30 answers by phone and 5 online on one day."""
    day = utcnow().date() - timedelta(days=3)
    slug = new_journey()
    answer_all(app, small_journey(wide_app, outbox, slug, auth, {("phone-booking", day): 30,
                                                                 ("online-booking", day): 5}))
    return slug, day


def test_a_small_touchpoint_hides_its_sibling_so_it_cannot_be_subtracted(app, client, auth, thirty_and_five):
    slug, day = thirty_and_five
    params = one_day(day)
    doc = map_doc(client, auth, slug, params)
    cells = cells_of(doc)
    assert cells[("booking", "")]["responses"] == 35 and cells[("booking", "")]["sent"] == 35
    # 5 is under the threshold; showing the 30 would give it away as 35 - 30.
    assert cells[("booking", "online-booking")]["suppressed"] is True
    assert cells[("booking", "phone-booking")]["suppressed"] is True
    assert "responses" not in cells[("booking", "phone-booking")]
    assert_map(doc, read_raw(app, slug), Query(day, day))
    text = get_map(client, auth, slug, params, csv_=True).text
    assert_csv_has_no_small_counts(text)
    touchpoint_rows = [r for r in csv.DictReader(io.StringIO(text)) if r["stage"] == "booking" and r["touchpoint"]]
    assert len(touchpoint_rows) == 2 * 7
    assert all(r["value"] == "" and r["suppressed"] == "true" for r in touchpoint_rows)


def test_the_touchpoint_filter_does_not_give_away_a_hidden_sibling(app, client, auth, thirty_and_five):
    """The unfiltered map hides the 30 so that the 5 beside it cannot be worked out from the
    stage's 35; the same period filtered to that touchpoint must not show the 30 either."""
    slug, day = thirty_and_five
    params = one_day(day)
    stage_total = cells_of(map_doc(client, auth, slug, params))[("booking", "")]["responses"]
    doc = map_doc(client, auth, slug, {**params, "touchpoint": "phone-booking"})
    for key, c in cells_of(doc).items():
        if key[0] == "booking" and not c["suppressed"]:
            assert not small(stage_total - c["responses"]), (
                f"{key}: shows {c['responses']} responses, so online-booking has {stage_total} - "
                f"{c['responses']} = {stage_total - c['responses']}")
    assert cells_of(doc)[("booking", "")]["suppressed"] is True
    assert_map(doc, read_raw(app, slug), Query(day, day, touchpoint="phone-booking"))
    # Filtered to the online touchpoint: its 5 hidden, in the stage row (its cell) too.
    doc = map_doc(client, auth, slug, {**params, "stage": "booking", "touchpoint": "online-booking"})
    assert all(c["suppressed"] for c in cells_of(doc).values())


def test_weekly_blocks_do_not_give_away_a_small_week(app, wide_app, client, auth, outbox, new_journey):
    """A week of 5 answers is hidden beside a week of 30. Cut into weeks, the feed gives each
    week's map and not the whole period's too, whose 35 less the 30 would be the hidden week."""
    monday = utcnow().date() - timedelta(days=7)
    monday -= timedelta(days=monday.weekday())
    sunday = monday - timedelta(days=1)
    slug = new_journey()
    answer_all(app, small_journey(wide_app, outbox, slug, auth,
                                  {("phone-booking", sunday): 30, ("phone-booking", monday): 5}))
    params = {"from": sunday.isoformat(), "to": monday.isoformat(), "interval": "week"}
    doc = get_map(client, auth, slug, params).get_json()
    assert_feed_heading(doc, Query(sunday, monday), "week")
    assert [(p["from"], p["to"]) for p in doc["periods"]] == [(sunday.isoformat(),) * 2, (monday.isoformat(),) * 2]
    raw = read_raw(app, slug)
    for part in doc["periods"]:
        assert_map(part, raw, Query(date.fromisoformat(part["from"]), date.fromisoformat(part["to"])))
    assert cells_of(doc["periods"][0])[("booking", "phone-booking")]["responses"] == 30
    assert cells_of(doc["periods"][1])[("booking", "phone-booking")]["suppressed"] is True
    # Each count of the document is one week's: none spans both weeks, to take the shown one from.
    assert [path for path, _ in shown_counts(doc) if not path.startswith("$.periods[")] == []
    assert_no_small_counts(doc)
    text = get_map(client, auth, slug, params, csv_=True).text
    rows = assert_csv_equals_json(text, doc, slug)
    assert {(r["period_start"], r["period_end"]) for r in rows} == {(sunday.isoformat(),) * 2,
                                                                  (monday.isoformat(),) * 2}
    assert_csv_has_no_small_counts(text)


@pytest.fixture
def by_sms_and_email(app, wide_app, auth, outbox, new_journey):
    """A phone-booking touchpoint of 30 answers on one day, 25 by text message and 5 by email, all
    about waiting on hold."""
    day = utcnow().date() - timedelta(days=3)
    slug = new_journey()
    answer_all(app, small_journey(wide_app, outbox, slug, auth, {("phone-booking", day): 25,
                                                                 ("phone-booking", day, "email"): 5}), ON_HOLD)
    return slug, day


def test_a_channel_filter_does_not_give_away_the_other_channel(app, client, auth, by_sms_and_email):
    """Filtered to SMS, the touchpoint's 25 would give away the 5 email patients as 30 - 25: neither
    it nor its stage shows it, and the unfiltered 30 stays shown."""
    slug, day = by_sms_and_email
    raw, whole = read_raw(app, slug), map_doc(client, auth, slug, one_day(day))
    assert_map(whole, raw, Query(day, day))
    assert cells_of(whole)[("booking", "phone-booking")]["responses"] == 30
    assert cells_of(whole)[("booking", "")]["responses"] == 30
    sms = map_doc(client, auth, slug, {**one_day(day), "channel": "sms"})
    assert_map(sms, raw, Query(day, day, channel="sms"))
    assert cells_of(sms)[("booking", "phone-booking")]["suppressed"] is True
    assert cells_of(sms)[("booking", "")]["suppressed"] is True
    assert 25 not in known_counts(sms).values()
    assert_no_small_differences(sms, whole)
    email = map_doc(client, auth, slug, {**one_day(day), "channel": "email"})
    assert_map(email, raw, Query(day, day, channel="email"))
    assert all(c["suppressed"] for c in cells_of(email).values())
    # The same with the touchpoint filter too, and in the CSV.
    picked = map_doc(client, auth, slug, {**one_day(day), "channel": "sms", "touchpoint": "phone-booking"})
    assert all(c["suppressed"] for c in cells_of(picked).values())
    text = get_map(client, auth, slug, {**one_day(day), "channel": "sms"}, csv_=True).text
    assert [r for r in csv.DictReader(io.StringIO(text)) if r["stage"] == "booking" and r["value"] != ""
            and not r["metric"].startswith("theme:")] == []  # (themes: the next test)


def test_a_channel_filter_gives_no_theme_count_of_the_other_channel(app, client, auth, by_sms_and_email):
    """The friction theme counts the touchpoint's 30 comments about waiting on hold without a
    filter. By SMS it would count their 25, and 30 - 25 is the 5 email patients who complained:
    under a channel filter the theme is named without its count, in the JSON and the CSV."""
    slug, day = by_sms_and_email
    whole = map_doc(client, auth, slug, one_day(day))
    counts = {(st["slug"], t["term"]): t["count"] for st in whole["stages"] for t in st["themes"]}
    assert counts and all(count >= MIN_N for count in counts.values()), "the unfiltered map counts its themes"
    params = {**one_day(day), "channel": "sms"}
    sms = map_doc(client, auth, slug, params)
    terms = {(st["slug"], t["term"]): t["count"] for st in sms["stages"] for t in st["themes"]}
    assert terms and set(terms.values()) == {None}, terms
    assert_themes({st["slug"]: st["themes"] for st in sms["stages"]}, narrowed=True)
    text = get_map(client, auth, slug, params, csv_=True).text
    assert_csv_equals_json(text, sms, slug)
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r["metric"].startswith("theme:")]
    assert len(rows) == len(terms)
    assert all((r["value"], r["n"], r["suppressed"]) == ("", "", "true") for r in rows), rows


def test_the_touchpoint_filter_gives_no_theme_count_of_the_other_touchpoint(app, wide_app, client, auth, outbox,
                                                                           new_journey):
    """Phone booking: 30 answers, all complaining of waiting on hold; online booking: 12 answers,
    5 of them complaining of the same. Both touchpoints are shown, and the booking theme counts
    the 35 complaints. Filtered to phone booking the theme counts its 30, so 35 - 30 is the 5
    online patients who complained, a count the online touchpoint's own theme would never show.
    The touchpoint filter narrows the comments like a channel filter does: theme counts are left
    out under it too."""
    day = utcnow().date() - timedelta(days=3)
    slug = new_journey()
    tokens = small_journey(wide_app, outbox, slug, auth, {("phone-booking", day): 30, ("online-booking", day): 12})
    answer_all(app, tokens[:35], ON_HOLD)
    answer_all(app, tokens[35:], GOOD_BOOKING)
    raw = read_raw(app, slug)
    whole = map_doc(client, auth, slug, one_day(day))
    assert_map(whole, raw, Query(day, day))
    assert [c["responses"] for c in cells_of(whole).values() if c.get("responses")] == [42, 30, 12]
    counts = {t["term"]: t["count"] for st in whole["stages"] for t in st["themes"]}
    assert counts and set(counts.values()) == {35}, counts
    params = {**one_day(day), "touchpoint": "phone-booking"}
    picked = map_doc(client, auth, slug, params)
    assert_map(picked, raw, Query(day, day, touchpoint="phone-booking"))
    themes = [t for st in picked["stages"] for t in st["themes"]]
    assert themes and all(t["count"] is None for t in themes), themes


def test_a_touchpoint_hidden_under_a_filter_is_not_its_stage_less_its_siblings(app, wide_app, client, auth,
                                                                               outbox, new_journey):
    """Phone booking: 25 answers by SMS, 5 by email; online booking: 20 and 20. Filtered to SMS the
    phone touchpoint is hidden (25 against 30). Were online booking (20) and the stage (45) shown,
    each far enough from its unfiltered figure, the phone's 25 would be 45 - 20, and 30 - 25 the 5
    email patients: the stage goes with the touchpoint the filter hides."""
    day = utcnow().date() - timedelta(days=3)
    slug = new_journey()
    answer_all(app, small_journey(wide_app, outbox, slug, auth, {
        ("phone-booking", day): 25, ("phone-booking", day, "email"): 5,
        ("online-booking", day): 20, ("online-booking", day, "email"): 20}))
    raw, whole = read_raw(app, slug), map_doc(client, auth, slug, one_day(day))
    sms = map_doc(client, auth, slug, {**one_day(day), "channel": "sms"})
    assert_map(sms, raw, Query(day, day, channel="sms"))
    cells = cells_of(sms)
    assert cells[("booking", "phone-booking")]["suppressed"] is True
    assert cells[("booking", "")]["suppressed"] is True
    assert cells[("booking", "online-booking")]["responses"] == 20  # 20 left out: shown
    assert_no_small_differences(sms, whole)


@pytest.fixture(scope="module")
def skippers_by_channel(app, wide_app, outbox, tmp_path_factory):
    """A phone-booking touchpoint on one day, its satisfaction question optional: 60 answers by
    text message (36 very satisfied, 12 less so, 12 skipped the question) and 40 by email (24, 8
    and 8)."""
    day = utcnow().date() - timedelta(days=3)
    slug = load_journey(app, tmp_path_factory.mktemp("skippers"))
    satisfaction_optional(app, slug)
    auth = create_key(app, uid("skippers"))
    tokens = small_journey(wide_app, outbox, slug, auth, {("phone-booking", day): 60,
                                                          ("phone-booking", day, "email"): 40})
    less = {**GOOD_BOOKING, "booking_satisfaction": "4"}
    for group in (tokens[:60], tokens[60:]):
        fifth = len(group) // 5
        answer_all(wide_app, group[:3 * fifth])
        answer_all(wide_app, group[3 * fifth:4 * fifth], less)
        answer_all(wide_app, group[4 * fifth:], NO_SATISFACTION)
    raw = read_raw(app, slug)
    docs = {}
    for channel in (None, "sms", "email"):
        q = Query(day, day, channel=channel)
        docs[channel] = map_doc(app.test_client(), auth, slug, q.params())
        assert_map(docs[channel], raw, q)
    return docs


def test_a_channel_filter_does_not_give_away_the_other_channels_skippers(skippers_by_channel):
    """Without a filter 100 answers, 80 on satisfaction (20 skipped it); by SMS 60 and 48 (12
    skipped). Neither skip count is 1 to 10 and the filter leaves out 40 and 32, yet 20 - 12 would
    be the 8 email patients who skipped the question, whose counts the email map hides: the SMS
    map hides satisfaction's n and responses, in the touchpoint and its stage, and nothing more
    for it (the cell, its score and its friction stay)."""
    docs = skippers_by_channel
    email = cells_of(docs["email"])[("booking", "phone-booking")]
    assert email["responses"] == 40 and email["satisfaction"]["responses"] is None  # hidden there ...
    for key in (("booking", "phone-booking"), ("booking", "")):
        sms = cells_of(docs["sms"])[key]
        assert (sms["suppressed"], sms["responses"], sms["sent"]) == (False, 60, 60), key
        satisfaction = sms["satisfaction"]
        assert (satisfaction["n"], satisfaction["responses"]) == (None, None), key  # ... and here
        assert satisfaction["suppressed"] is False and satisfaction["score"] == 93.8, key  # 36 x 100 + 12 x 75
        assert (sms["friction"]["n"], sms["friction"]["responses"]) == (60, 60), key
    assert not any(key[2] == "satisfaction skipped" for key in known_counts(docs["sms"]))
    assert_no_small_differences(docs["sms"], docs[None])


def test_a_channel_filter_does_not_give_away_the_other_channels_top_box(skippers_by_channel):
    """Satisfaction's top box: 60 of 80 answers without a filter, 36 of 48 by SMS, neither a count
    nor a complement of 1 to 10; but 20 - 12 would be the 8 email answers out of the top box,
    which the email map hides (its share would give them as 8 of 32). The 12 of the SMS map are
    not shown, nor can they be worked out."""
    docs = skippers_by_channel
    assert cells_of(docs["email"])[("booking", "phone-booking")]["satisfaction"]["top_box_pct"] is None
    whole = cells_of(docs[None])[("booking", "phone-booking")]["satisfaction"]
    assert (whole["n"], whole["top_box_pct"]) == (80, 75.0)
    for key in (("booking", "phone-booking"), ("booking", "")):
        assert cells_of(docs["sms"])[key]["satisfaction"]["top_box_pct"] is None, key
    assert not any(key[2] == "satisfaction not top box" for key in known_counts(docs["sms"]))
    assert_no_small_differences(docs["sms"], docs[None], kinds=("satisfaction not top box",))


def effort(value: int) -> dict:
    """A booking answer: very satisfied, booking_ease `value` (1: friction 100, in its top box;
    7: friction 0)."""
    return {**GOOD_BOOKING, "booking_ease": str(value)}


def test_a_channel_filter_hides_only_the_top_box_share_the_other_channel_would_give_away(
        app, wide_app, client, auth, outbox, new_journey):
    """Phone booking: 30 answers by SMS, 12 of them in friction's top box (booking was very hard),
    and 20 by email, 5 of them so; online booking: 20 and 20, none so. By SMS the touchpoints are
    20 patients (and 20 answers on each measure) short of the unfiltered ones, and nobody skipped
    or failed to answer: the only difference of 1 to 10 is phone friction's top box, 17 - 12 = 5
    email answers. So the phone cell keeps its responses, sent count, scores and counts, and only
    friction's top-box share is hidden, there and in the stage; online booking shows its own."""
    day = utcnow().date() - timedelta(days=3)
    slug = new_journey()
    tokens = small_journey(wide_app, outbox, slug, auth, {
        ("phone-booking", day): 30, ("phone-booking", day, "email"): 20,
        ("online-booking", day): 20, ("online-booking", day, "email"): 20})
    # Friction answers spread over the scale, so the score does not give the top box away (a yes/no
    # measure's does: the next test).
    sms_answers = [effort(1)] * 12 + [effort(3)] * 6 + [effort(5)] * 6 + [effort(7)] * 6
    email_answers = [effort(1)] * 5 + [effort(2)] * 5 + [effort(4)] * 5 + [effort(6)] * 5
    survey, csrf = wide_app.test_client(), None
    for token, values in zip(tokens, sms_answers + email_answers):
        csrf = answer(survey, token, values, csrf)
    answer_all(app, tokens[50:])
    raw, day_q = read_raw(app, slug), Query(day, day)
    whole = map_doc(client, auth, slug, one_day(day))
    assert_map(whole, raw, day_q)
    phone = cells_of(whole)[("booking", "phone-booking")]
    assert (phone["responses"], phone["friction"]["n"], phone["friction"]["top_box_pct"]) == (50, 50, 34.0)

    q = replace(day_q, channel="sms")
    tallies, unfiltered = tallies_of(raw, q), tallies_of(raw, day_q)
    # The one difference of 1 to 10: phone friction's top box (the rule before hid the whole cell and
    # its stage for it).
    assert left_out_a_little(unfiltered[("booking", "phone-booking")], tallies[("booking", "phone-booking")]) == (
        Hide(top=frozenset({"friction"})))
    assert not left_out_a_little(unfiltered[("booking", "online-booking")], tallies[("booking", "online-booking")])
    sms = map_doc(client, auth, slug, q.params())
    assert_map(sms, raw, q)
    cells = cells_of(sms)
    for key, responses in ((("booking", "phone-booking"), 30), (("booking", ""), 50)):
        c = cells[key]
        assert (c["suppressed"], c["responses"], c["sent"], c["response_rate"]) == (False, responses, responses, 1.0)
        assert c["satisfaction"] == {"suppressed": False, "score": 100.0, "n": responses, "responses": responses,
                                     "top_box_pct": 100.0, "ci95": [100.0, 100.0]}, key
        friction = c["friction"]
        assert friction["suppressed"] is False and friction["score"] is not None and friction["ci95"], key
        assert (friction["n"], friction["responses"], friction["top_box_pct"]) == (responses, responses, None), key
    assert cells[("booking", "phone-booking")]["friction"]["score"] == 60.0  # (12 x 100 + 6 x 66.7 + 6 x 33.3) / 30
    online = cells[("booking", "online-booking")]
    assert (online["responses"], online["friction"]["top_box_pct"]) == (20, 0.0)
    assert not any(key[2] == "friction top box" and key[1] != ("online-booking",) for key in known_counts(sms))
    assert assert_no_small_differences(sms, whole)
    text = get_map(client, auth, slug, q.params(), csv_=True).text
    assert_csv_equals_json(text, sms, slug)
    assert_csv_has_no_small_counts(text)


def test_a_yes_no_measure_does_not_give_away_its_hidden_top_box_by_its_score(app, wide_app, client, auth, outbox,
                                                                            new_journey):
    """KNOWN LEAK, in the product: this test fails until the finer narrowing rule closes it.

    The follow-up set's friction is one yes/no question ("Did you get your follow-up appointment
    when you needed it?"), so each answer scores 100 (no: in the top box) or 0, and the score IS
    the top-box share. Follow-up visit: 30 answers by SMS, 12 of them "no"; 20 by email, 5 "no".
    Without a filter friction shows 34.0 of 50 answers, 17 "no". By SMS the answers in the top
    box differ by 17 - 12 = 5, so the rule hides friction's top-box share, but keeps its score
    (40.0) and n (30): 40.0 x 30 / 100 = 12, and 17 - 12 = 5 email patients did not get their
    appointment in time. The rule that hid the whole cell for any difference did not show it."""
    day = utcnow().date() - timedelta(days=3)
    slug = new_journey()
    tokens = small_journey(wide_app, outbox, slug, auth, {("follow-up-visit", day): 30,
                                                          ("follow-up-visit", day, "email"): 20}, kind="follow_up")
    late, in_time = {"followup_timely": "no", "followup_satisfaction": "5"}, {"followup_timely": "yes",
                                                                            "followup_satisfaction": "5"}
    survey, csrf = wide_app.test_client(), None
    for token, values in zip(tokens, [late] * 12 + [in_time] * 18 + [late] * 5 + [in_time] * 15):
        csrf = answer(survey, token, values, csrf)
    raw = read_raw(app, slug)
    whole = map_doc(client, auth, slug, one_day(day))
    assert_map(whole, raw, Query(day, day))
    visit = cells_of(whole)[("follow-up", "follow-up-visit")]["friction"]
    assert (visit["score"], visit["top_box_pct"], visit["n"]) == (34.0, 34.0, 50)  # the score is the share
    whole_top = round(visit["top_box_pct"] * visit["n"] / 100)
    q = Query(day, day, channel="sms")
    sms = map_doc(client, auth, slug, q.params())
    assert_map(sms, raw, q)  # the product does what its rule says ...
    for key in (("follow-up", "follow-up-visit"), ("follow-up", "")):
        friction = cells_of(sms)[key]["friction"]
        assert friction.get("top_box_pct") is None, key
        if not friction["suppressed"] and friction["n"] is not None:
            # ... but a yes/no measure's score times its answers is its top box all the same.
            worked_out = round(friction["score"] * friction["n"] / 100)
            assert not small(whole_top - worked_out), (
                f"{key}: friction {friction['score']} of {friction['n']} answers is {worked_out} 'no', "
                f"so {whole_top} - {worked_out} = {whole_top - worked_out} patients of the other channel")


def test_nothing_in_the_json_or_csv_shows_a_count_of_one_to_ten(world, client):
    for extra in ({}, {"channel": "email"}, {"locale": "es"}, {"stage": "discharge", "channel": "sms"},
                  {"interval": "month"}, {"source": world.sources[1], "interval": "week"}, {"interval": "week"}):
        params = {**world.period.params(), **extra}
        doc = get_map(client, world.auth, world.slug, params).get_json()
        assert_no_small_counts(doc)
        assert_csv_has_no_small_counts(get_map(client, world.auth, world.slug, params, csv_=True).text)
    # ... while the raw data has plenty of them under those filters: the check had work to do.
    per_channel = defaultdict(int)
    for r in world.raw.responses:
        if world.period.keeps(r):
            per_channel[(r.touchpoint, r.channel)] += 1
    assert any(small(count) for count in per_channel.values())


def test_patients_who_skipped_a_measure_are_not_a_small_count(world, client):
    """A cell's responses less its measure's responses is the number of patients who answered none
    of that measure's questions: like sends less responses, a count of patients. Where it is 1 to
    10, the measure's n and responses are not shown (its score and interval are)."""
    hidden = []
    for params in (world.period.params(), {**world.period.params(), "channel": "sms"},
                   {**world.period.params(), "source": world.sources[0]}):
        doc = map_doc(client, world.auth, world.slug, params)
        for key, c in cells_of(doc).items():
            for m in MEASURES:
                s = c[m]
                if c["suppressed"] or s["suppressed"]:
                    continue
                if s["responses"] is None:
                    assert s["n"] is None and s["score"] is not None and s["ci95"], (params, key, m)
                    hidden.append((params.get("channel") or params.get("source") or "all", key, m))
                else:
                    assert not small(c["responses"] - s["responses"]), (params, key, m, c["responses"], s)
    assert hidden  # the discharge set's second version has optional questions: some counts were hidden


def test_ten_patients_skipping_a_measure_hide_its_counts_and_eleven_show_them(app, wide_app, client, auth,
                                                                             outbox, new_journey):
    """Phone booking: 20 answer the optional satisfaction question, 10 skip it; online booking: 12
    answer, none of them it. The phone's satisfaction n and responses are hidden, and so are the
    stage's (20 too, 22 skipped there: it would give the phone's 10 away as 30 - 20); the 11th
    skipper shows both."""
    day = utcnow().date() - timedelta(days=3)
    slug = new_journey()
    satisfaction_optional(app, slug)
    tokens = small_journey(wide_app, outbox, slug, auth, {("phone-booking", day): 31, ("online-booking", day): 12})
    answer_all(app, tokens[:20])
    answer_all(app, tokens[20:30] + tokens[31:], NO_SATISFACTION)
    params, q = one_day(day), Query(day, day)

    doc = map_doc(client, auth, slug, params)
    assert_map(doc, read_raw(app, slug), q)
    cells = cells_of(doc)
    phone, stage = cells[("booking", "phone-booking")], cells[("booking", "")]
    assert (phone["responses"], stage["responses"]) == (30, 42)
    for c in (phone, stage):
        assert c["satisfaction"] == {"suppressed": False, "score": 100.0, "n": None, "responses": None,
                                     "top_box_pct": 100.0, "ci95": [100.0, 100.0]}
        assert (c["friction"]["n"], c["friction"]["responses"]) == (c["responses"], c["responses"])
    assert cells[("booking", "online-booking")]["satisfaction"] == {"suppressed": True}
    text = get_map(client, auth, slug, params, csv_=True).text
    assert_csv_equals_json(text, doc, slug)
    rows = {(r["touchpoint"], r["metric"]): r for r in csv.DictReader(io.StringIO(text)) if r["stage"] == "booking"}
    for tp in ("", "phone-booking"):
        # The score stays, without its n.
        assert (rows[(tp, "satisfaction")]["value"], rows[(tp, "satisfaction")]["n"]) == ("100.0", "")
        assert (rows[(tp, "satisfaction_top_box_pct")]["value"], rows[(tp, "satisfaction_top_box_pct")]["n"]) == (
            "100.0", "")

    answer_all(app, tokens[30:31], NO_SATISFACTION)
    doc = map_doc(client, auth, slug, params)
    assert_map(doc, read_raw(app, slug), q)
    cells = cells_of(doc)
    for key in (("booking", "phone-booking"), ("booking", "")):
        assert (cells[key]["satisfaction"]["n"], cells[key]["satisfaction"]["responses"]) == (20, 20), key
    rows = {(r["touchpoint"], r["metric"]): r for r in csv.DictReader(io.StringIO(
        get_map(client, auth, slug, params, csv_=True).text)) if r["stage"] == "booking"}
    assert rows[("phone-booking", "satisfaction")]["n"] == rows[("", "satisfaction")]["n"] == "20"


# -- 4. Trend against the previous period --------------------------------------------------------

def test_previous_and_change_equal_the_recomputation_over_the_period_before(world, client):
    q = world.period
    doc = map_doc(client, world.auth, world.slug, q.params())
    assert_map(doc, world.raw, q)  # checks every trend against the recomputation of q.previous()
    before = map_doc(client, world.auth, world.slug, q.previous().params())
    assert_map(before, world.raw, q.previous())
    compared = 0
    for key, c in cells_of(doc).items():
        prev = cells_of(before)[key]
        for m in MEASURES:
            t = c["trend"][m]
            if t["previous"] is None:
                assert c[m]["suppressed"] or prev[m]["suppressed"], (key, m)
                continue
            # The period before, asked for on its own, shows the same figure.
            assert t["previous"] == prev[m]["score"], (key, m)
            assert t["change"] == round(c[m]["score"] - prev[m]["score"], 1)
            compared += 1
    assert compared >= 8  # discharge and booking, stage and touchpoints, satisfaction and friction


# -- 5. CSV ------------------------------------------------------------------------------------

METRICS = ("satisfaction", "satisfaction_top_box_pct", "friction", "friction_top_box_pct", "nps", "responses",
           "response_rate")


def number(text: str):
    if text == "":
        return None
    return int(text) if text.lstrip("-").isdigit() else float(text)


def expected_rows(doc: dict):
    """(stage, touchpoint, level, metric, value, n, ci, previous, change) of one map of the feed,
    from its JSON, then its themes' rows; of a feed heading (weeks or months), its themes' only."""
    for st in doc.get("stages", []):
        for level, c in [("stage", st), *(("touchpoint", tp) for tp in st["touchpoints"])]:
            tp = c["slug"] if level == "touchpoint" else ""
            for metric in METRICS:
                measure = metric.removesuffix("_top_box_pct")
                if metric in MEASURES:
                    s = c[metric]
                    shown = not s["suppressed"]
                    yield (st["slug"], tp, level, metric, s.get("score"), s.get("responses"),
                           s["ci95"] if shown else None, c["trend"][metric]["previous"], c["trend"][metric]["change"])
                elif metric != measure:
                    pct = c[measure].get("top_box_pct")
                    n = c[measure]["n"] if pct is not None else None
                    yield st["slug"], tp, level, metric, pct, n, None, None, None
                elif metric == "responses":
                    yield st["slug"], tp, level, metric, c.get("responses"), c.get("responses"), None, None, None
                else:
                    rate = c.get("response_rate")
                    yield st["slug"], tp, level, metric, rate, c["sent"] if rate is not None else None, None, None, None
    themes = doc["themes"] if "themes" in doc else {st["slug"]: st.get("themes", []) for st in doc["stages"]}
    for slug, found in themes.items():
        for theme in found:
            yield slug, "", "stage", f"theme: {theme['term']}", theme["count"], theme["count"], None, None, None


def assert_csv_equals_json(text: str, doc: dict, slug: str) -> list[dict]:
    """The CSV is the JSON's figures, a row per stage or touchpoint, period and metric; its rows."""
    lines = text.splitlines()
    assert tuple(lines[0].split(",")) == CSV_COLUMNS
    rows = list(csv.DictReader(io.StringIO(text)))
    docs = [doc, *doc.get("periods", [])]
    expected = [(d, e) for d in docs for e in expected_rows(d)]
    assert len(rows) == len(expected)
    for row, (d, (stage, tp, level, metric, value, n, ci, previous, change)) in zip(rows, expected):
        where = f"{d['from']}..{d['to']} {stage}/{tp} {metric}"
        assert (row["journey"], row["stage"], row["touchpoint"], row["level"], row["metric"]) == (
            slug, stage, tp, level, metric), where
        assert (row["period_start"], row["period_end"], row["date"]) == (d["from"], d["to"], d["to"]), where
        assert number(row["value"]) == value and number(row["n"]) == n, f"{where}: {row}"
        assert [number(row["ci_low"]), number(row["ci_high"])] == (ci or [None, None]), where
        assert (number(row["previous_value"]), number(row["change"])) == (previous, change), where
        assert row["suppressed"] == ("true" if value is None else "false"), where
    return rows


def test_csv_rows_carry_the_json_figures(world, client):
    params = world.period.params()
    doc = map_doc(client, world.auth, world.slug, params)
    r = get_map(client, world.auth, world.slug, params, csv_=True)
    assert r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"] == (
        f'attachment; filename="{world.slug}-map-{world.period.start}-{world.period.end}.csv"')
    rows = assert_csv_equals_json(r.text, doc, world.slug)
    # Per stage and touchpoint, each metric once; then the themes, a term and its count.
    keys = [(r["stage"], r["touchpoint"], r["metric"]) for r in rows if not r["metric"].startswith("theme:")]
    assert len(keys) == len(set(keys)) == 7 * sum(1 + len(s["touchpoints"]) for s in doc["stages"])
    themes = [r for r in rows if r["metric"].startswith("theme:")]
    assert themes and rows[-len(themes):] == themes
    assert_themes({st["slug"]: st["themes"] for st in doc["stages"]})
    suppressed = [r for r in rows if r["suppressed"] == "true"]
    assert suppressed and all(r["value"] == r["n"] == r["ci_low"] == "" for r in suppressed)
    shown = {(r["stage"], r["touchpoint"], r["metric"]): r for r in rows if r["suppressed"] == "false"}
    desk = cells_of(doc)[("discharge", "discharge-desk")]
    assert float(shown[("discharge", "discharge-desk", "satisfaction")]["value"]) == desk["satisfaction"]["score"]
    assert int(shown[("discharge", "discharge-desk", "responses")]["value"]) == desk["responses"]


@pytest.mark.parametrize("interval", ["week", "month"])
def test_an_interval_gives_a_map_per_week_or_month_clipped_to_the_period(world, client, interval):
    q, m = world.period, world.monday
    params = {**q.params(), "interval": interval}
    doc = map_doc(client, world.auth, world.slug, params)
    assert_feed_heading(doc, q, interval)
    if interval == "week":  # Wednesday to the Tuesday two weeks on: a short week, a whole one, two days
        bounds = [(m + timedelta(days=2), m + timedelta(days=6)), (m + timedelta(days=7), m + timedelta(days=13)),
                  (m + timedelta(days=14), m + timedelta(days=15))]
    else:
        bounds, start = [], q.start
        while start <= q.end:
            following = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
            bounds.append((start, min(q.end, following - timedelta(days=1))))
            start = following
    assert [(p["from"], p["to"]) for p in doc["periods"]] == [(a.isoformat(), b.isoformat()) for a, b in bounds]
    for part, (start, end) in zip(doc["periods"], bounds):
        # Each block is that week's or month's own map, trend against the same length before.
        assert_map(part, world.raw, Query(start, end))
        assert "themes" not in part["stages"][0]
    # The heading's themes are the whole period's, as its map gives them.
    whole = map_doc(client, world.auth, world.slug, q.params())
    assert doc["themes"] == {st["slug"]: st["themes"] for st in whole["stages"]} and any(doc["themes"].values())
    text = get_map(client, world.auth, world.slug, params, csv_=True).text
    rows = assert_csv_equals_json(text, doc, world.slug)
    # The themes' rows of the whole period, then a block per week or month; no other whole-period row.
    themes = [r for r in rows if r["metric"].startswith("theme:")]
    assert themes == rows[:len(themes)]
    assert {(r["period_start"], r["period_end"], r["date"]) for r in themes} == {
        (q.start.isoformat(), q.end.isoformat(), q.end.isoformat())}
    assert list(dict.fromkeys((r["period_start"], r["period_end"]) for r in rows[len(themes):])) == [
        (a.isoformat(), b.isoformat()) for a, b in bounds]
    if interval == "week":
        shown_weeks = {r["period_start"] for r in rows if r["metric"] == "responses" and r["touchpoint"] == ""
                       and r["stage"] == "booking" and r["suppressed"] == "false"}
        assert len(shown_weeks) >= 2  # weekly figures were compared, not only hidden ones


# -- 6. Errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".csv"])
def test_bad_queries_are_422_naming_every_bad_field(world, client, suffix):
    url = f"/api/v1/journeys/{world.slug}/map{suffix}"

    def errors(**params):
        r = client.get(url, query_string=params, headers=world.auth)
        assert r.status_code == 422 and r.mimetype == "application/json", r.text
        return r.get_json()["errors"]

    assert set(errors(**{"from": "2024-02-30", "to": "13/01/2024"})) == {"from", "to"}
    assert set(errors(**{"from": "2024-03-02", "to": "2024-03-01"})) == {"from"}
    assert "after" in errors(**{"from": "2024-03-02", "to": "2024-03-01"})["from"]
    found = errors(stage="nowhere", touchpoint="nothing", channel="fax", interval="year", locale="x" * 81,
                   **{"from": "soon"})
    assert set(found) == {"stage", "touchpoint", "channel", "interval", "locale", "from"}
    assert "nowhere" in found["stage"] and "sms" in found["channel"] and "week" in found["interval"]
    # A touchpoint of another stage is unknown in the stage asked for.
    assert set(errors(stage="booking", touchpoint="discharge-desk")) == {"touchpoint"}
    assert set(errors(source="s" * 81, interval="day")) == {"source", "interval"}
    assert "at most" in errors(**{"from": "2000-01-01", "to": "2020-01-01"})["from"]
    # Dates near the calendar's ends are refused: the period before, or a week around, would not be dates.
    assert "between 1900-01-01 and 9000-12-31" in errors(**{"from": "0001-01-02", "to": "0001-12-31"})["from"]
    assert set(errors(to="9999-12-31")) == {"to"}


@pytest.mark.parametrize("suffix", ["", ".csv"])
def test_unknown_journey_is_404_and_no_key_is_401(world, client, suffix):
    r = client.get(f"/api/v1/journeys/{uid('nope')}/map{suffix}", headers=world.auth)
    assert r.status_code == 404 and "error" in r.get_json()
    r = client.get(f"/api/v1/journeys/{world.slug}/map{suffix}")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = client.get(f"/api/v1/journeys/{world.slug}/map{suffix}", headers={"Authorization": "Bearer fbk_wrong"})
    assert r.status_code == 401


# -- 7. The command line -----------------------------------------------------------------------

def export(app, *args):
    return app.test_cli_runner().invoke(args=["export", "map", *args])


@pytest.mark.parametrize("extra", [[], ["--interval", "week", "--stage", "discharge", "--channel", "sms"]])
def test_export_writes_what_the_api_serves(world, app, client, tmp_path, extra):
    q = world.period
    params = {**q.params(), **dict(zip(extra[::2], extra[1::2]))}
    params = {k.lstrip("-"): v for k, v in params.items()}
    api_csv = get_map(client, world.auth, world.slug, params, csv_=True).text
    api_json = get_map(client, world.auth, world.slug, params).text

    result = export(app, world.slug, *q.cli(), "--format", "csv", *extra)
    assert result.exit_code == 0, result.output
    assert result.stdout == api_csv
    result = export(app, world.slug, *q.cli(), "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    assert result.stdout == api_json + "\n" and json.loads(result.stdout) == json.loads(api_json)

    out = tmp_path / "map.csv"
    result = export(app, world.slug, *q.cli(), *extra, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and out.read_text(encoding="utf-8") == api_csv


def test_export_refuses_bad_options_with_exit_code_2(world, app):
    result = export(app, world.slug, "--from", "2024-02-30", "--to", "2024-13-01", "--channel", "fax",
                    "--stage", "nowhere")
    assert result.exit_code == 2
    for name in ("--from", "--to", "--channel", "--stage"):
        assert name in result.output, name
    result = export(app, world.slug, "--stage", "booking", "--touchpoint", "discharge-desk")
    assert result.exit_code == 2 and "--touchpoint" in result.output
    result = export(app, world.slug, "--interval", "year")
    assert result.exit_code == 2 and "--interval" in result.output
    result = export(app, world.slug, "--format", "xml")
    assert result.exit_code == 2 and "--format" in result.output
    result = export(app, uid("nope"))
    assert result.exit_code == 2 and "JOURNEY" in result.output


# -- 8. Rebuild --------------------------------------------------------------------------------

INT_COLUMNS = ("sent", "responses", "n", "top_box", "bottom_box")
FLOAT_COLUMNS = ("total", "resp_total_sq", "resp_n_sq", "resp_cross", "satisfaction", "friction")


def snapshot(app, slug: str) -> dict:
    """The journey's rollup and comment rows, keyed by their cell, without ids."""
    with app.app_context():
        journey_id = db.session.scalar(select(Journey.id).where(Journey.slug == slug))
        out = {}
        for model in (DailyCounts, DailyScores, TouchpointDayCounts, TouchpointDayScores, Comment):
            columns = [c.name for c in model.__table__.columns if c.name != "id"]
            key_columns = [c for c in columns if c not in INT_COLUMNS + FLOAT_COLUMNS and c != "text"]
            rows = db.session.execute(select(*(model.__table__.c[c] for c in columns))
                                      .where(model.journey_id == journey_id)).mappings().all()
            table = {tuple(row[c] for c in key_columns): dict(row) for row in rows}
            assert len(table) == len(rows), f"{model.__tablename__}: two rows for one cell"
            out[model.__tablename__] = table
        return out


def assert_same_rows(before: dict, after: dict) -> None:
    for table, rows in before.items():
        assert set(after[table]) == set(rows), table
        for key, row in rows.items():
            again = after[table][key]
            for column, value in row.items():
                if column in FLOAT_COLUMNS and value is not None:
                    assert math.isclose(again[column], value, rel_tol=1e-9, abs_tol=1e-9), (table, key, column)
                else:
                    assert again[column] == value, (table, key, column, value, again[column])


def test_rebuild_gives_the_rows_the_increments_made(world, app, client):
    before = snapshot(app, world.slug)
    assert len(before["rollup_daily_counts"]) > 50 and len(before["rollup_daily_scores"]) > 50
    assert len(before["comments"]) > 20
    doc = get_map(client, world.auth, world.slug, {**world.period.params(), "interval": "week"}).get_json()

    result = app.test_cli_runner().invoke(args=["rollups", "rebuild"])
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout.strip().splitlines()[-1])
    after = snapshot(app, world.slug)
    # The rows written per table, of every journey: at least this one's.
    assert done["responses"] >= len(world.raw.responses)
    assert set(done) == {"responses", *after} and all(done[table] >= len(rows) for table, rows in after.items())

    assert_same_rows(before, after)
    assert get_map(client, world.auth, world.slug, {**world.period.params(), "interval": "week"}).get_json() == doc


def test_rebuild_repairs_a_corrupted_rollup_row(world, app, client):
    params = world.period.params()
    before, doc = snapshot(app, world.slug), get_map(client, world.auth, world.slug, params).get_json()
    with app.app_context():
        journey = db.session.scalar(select(Journey).where(Journey.slug == world.slug))
        desk = journey.stage("discharge").touchpoint("discharge-desk")
        day = world.period.start + timedelta(days=3)
        row = db.session.scalar(select(DailyCounts).where(DailyCounts.touchpoint_id == desk.id, DailyCounts.day >= day)
                                .order_by(DailyCounts.day).limit(1))
        db.session.execute(update(DailyCounts).where(DailyCounts.id == row.id)
                           .values(responses=DailyCounts.responses + 9, sent=DailyCounts.sent + 20))
        db.session.execute(update(DailyScores).where(DailyScores.touchpoint_id == desk.id, DailyScores.day == row.day,
                                                     DailyScores.measure == "satisfaction")
                           .values(total=DailyScores.total + 400.0, n=DailyScores.n + 4))
        # The touchpoint-day level, which the unfiltered map reads, broken the same way.
        db.session.execute(update(TouchpointDayCounts).where(TouchpointDayCounts.touchpoint_id == desk.id,
                                                             TouchpointDayCounts.day == row.day)
                           .values(responses=TouchpointDayCounts.responses + 9, sent=TouchpointDayCounts.sent + 20))
        db.session.execute(update(TouchpointDayScores).where(TouchpointDayScores.touchpoint_id == desk.id,
                                                             TouchpointDayScores.day == row.day,
                                                             TouchpointDayScores.measure == "satisfaction")
                           .values(total=TouchpointDayScores.total + 400.0, n=TouchpointDayScores.n + 4))
        db.session.commit()
    broken = get_map(client, world.auth, world.slug, params).get_json()
    assert cells_of(broken)[("discharge", "discharge-desk")]["responses"] == (
        cells_of(doc)[("discharge", "discharge-desk")]["responses"] + 9)
    with pytest.raises(AssertionError):
        assert_map(broken, world.raw, world.period)

    with app.app_context():
        rebuild_rollups()
    assert_same_rows(before, snapshot(app, world.slug))
    repaired = get_map(client, world.auth, world.slug, params).get_json()
    assert repaired == doc
    assert_map(repaired, world.raw, world.period)


# -- 9. Migration 0005 -------------------------------------------------------------------------

def fresh_app(settings, folder: Path, name: str):
    """The service on a new SQLite file of its own (with an outbox of its own: ids start at 1 again)."""
    return create_app({"TESTING": True, **settings, "FEEDBACK_DATABASE_URL": f"sqlite:///{folder / name}",
                       "FEEDBACK_CONSOLE_OUTBOX": str(folder / f"{name}.outbox.jsonl"),
                       "FEEDBACK_MAX_SEND_DELAY_DAYS": 40})


def table_columns(app, table: str) -> set[str]:
    with app.app_context():
        return {c["name"] for c in inspect(db.engine).get_columns(table)}


@dataclass
class Migrated:
    folder: Path
    slug: str
    auth: dict
    params: dict
    rows: dict  # the rollup and comment rows the increments made
    doc: dict  # the map of the period


@pytest.fixture(scope="module")
def migrated(settings, tmp_path_factory) -> Migrated:
    """A SQLite database made by the migrations up to head, with answers recorded through the
    services: the rollups as the increments made them."""
    from flask_migrate import upgrade

    folder = tmp_path_factory.mktemp("migrated")
    mapp = fresh_app(settings, folder, "head.db")
    try:
        with mapp.app_context():
            upgrade(directory=MIGRATIONS_DIR)
        slug = load_journey(mapp, folder / "lib")
        auth = create_key(mapp, "migrated-ehr")
        day = utcnow().date() - timedelta(days=9)
        rng = random.Random(SEED)
        plan = [("booking", "phone-booking")] * 16 + [("booking", "online-booking")] * 2 + [
            ("discharge", "discharge-desk")] * 14
        bodies = [event_body(kind, journey=slug, touchpoint=tp, locale=rng.choice(["en", "es"]),
                             consent_sms=rng.random() < 0.6, occurred_at=moment(day - timedelta(days=i % 3), rng))
                  for i, (kind, tp) in enumerate(plan)]
        outcomes = post_events(mapp.test_client(), auth, bodies)
        run_jobs_of(mapp)
        tokens = tokens_by_invitation(folder / "head.db.outbox.jsonl", [o["id"] for o in outcomes])
        with mapp.app_context():
            journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
            questions = {qs.key: qs.current.questions for qs in journey.question_sets}
        survey, csrf = mapp.test_client(), None
        for o in outcomes[:28]:
            csrf = answer(survey, tokens[o["id"]], answer_values(questions[o["question_set"]], o["stage"], rng), csrf)
        q = Query(day - timedelta(days=2), day)
        rows = snapshot(mapp, slug)
        doc = get_map(mapp.test_client(), auth, slug, q.params()).get_json()
        assert len(rows["rollup_daily_scores"]) > 4 and rows["comments"]
        assert cells_of(doc)[("booking", "")]["suppressed"] is False
        assert_map(doc, read_raw(mapp, slug), q)
    finally:
        with mapp.app_context():
            db.engine.dispose()
    return Migrated(folder, slug, auth, q.params(), rows, doc)


def test_migration_0005_fills_the_rollups_from_rows_written_at_0004(settings, migrated):
    """A database at 0004 whose raw rows (journeys to answers) were written with plain SQL: the
    upgrade to head makes the rollups the increments would have made."""
    from flask_migrate import upgrade

    oldapp = fresh_app(settings, migrated.folder, "at-0004.db")
    try:
        with oldapp.app_context():
            upgrade(directory=MIGRATIONS_DIR, revision="0004_staff_workspace")
            tables = inspect(db.engine).get_table_names()
        old = table_columns(oldapp, "rollup_daily_counts")
        assert "day" in old and "channel" not in old and "comments" not in tables
        # Every row of head.db that the 0004 schema has a place for, copied column for column.
        with sqlite3.connect(migrated.folder / "at-0004.db") as con:
            con.execute("ATTACH DATABASE ? AS src", (str(migrated.folder / "head.db"),))
            for table in tables:
                if table in ("alembic_version", "rollup_daily_counts", "rollup_daily_scores"):
                    continue
                columns = ", ".join(f'"{row[1]}"' for row in con.execute(f'PRAGMA main.table_info("{table}")'))
                con.execute(f'INSERT INTO main."{table}" ({columns}) SELECT {columns} FROM src."{table}"')
            assert con.execute("SELECT count(*) FROM main.answers").fetchone()[0] > 50
            con.commit()
            con.execute("DETACH DATABASE src")
        with oldapp.app_context():
            upgrade(directory=MIGRATIONS_DIR)
        assert "channel" in table_columns(oldapp, "rollup_daily_counts")
        assert_same_rows(migrated.rows, snapshot(oldapp, migrated.slug))
        assert get_map(oldapp.test_client(), migrated.auth, migrated.slug, migrated.params).get_json() == migrated.doc
    finally:
        with oldapp.app_context():
            db.engine.dispose()


def test_migration_0005_downgrades_and_upgrades_again_with_the_same_rollups(settings, migrated):
    from flask_migrate import downgrade, upgrade

    with sqlite3.connect(migrated.folder / "head.db") as src, sqlite3.connect(migrated.folder / "again.db") as dest:
        src.backup(dest)
    again = fresh_app(settings, migrated.folder, "again.db")
    try:
        with again.app_context():
            downgrade(directory=MIGRATIONS_DIR, revision="0004_staff_workspace")
        assert "channel" not in table_columns(again, "rollup_daily_counts")
        with again.app_context():
            upgrade(directory=MIGRATIONS_DIR)
        assert_same_rows(migrated.rows, snapshot(again, migrated.slug))
        assert get_map(again.test_client(), migrated.auth, migrated.slug, migrated.params).get_json() == migrated.doc
    finally:
        with again.app_context():
            db.engine.dispose()
