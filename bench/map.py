"""Journey map and trends API latency on a year of a large hospital's answers, against a plain
GROUP BY over the answers table on the same database, with a check that both give the same numbers.

    .venv/bin/python bench/map.py [--responses 1000000] [--database /tmp/feedback_bench_map.db]
                                  [--database-url postgresql://postgres@127.0.0.1:5432/test] [--runs 30] [--reuse]

Builds a fresh database (`init`, a third journey copied from orthopedic-surgery, a second version
of every question set), bulk-loads patients, events, invitations, responses and their answers
(scored by the service's own score_answer) spread over a year, rebuilds the rollups with
rebuild_rollups (as `feedback-service rollups rebuild` does) and runs ANALYZE. Then it times
GET /api/v1/journeys/<slug>/map for 90 and 365 days (themes cached, and cold: themes cache cleared
before each request), GET .../trends (weeks, 365 days), and the plain GROUP BY over answers joined
to responses, invitations and events. Prints median and p95 in ms, the ratio plain / map, and
"identical: yes" when every shown figure of the map equals the plain scan's (exit status 1 if not).
Beside wall time it prints this process's CPU time per call, steadier on a busy machine (on SQLite
it includes the queries; on PostgreSQL the server's share is not in it). --reuse keeps a SQLite file
loaded by an earlier run and only times.
On PostgreSQL it creates and drops a database of its own next to the one named.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import yaml
from sqlalchemy import case, distinct, func, insert, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from feedback_service import create_app  # noqa: E402
from feedback_service.events.models import Event  # noqa: E402
from feedback_service.extensions import db  # noqa: E402
from feedback_service.insights.comments import _themes  # noqa: E402
from feedback_service.journeys.models import Journey, TriggerRule  # noqa: E402
from feedback_service.journeys.questions import score_answer  # noqa: E402
from feedback_service.journeys.yaml_io import import_library  # noqa: E402
from feedback_service.patients.models import Patient  # noqa: E402
from feedback_service.responses.models import Answer, Response  # noqa: E402
from feedback_service.rollups.models import Comment, DailyCounts, DailyScores  # noqa: E402
from feedback_service.rollups.services import rebuild_rollups  # noqa: E402
from feedback_service.scheduling.models import Invitation  # noqa: E402
from tests.scratch import scratch_database  # noqa: E402

THIRD_JOURNEY = ("orthopedic-surgery-north", "Orthopedic surgery (North campus)")
SOURCES = (("hl7-mllp", 0.5), ("fhir", 0.3), ("api", 0.2))
SPANISH = 0.25
SMS_SHARE = 0.6  # of invitations that could go either way
YEAR = 365
V2_DAYS = 240  # moments in the last 240 days were asked the second version of their set
COMMENT_SHARE = 0.10
CHUNK = 20_000  # events per insert batch
PERIODS = (90, 365)
# The second version of every set that is not answered by text asks these too (an NPS question
# only where the set has none), so a response carries about five answers.
EXTRA_QUESTIONS = [
    {"key": "staff_courtesy", "type": "rating", "measure": "satisfaction",
     "text": {"en": "How courteous were the staff you dealt with?",
              "es": "¿Qué tan amable fue el personal que le atendió?"},
     "anchors": {"en": ["Very rude", "Very courteous"], "es": ["Muy descortés", "Muy amable"]}},
    {"key": "wait_reasonable", "type": "yes_no", "measure": "friction", "better": "yes",
     "text": {"en": "Was the wait reasonable?", "es": "¿Fue razonable la espera?"}},
    {"key": "information_clear", "type": "rating", "measure": "satisfaction",
     "text": {"en": "How clear was the information you were given?",
              "es": "¿Qué tan clara fue la información que recibió?"},
     "anchors": {"en": ["Very unclear", "Very clear"], "es": ["Muy confusa", "Muy clara"]}},
]
NPS_QUESTION = {"key": "recommend", "type": "nps", "measure": "satisfaction",
                "text": {"en": "How likely are you to recommend us to friends and family?",
                         "es": "¿Qué tan probable es que nos recomiende a familiares y amigos?"},
                "anchors": {"en": ["Not at all likely", "Extremely likely"], "es": ["Nada probable", "Muy probable"]}}
INTRO = {"en": "Thank you for helping us improve.", "es": "Gracias por ayudarnos a mejorar."}
# (complaints, praise) per stage and locale: a small bank, so that themes recur.
COMMENTS = {
    "booking": {
        "en": (["I was on hold for a long time before anyone answered the phone.",
                "I had to call three times to confirm the date of my appointment.",
                "The online booking page kept logging me out.",
                "Nobody called me back about changing the appointment time.",
                "Long hold times on the phone and the line was cut twice."],
               ["Booking online was quick and easy.", "The scheduler was kind and patient."]),
        "es": (["Esperé mucho tiempo al teléfono antes de que alguien contestara.",
                "Tuve que llamar tres veces para confirmar la fecha de la cita."],
               ["La persona que me atendió fue muy amable."]),
    },
    "discharge": {
        "en": (["We waited hours for the discharge paperwork.",
                "Nobody told me when the pharmacy would have my prescription ready.",
                "The discharge paperwork took all afternoon and the pharmacy was closed.",
                "I was not told who to call about pain at home.",
                "Waited hours for a wheelchair to take me to the car."],
               ["The nurse explained my medicines well.", "Going home was smooth."]),
        "es": (["Esperamos horas para los papeles de salida.",
                "Nadie me dijo cuándo estaría lista la receta en la farmacia."],
               ["La enfermera me explicó bien los medicamentos."]),
    },
    "follow-up": {
        "en": (["It took weeks to get a physiotherapy appointment.",
                "The clinic never called me back about my results.",
                "Parking at the clinic was impossible and I was late.",
                "The video call kept dropping and nobody called back.",
                "It took weeks to get a follow-up appointment with the surgeon."],
               ["My surgeon answered all my questions.", "Recovery is going well, thank you."]),
        "es": (["Tardaron semanas en darme cita de fisioterapia.",
                "La clínica nunca me devolvió la llamada."],
               ["Mi cirujano respondió todas mis preguntas."]),
    },
}


# Setting up the journeys ------------------------------------------------------------------------

def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")


def third_journey(folder: Path) -> Path:
    """A library holding one journey: orthopedic-surgery's stages, rules and sets under a new slug."""
    source = ROOT / "surveys" / "orthopedic-surgery"
    doc = yaml.safe_load((source / "journey.yaml").read_text(encoding="utf-8"))
    doc["slug"], doc["name"] = THIRD_JOURNEY
    _write(folder / doc["slug"] / "journey.yaml", doc)
    for path in source.glob("*.yaml"):
        if path.name != "journey.yaml":
            (folder / doc["slug"] / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def second_versions(folder: Path, libraries: list[Path]) -> Path:
    """The same journeys with every question set changed: an intro, and more questions where the
    set is not answered by text. Importing it publishes version 2 of each set."""
    for library in libraries:
        for journey_file in library.glob("*/journey.yaml"):
            target = folder / journey_file.parent.name
            _write(target / "journey.yaml", yaml.safe_load(journey_file.read_text(encoding="utf-8")))
            for path in journey_file.parent.glob("*.yaml"):
                if path.name == "journey.yaml":
                    continue
                doc = yaml.safe_load(path.read_text(encoding="utf-8"))
                doc["intro"] = INTRO
                if not doc.get("sms"):
                    keys = {q["key"] for q in doc["questions"]}
                    extra = [q for q in EXTRA_QUESTIONS if q["key"] not in keys]
                    if not any(q["type"] == "nps" for q in doc["questions"]) and "recommend" not in keys:
                        extra.append(NPS_QUESTION)
                    texts = [q for q in doc["questions"] if q["type"] == "text"]
                    doc["questions"] = [q for q in doc["questions"] if q["type"] != "text"] + extra + texts
                _write(target / path.name, doc)
    return folder


@dataclass
class Target:
    """Where an event can land: a touchpoint, the set its stage asks (both versions) and how well
    the touchpoint works (0-1, before and after the second version)."""

    journey_id: int
    stage_id: int
    stage_slug: str
    touchpoint_id: int
    event_type: str
    sms_only: bool
    versions: tuple  # ((version id, questions), (version id, questions))
    quality: tuple[float, float]
    answer_rate: float


def targets(rng: random.Random) -> tuple[list[Target], list[float]]:
    """Every touchpoint of a stage that a trigger rule asks, with a weight for how many events it gets."""
    out, weights = [], []
    for journey in db.session.scalars(select(Journey).order_by(Journey.id)):
        rules = {r.question_set.stage_id: r for r in db.session.scalars(
            select(TriggerRule).where(TriggerRule.journey_id == journey.id))}
        for stage in journey.stages:
            rule = rules.get(stage.id)
            if rule is None:
                continue
            for i, tp in enumerate(stage.touchpoints):
                for qs in stage.question_sets:
                    share = 1.0 if len(stage.question_sets) == 1 else (0.8 if qs.id == rule.question_set_id else 0.2)
                    versions = tuple((v.id, v.questions) for v in qs.versions[:2])
                    assert len(versions) == 2, f"{qs.key}: expected two versions"
                    base = rng.uniform(0.45, 0.85)
                    out.append(Target(journey.id, stage.id, stage.slug, tp.id, rule.event_type,
                                      bool(qs.current.content.get("sms")), versions,
                                      (base, min(0.95, base + rng.uniform(-0.05, 0.12))), rng.uniform(0.55, 0.75)))
                    weights.append(share * (0.6 if i == 0 else 0.4))
    return out, weights


# Loading ----------------------------------------------------------------------------------------

class Answers:
    """Answers drawn for a touchpoint's quality, scored once per (question, value) by score_answer."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.scored: dict[tuple[str, str, str], tuple] = {}

    def value(self, q: dict, quality: float) -> str:
        good = min(1.0, max(0.0, self.rng.gauss(quality, 0.22)))
        qtype = q["type"]
        if qtype in ("rating", "effort", "nps"):
            lo, hi = {"rating": (1, 5), "effort": (1, 7), "nps": (0, 10)}[qtype]
            frac = good if q["better"] == "high" else 1 - good
            return str(lo + round(frac * (hi - lo)))
        if qtype == "yes_no":
            other = "no" if q["better"] == "yes" else "yes"
            return q["better"] if self.rng.random() < good else other
        return min(q["options"], key=lambda o: abs(o.get("score", 50) - good * 100))["value"]

    def rows(self, response_id: int, questions: list[dict], quality: float, stage: str, locale: str) -> list[dict]:
        rows = []
        for q in questions:
            if q["type"] == "text":
                if self.rng.random() < COMMENT_SHARE:
                    complaints, praise = COMMENTS[stage][locale]
                    said = self.rng.choice(complaints if self.rng.random() > quality else praise)
                    rows.append({"response_id": response_id, "question_key": q["key"], "value": said,
                                 "measure": None, "score": None, "top_box": None})
                continue
            value = self.value(q, quality)
            key = (id(q), value)
            if key not in self.scored:
                self.scored[key] = score_answer(q, value)
            measure, score, top = self.scored[key]
            rows.append({"response_id": response_id, "question_key": q["key"], "value": value,
                         "measure": measure, "score": score, "top_box": top})
        return rows


def load(responses: int, seed: int, now: datetime, progress) -> dict[str, int]:
    """Bulk-insert patients, events, invitations, responses and answers until `responses` responses."""
    rng = random.Random(seed)
    spots, weights = targets(rng)
    cumulative = [sum(weights[:i + 1]) for i in range(len(weights))]
    answers = Answers(rng)
    sources = [s for s, _ in SOURCES]
    source_weights = [w for _, w in SOURCES]
    counts = dict.fromkeys(("patients", "events", "invitations", "responses", "answers"), 0)
    event_id = invitation_id = response_id = 0
    patient_source: dict[int, str] = {}
    dialect = db.engine.dialect.name
    with db.engine.connect() as conn:
        if dialect == "sqlite":
            # A bulk load: durability is pointless, foreign keys are ours and known good.
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
            conn.exec_driver_sql("PRAGMA cache_size=-200000")
        while counts["responses"] < responses:
            patients, events, invitations, answered, rows = [], [], [], [], []
            picks = rng.choices(spots, cum_weights=cumulative, k=CHUNK)
            for spot in picks:
                if counts["responses"] + len(answered) >= responses:
                    break
                event_id += 1
                patient_id = (event_id - 1) // 3 + 1  # about three moments a patient
                if patient_id not in patient_source:
                    source = rng.choices(sources, source_weights)[0]
                    patient_source[patient_id] = source
                    locale = "es" if rng.random() < SPANISH else "en"
                    patients.append({"id": patient_id, "source": source, "external_id": f"bench-patient-{patient_id}",
                                     "first_name": "Ana", "phone": f"+1212555{patient_id % 10000:04d}",
                                     "email": f"p{patient_id}@example.org", "locale": locale,
                                     "timezone": "America/New_York", "consent_sms": True, "consent_email": True,
                                     "updated_at": now})
                source = patient_source[patient_id]
                locale = "es" if rng.random() < SPANISH else "en"
                days_ago = rng.random() * YEAR
                occurred = now - timedelta(days=days_ago)
                events.append({"id": event_id, "source": source, "external_id": f"bench-{event_id}",
                               "type": spot.event_type, "occurred_at": occurred, "received_at": occurred,
                               "journey_id": spot.journey_id, "touchpoint_id": spot.touchpoint_id,
                               "patient_id": patient_id})
                version_id, questions = spot.versions[1 if days_ago < V2_DAYS else 0]
                quality = spot.quality[1 if days_ago < V2_DAYS else 0]
                channel = "sms" if spot.sms_only or rng.random() < SMS_SHARE else "email"
                sent_at = occurred + timedelta(hours=rng.uniform(1, 50))
                base = {"event_id": event_id, "patient_id": patient_id, "journey_id": spot.journey_id,
                        "stage_id": spot.stage_id, "touchpoint_id": spot.touchpoint_id,
                        "question_set_version_id": version_id, "channels": "sms,email", "locale": locale,
                        "send_at": sent_at, "link_ttl_days": 14, "attempts": 1,
                        "expires_at": sent_at + timedelta(days=14),
                        "created_at": occurred, "replaces_id": None}
                roll = rng.random()
                if roll < 0.03:  # skipped (opted out, fatigue): never sent, never counted
                    invitation_id += 1
                    invitations.append({**base, "id": invitation_id, "channel": channel, "status": "skipped",
                                        "sent_at": None, "answered_at": None})
                    continue
                if roll < 0.045 and not spot.sms_only:  # the text failed; the email went instead
                    invitation_id += 1
                    invitations.append({**base, "id": invitation_id, "channel": "sms", "status": "failed",
                                        "sent_at": sent_at, "answered_at": None})
                    base = {**base, "replaces_id": invitation_id}
                    channel = "email"
                invitation_id += 1
                if rng.random() >= spot.answer_rate:
                    invitations.append({**base, "id": invitation_id, "channel": channel, "status": "expired",
                                        "sent_at": sent_at, "answered_at": None})
                    continue
                submitted = sent_at + timedelta(hours=rng.uniform(0.1, 72))
                invitations.append({**base, "id": invitation_id, "channel": channel, "status": "answered",
                                    "sent_at": sent_at, "answered_at": submitted})
                response_id += 1
                answered.append({"id": response_id, "invitation_id": invitation_id, "journey_id": spot.journey_id,
                                 "stage_id": spot.stage_id, "touchpoint_id": spot.touchpoint_id,
                                 "question_set_version_id": version_id,
                                 "channel": "sms" if spot.sms_only else "web", "locale": locale,
                                 "submitted_at": submitted})
                rows.extend(answers.rows(response_id, questions, quality, spot.stage_slug, locale))
            for model, batch in ((Patient, patients), (Event, events), (Invitation, invitations),
                                 (Response, answered), (Answer, rows)):
                if batch:
                    conn.execute(insert(model.__table__), batch)
            conn.commit()
            for name, batch in (("patients", patients), ("events", events), ("invitations", invitations),
                                ("responses", answered), ("answers", rows)):
                counts[name] += len(batch)
            progress(counts)
        if dialect == "postgresql":
            # Ids were given explicitly: move the sequences past them for the rows written later.
            for table in ("patients", "events", "invitations", "responses", "answers"):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT coalesce(max(id), 1) FROM {table}))")
            conn.commit()
    return counts


# The plain scan ---------------------------------------------------------------------------------

def nps_keys() -> list[str]:
    """Question keys that are NPS questions in the loaded versions (the same in every version)."""
    from feedback_service.journeys.models import QuestionSetVersion
    nps, other = set(), set()
    for v in db.session.scalars(select(QuestionSetVersion)):
        for q in v.questions:
            if q["type"] == "nps":
                assert q["measure"] == "satisfaction", "the plain scan counts NPS on satisfaction questions only"
                nps.add(q["key"])
            else:
                other.add(q["key"])
    assert not nps & other, "a key is NPS in one set and not in another: the plain scan cannot tell them apart"
    return sorted(nps)


def plain_scan(journey_id: int, start: date, end: date, nps: list[str]) -> dict:
    """Per touchpoint, straight from the raw rows: sent, responses and, per measure, responses,
    answers, sum of scores and top box. The day is the event's (UTC); sent is what the rollups
    count as sent (handed to a provider, not failed afterwards)."""
    lo = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    hi = lo + timedelta(days=(end - start).days + 1)
    moment = (Invitation.journey_id == journey_id, Event.occurred_at >= lo, Event.occurred_at < hi)
    is_nps = Answer.question_key.in_(nps)
    nps_value = case((Answer.score >= 90.0, 100.0), (Answer.score <= 60.0, -100.0), else_=0.0)
    scores = db.session.execute(
        select(Invitation.touchpoint_id, Answer.measure, func.count(distinct(Answer.response_id)), func.count(),
               func.sum(Answer.score), func.sum(case((Answer.top_box, 1), else_=0)),
               func.count(distinct(case((is_nps, Answer.response_id)))), func.count(case((is_nps, 1))),
               func.sum(case((is_nps, nps_value))))
        .select_from(Answer).join(Response, Response.id == Answer.response_id)
        .join(Invitation, Invitation.id == Response.invitation_id).join(Event, Event.id == Invitation.event_id)
        .where(*moment, Answer.measure.is_not(None)).group_by(Invitation.touchpoint_id, Answer.measure)).all()
    responses = db.session.execute(
        select(Invitation.touchpoint_id, func.count()).select_from(Response)
        .join(Invitation, Invitation.id == Response.invitation_id).join(Event, Event.id == Invitation.event_id)
        .where(*moment).group_by(Invitation.touchpoint_id)).all()
    sent = db.session.execute(
        select(Invitation.touchpoint_id, func.count()).select_from(Invitation)
        .join(Event, Event.id == Invitation.event_id)
        .where(*moment, Invitation.sent_at.is_not(None), Invitation.status != "failed")
        .group_by(Invitation.touchpoint_id)).all()
    out: dict[int, dict] = {}
    for tp, count in responses:
        out.setdefault(tp, {})["responses"] = count
    for tp, count in sent:
        out.setdefault(tp, {})["sent"] = count
    for tp, measure, answered, n, total, top, nps_answered, nps_n, nps_total in scores:
        out.setdefault(tp, {})[measure] = (answered, n, total, top)
        if nps_n:
            out[tp]["nps"] = (nps_answered, nps_n, nps_total, None)
    return out


def differences(doc: dict, plain: dict, touchpoint_ids: dict[str, int]) -> tuple[list[str], int, int]:
    """Every shown figure of the map that the plain scan does not give: (differences, figures
    compared, touchpoint cells suppressed)."""
    diffs, compared, suppressed = [], 0, 0
    for stage in doc["stages"]:
        for tp in stage["touchpoints"]:
            where = f"{doc['journey']} {doc['from']}..{doc['to']} {stage['slug']}/{tp['slug']}"
            if tp["suppressed"]:
                suppressed += 1
                continue
            raw = plain.get(touchpoint_ids[(stage["slug"], tp["slug"])], {})
            expected = {"responses": raw.get("responses", 0)}
            if tp["sent"] is not None:
                expected["sent"] = raw.get("sent", 0)
            for m in ("satisfaction", "friction", "nps"):
                cell = tp[m]
                if cell["suppressed"]:
                    continue
                answered, n, total, top = raw.get(m, (0, 0, 0.0, 0))
                expected[f"{m}.responses"], expected[f"{m}.n"] = answered, n
                expected[f"{m}.score"] = round(total / n, 1) if n else None
                if cell.get("top_box_pct") is not None:
                    expected[f"{m}.top_box_pct"] = round(100.0 * top / n, 1)
            for name, want in expected.items():
                part, _, field = name.rpartition(".")
                got = (tp[part] if part else tp)[field]
                compared += 1
                if got != want:
                    diffs.append(f"{where} {name}: map {got}, plain {want}")
    return diffs, compared, suppressed


# Timing -----------------------------------------------------------------------------------------

def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Timing:
    wall: list[float]  # ms per call
    # ms of this process's CPU per call: steadier than wall time on a busy machine; SQLite's work is
    # in it, a PostgreSQL server's is not.
    cpu: list[float]


def timed(call, runs: int, warmup: int = 0) -> Timing:
    """Milliseconds per call(i) over `runs` calls, after `warmup` untimed ones."""
    for i in range(warmup):
        call(i)
    out = Timing([], [])
    for i in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        call(i)
        out.wall.append((time.perf_counter() - t0) * 1000)
        out.cpu.append((time.process_time() - c0) * 1000)
    return out


def fmt(t: Timing) -> str:
    return (f"median {statistics.median(t.wall):8.1f} ms   p95 {p95(t.wall):8.1f} ms   "
            f"(CPU median {statistics.median(t.cpu):7.1f} ms; {len(t.wall)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--responses", type=int, default=1_000_000)
    parser.add_argument("--database", type=Path, default=Path(tempfile.gettempdir()) / "feedback_bench_map.db",
                        help="the SQLite file to build (replaced)")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server to build a database on instead")
    parser.add_argument("--runs", type=int, default=30, help="timed requests per figure")
    parser.add_argument("--plain-runs", type=int, default=6, help="timed plain scans per period")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="time a SQLite file an earlier run loaded")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.database_url:
            with scratch_database(args.database_url, Path(tmp), prefix="feedback_bench") as url:
                sys.exit(run(args, url, Path(tmp)))
        if not args.reuse:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{args.database}{suffix}").unlink(missing_ok=True)
        sys.exit(run(args, f"sqlite:///{args.database}", Path(tmp)))


def run(args, url: str, tmp: Path) -> int:
    app = create_app({"FEEDBACK_DATABASE_URL": url, "FEEDBACK_SECRET_KEY": "bench",
                      "FEEDBACK_CONSOLE_OUTBOX": str(tmp / "outbox.jsonl")})
    runner = app.test_cli_runner()
    now = datetime.now(timezone.utc)
    figures: dict[str, str] = {}
    with app.app_context():
        backend = db.engine.dialect.name
        loaded = args.reuse and backend == "sqlite" and db.session.scalar(
            text("SELECT count(*) FROM sqlite_master WHERE name = 'responses'"))
        if loaded:
            # The periods end on the day the data was loaded, as they did then.
            now = db.session.scalar(select(func.max(Event.received_at))) + timedelta(minutes=1)
            print(f"reusing {args.database}", flush=True)
        else:
            result = runner.invoke(args=["init"])
            assert result.exit_code == 0, result.output
            import_library(third_journey(tmp / "third"))
            db.session.commit()
            import_library(second_versions(tmp / "v2", [ROOT / "surveys", tmp / "third"]))
            db.session.commit()

            started = time.perf_counter()
            step = max(args.responses // 10, 1)
            mark = [step]

            def progress(counts):
                if counts["responses"] >= mark[0] or counts["responses"] >= args.responses:
                    mark[0] += step
                    print(f"  loaded {counts['responses']:,} responses, {counts['answers']:,} answers "
                          f"({time.perf_counter() - started:.0f} s)", flush=True)

            counts = load(args.responses, args.seed, now, progress)
            load_s = time.perf_counter() - started
            print(f"load: {load_s:.1f} s for {', '.join(f'{v:,} {k}' for k, v in counts.items())} "
                  f"({counts['answers'] / counts['responses']:.2f} answers a response)", flush=True)
            figures["load"] = f"{load_s:.1f} s"

            started = time.perf_counter()
            summary = rebuild_rollups()
            rebuild_s = time.perf_counter() - started
            print(f"rebuild_rollups: {rebuild_s:.1f} s -> "
                  + ", ".join(f"{n:,} {table}" for table, n in summary.items() if table != "responses"), flush=True)
            figures["rebuild_rollups"] = f"{rebuild_s:.1f} s"
            started = time.perf_counter()
            db.session.execute(text("ANALYZE"))
            db.session.commit()
            print(f"ANALYZE: {time.perf_counter() - started:.1f} s", flush=True)
        journeys = [(j.id, j.slug, {(s.slug, tp.slug): tp.id for s in j.stages for tp in s.touchpoints})
                    for j in db.session.scalars(select(Journey).order_by(Journey.id))]
        nps = nps_keys()
        sizes = {name: db.session.scalar(select(func.count()).select_from(model))
                 for name, model in (("responses", Response), ("answers", Answer), ("count rows", DailyCounts),
                                     ("score rows", DailyScores), ("comments", Comment))}
        db.session.remove()
        db.engine.dispose()  # the load's connection settings go with it

    key = runner.invoke(args=["api-key", "create", f"bench-{os.getpid()}"]).stdout.splitlines()[0]
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    today = now.date()
    bounds = {days: (today - timedelta(days=days - 1), today) for days in PERIODS}

    def get(path: str, days: int, **extra):
        start, end = bounds[days]
        r = client.get(path, query_string={"from": start.isoformat(), "to": end.isoformat(), **extra}, headers=headers)
        assert r.status_code == 200, (path, r.status_code, r.get_data(as_text=True)[:500])
        return r.get_json()

    def map_call(days: int, cold: bool):
        def call(i):
            if cold:
                _themes.cache_clear()
            get(f"/api/v1/journeys/{journeys[i % len(journeys)][1]}/map", days)
        return call

    print(f"timing: {args.runs} requests per figure, journeys taken in turn", flush=True)
    results: dict[str, Timing] = {}
    load_before = os.getloadavg()[0]
    for days in PERIODS:
        # The warm-up reads each journey once, so the themes of every map are cached.
        results[f"map {days} d (themes cached)"] = timed(map_call(days, False), args.runs, warmup=len(journeys))
        results[f"map {days} d (cold: themes cache cleared)"] = timed(map_call(days, True), args.runs)
    results["trends 365 d by week"] = timed(
        lambda i: get(f"/api/v1/journeys/{journeys[i % len(journeys)][1]}/trends", 365, interval="week"),
        args.runs, warmup=len(journeys))
    with app.app_context():
        for days in PERIODS:
            start, end = bounds[days]
            results[f"plain GROUP BY {days} d"] = timed(
                lambda i, start=start, end=end: plain_scan(journeys[i % len(journeys)][0], start, end, nps),
                max(args.plain_runs, 1), warmup=1)

        # Identical numbers: every journey and period, map from the API against the plain scan.
        diffs, compared, suppressed, themes = [], 0, 0, 0
        for days in PERIODS:
            start, end = bounds[days]
            for journey_id, slug, tp_ids in journeys:
                doc = get(f"/api/v1/journeys/{slug}/map", days)
                found = differences(doc, plain_scan(journey_id, start, end, nps), tp_ids)
                diffs += found[0]
                compared += found[1]
                suppressed += found[2]
                themes += sum(len(s["themes"]) for s in doc["stages"])
        if backend == "sqlite":
            engine_version = f"SQLite {sqlite3.sqlite_version}"
        else:
            engine_version = db.session.scalar(text("SELECT version()")).split(",")[0]
        db.engine.dispose()
    load_after = os.getloadavg()[0]

    print()
    for name, ms in results.items():
        print(f"{name:42} {fmt(ms)}")
    ratios = {}
    for days in PERIODS:
        plain = statistics.median(results[f"plain GROUP BY {days} d"].wall)
        for label in ("themes cached", "cold: themes cache cleared"):
            map_ms = statistics.median(results[f"map {days} d ({label})"].wall)
            ratios[f"plain / map {days} d ({label})"] = plain / map_ms
    for name, ratio in ratios.items():
        print(f"{name:42} {ratio:8.1f}x")
    print(f"checked {compared:,} figures of {len(journeys) * len(PERIODS)} maps against the plain scan "
          f"({suppressed} suppressed touchpoint cells skipped; {themes} themes shown)")
    if diffs:
        print("identical: NO")
        for line in diffs[:50]:
            print("  " + line)
        if len(diffs) > 50:
            print(f"  ... and {len(diffs) - 50} more")
    else:
        print("identical: yes")

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    size = (f", database file {Path(args.database).stat().st_size / 2**30:.2f} GiB"
            if backend == "sqlite" else "")
    print()
    print(f"machine: {os.cpu_count()} CPUs ({cpu}); Python {platform.python_version()}; {engine_version}; "
          f"load average {load_before:.1f} before timing, {load_after:.1f} after")
    print(f"data: {len(journeys)} journeys, "
          + ", ".join(f"{v:,} {k}" for k, v in sizes.items()) + size)
    print(f"{'figure':42} {'median ms':>10} {'p95 ms':>10} {'CPU ms':>10}")
    for name, t in results.items():
        print(f"{name:42} {statistics.median(t.wall):10.1f} {p95(t.wall):10.1f} {statistics.median(t.cpu):10.1f}")
    for name, value in figures.items():
        print(f"{name:42} {value:>10}")
    map90 = statistics.median(results["map 90 d (themes cached)"].wall)
    ratio = ratios["plain / map 90 d (themes cached)"]
    print(f"target, map 90 d median under 50 ms: {'met' if map90 < 50 else 'NOT met'} ({map90:.1f} ms); "
          f"at least 20x the plain scan: {'met' if ratio >= 20 else 'NOT met'} ({ratio:.1f}x); "
          f"identical numbers: {'met' if not diffs else 'NOT met'}")
    return 1 if diffs else 0


if __name__ == "__main__":
    main()
