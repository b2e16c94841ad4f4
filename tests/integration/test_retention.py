"""Data retention: patients, answers and hospital messages built through the real endpoints (JSON
events, FHIR, HL7 v2, the survey page, texts from patients, the dashboard) and the real jobs, part
of them moved back past the retention period by SQL; then the purge, as a function and as the
worker's job through the real CLI."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import JSON, String, Text, cast, or_, select, update

import jobs
from feedback_service.alerts.models import Alert
from feedback_service.alerts.services import save_rule
from feedback_service.events.models import Event, HospitalMessage
from feedback_service.extensions import db
from feedback_service.journeys.models import Journey
from feedback_service.patients.models import Patient
from feedback_service.responses.models import Answer, InboundMessage, Response
from feedback_service.retention import NOTE_REMOVED, PURGED, purge_expired
from feedback_service.rollups.models import Comment
from feedback_service.scheduling.models import Invitation
from feedback_service.sqltypes import UTCDateTime
from feedback_service.staff.models import AuditEntry
from tests.conftest import (TWILIO_SID, csrf_of, daytime_tz, event_body, message_for, new_phone, token_of,
                            twilio_post, uid)
from tests.hospital import SIU_S12, fresh_hl7

CLI = str(Path(sys.executable).parent / "feedback-service")
RETENTION_DAYS = 730
AGE_DAYS = 800  # how far back the old part of the data is moved: past the period
OUR_NUMBER = "+15005550006"
BOOKING = {"booking_ease": "4", "booking_satisfaction": "3"}


# -- building the data through the service's own doors ------------------------------------------

def letters(n: int = 10) -> str:
    """A made-up name part nobody else uses (letters only, as names are)."""
    return "".join("abcdefghijklmnopqrstuvwxyz"[b % 26] for b in uuid.uuid4().bytes[:n]).capitalize()


@dataclass
class Group:
    """One group of patients (old or recent): the sources its feeds post under, what it posted,
    and every identifying string it gave the service."""

    sources: list[str] = field(default_factory=list)
    invitations: list[int] = field(default_factory=list)  # the ones answered
    needles: set[str] = field(default_factory=set)
    sms_ids: list[str] = field(default_factory=list)  # MessageSids of texts the patients sent
    tokens: list[str] = field(default_factory=list)  # survey links that reached them
    alert_ids: list[int] = field(default_factory=list)


class Feeds:
    """An API key per feed (JSON events, FHIR, HL7 v2) of a group's own."""

    def __init__(self, app, group: Group, prefix: str):
        self.headers, self.source = {}, {}
        for kind in ("api", "fhir", "hl7"):
            self.source[kind] = name = uid(f"{prefix}-{kind}")
            result = app.test_cli_runner().invoke(args=["api-key", "create", name])
            assert result.exit_code == 0, result.output
            self.headers[kind] = {"Authorization": f"Bearer {result.stdout.strip().splitlines()[0]}"}
            group.sources.append(name)


def answer_on_page(client, outbox, inv_id: int, values: dict, group: Group) -> None:
    token = token_of(message_for(outbox, inv_id))
    page = client.get(f"/s/{token}")
    assert page.status_code == 200, page.text
    done = client.post(f"/s/{token}", data={"csrf_token": csrf_of(page.text), **values})
    assert done.status_code == 302, done.text
    group.tokens.append(token)
    group.invitations.append(inv_id)
    if values.get("comment"):
        group.needles.add(values["comment"])


def text_from(provider_client, number: str, body: str, group: Group) -> list[str]:
    sid = "SM" + uuid.uuid4().hex
    r = twilio_post(provider_client, "/webhooks/twilio/sms", {"From": number, "To": OUR_NUMBER, "Body": body,
                                                              "AccountSid": TWILIO_SID, "MessageSid": sid,
                                                              "NumMedia": "0"})
    assert r.status_code == 200, r.data
    group.sms_ids.append(sid)
    group.needles.add(sid)
    return r.data.decode()


def json_patient(group: Group, **extra) -> dict:
    """A patient block with identifiers of its own, all of them remembered as needles."""
    patient = {"id": uid("mrn"), "first_name": letters(), "phone": new_phone(), "email": f"{uid('pat')}@example.org",
               **extra}
    group.needles.update(v for k, v in patient.items() if k in ("id", "first_name", "phone", "email"))
    return patient


def post_json(client, feeds: Feeds, group: Group, journey: str, **patient) -> int:
    body = event_body(journey=journey, **json_patient(group, **patient))
    group.needles.add(body["external_id"])
    r = client.post("/api/v1/events", json=body, headers=feeds.headers["api"])
    assert r.status_code == 202, r.get_json()
    [inv] = r.get_json()["invitations"]
    assert inv["status"] == "scheduled", inv
    return inv["id"]


def post_hl7(client, feeds: Feeds, group: Group, location: str) -> int:
    mrn, appointment, phone, given, family = uid("mrn"), uid("appt"), new_phone(), letters(), letters()
    birth = f"19{40 + uuid.uuid4().int % 50}0{1 + uuid.uuid4().int % 9}1{uuid.uuid4().int % 9}"
    text = fresh_hl7(SIU_S12, control_id=uid("ctl"), happened=datetime.now(timezone.utc) - timedelta(hours=2),
                     PV1_3=location, PID_3=f"{mrn}^^^HOSP^MR", PID_5=f"{family}^{given}", PID_7=birth,
                     SCH_2=appointment, PID_13=f"{phone}^PRN^CP")
    group.needles.update({mrn, appointment, phone, given, family, birth})
    r = client.post("/api/v1/hl7v2", data=text.encode(), headers={**feeds.headers["hl7"],
                                                                   "Content-Type": "x-application/hl7-v2+er7"})
    assert r.status_code == 200 and "|AA|" in r.get_data(as_text=True), r.get_data(as_text=True)
    return only_invitation(client.application, feeds.source["hl7"])


def post_fhir(client, feeds: Feeds, group: Group, location: str) -> int:
    pid, mrn, appointment, phone, given = uid("p"), uid("mrn"), uid("a"), new_phone(), letters()
    email, birth = f"{uid('fhir')}@example.org", f"19{50 + uuid.uuid4().int % 40}-0{1 + uuid.uuid4().int % 9}-14"
    created = (datetime.now(timezone.utc) - timedelta(hours=2)).replace(microsecond=0)
    patient = {"resourceType": "Patient", "id": pid,
               "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                    "code": "MR"}]}, "value": mrn}],
               "name": [{"given": [given], "family": letters()}], "birthDate": birth,
               "telecom": [{"system": "phone", "use": "mobile", "value": phone}, {"system": "email", "value": email}]}
    booked = {"resourceType": "Appointment", "id": appointment, "status": "booked",
              "created": created.isoformat().replace("+00:00", "Z"),
              "start": (created + timedelta(days=7)).isoformat().replace("+00:00", "Z"),
              "end": (created + timedelta(days=7, hours=1)).isoformat().replace("+00:00", "Z"),
              "participant": [{"actor": {"reference": f"Patient/{pid}"}, "status": "accepted"},
                              {"actor": {"reference": f"Location/{location}"}, "status": "accepted"}]}
    group.needles.update({pid, mrn, appointment, phone, given, email, patient["name"][0]["family"]})
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": f"http://hospital.example/fhir/{r['resourceType']}/{r['id']}", "resource": r}
        for r in (patient, booked)]}
    r = client.post("/api/v1/fhir", data=json.dumps(bundle),
                    headers={**feeds.headers["fhir"], "Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.get_data(as_text=True)
    return only_invitation(client.application, feeds.source["fhir"])


def only_invitation(app, source: str) -> int:
    with app.app_context():
        ids = db.session.scalars(select(Invitation.id).join(Event, Event.id == Invitation.event_id)
                                 .where(Event.source == source, Invitation.status == "scheduled")).all()
    assert len(ids) == 1, ids
    return ids[0]


def resolve_alert(app, manager, inv_id: int, group: Group, note: str) -> int:
    with app.app_context():
        alert_id = db.session.scalar(select(Alert.id).join(Response, Response.id == Alert.response_id)
                                     .where(Response.invitation_id == inv_id))
    assert alert_id is not None
    page = manager.get(f"/dashboard/alerts/{alert_id}")
    assert page.status_code == 200
    done = manager.post(f"/dashboard/alerts/{alert_id}/resolve", data={"csrf_token": csrf_of(page.text), "note": note})
    assert done.status_code == 302, done.text
    group.needles.add(note)
    group.alert_ids.append(alert_id)
    return alert_id


@dataclass
class World:
    journey: str
    text_journey: str
    old: Group
    recent: Group
    mixed_patient: int = 0  # an old moment and a recent one: keeps who they are
    mixed_old_event: int = 0
    stop_phone: str = ""  # an old patient's number that texted STOP


def build(app, client, provider_client, outbox, run_jobs, manager, journey: str, text_journey: str,
          location: str, answers: int) -> World:
    """Both groups, through the endpoints and the jobs: `answers` old bookings answered on the
    page (one of them badly enough to raise an alert, resolved with a note quoting the patient),
    an old HL7 and FHIR booking answered, an old emailed one, an old text survey answered by text
    and then STOP, a patient with an old and a recent moment; and recent ones of each kind."""
    world = World(journey, text_journey, Group(), Group())
    old_feeds, recent_feeds = Feeds(app, world.old, "old"), Feeds(app, world.recent, "new")
    plan = []  # (group, invitation id, page answers)
    for i in range(answers):
        values = {"booking_ease": str(2 + i % 5), "booking_satisfaction": "1" if i == 0 else str(2 + i % 3),
                  "comment": f"Old comment {uid('c')}: the phone line was busy"}
        plan.append((world.old, post_json(client, old_feeds, world.old, journey), values))
    emailed = post_json(client, old_feeds, world.old, journey, consent_sms=False)
    plan.append((world.old, emailed, {**BOOKING, "comment": f"Emailed {uid('c')}"}))
    plan.append((world.old, post_hl7(client, old_feeds, world.old, location), {**BOOKING, "comment": uid("hl7c")}))
    plan.append((world.old, post_fhir(client, old_feeds, world.old, location), {**BOOKING, "comment": uid("fhc")}))

    # The mixed patient: emailed both times (texts to one number are limited to one a day).
    mixed = json_patient(world.old, consent_sms=False)
    world.recent.needles.update(world.old.needles & set(mixed.values()))
    world.old.needles.difference_update(mixed.values())
    first = event_body(journey=journey, **mixed)
    r = client.post("/api/v1/events", json=first, headers=old_feeds.headers["api"])
    assert r.status_code == 202
    plan.append((world.old, r.get_json()["invitations"][0]["id"], {**BOOKING, "comment": f"Mixed {uid('c')}"}))
    world.old.needles.add(first["external_id"])

    sms_old = post_json(client, old_feeds, world.old, text_journey)
    for i in range(2):
        values = {"booking_ease": str(3 + i), "booking_satisfaction": "1" if i == 0 else "4",
                  "comment": f"Recent comment {uid('c')}"}
        plan.append((world.recent, post_json(client, recent_feeds, world.recent, journey), values))
    for post in (post_hl7, post_fhir):
        plan.append((world.recent, post(client, recent_feeds, world.recent, location), {**BOOKING, "comment": uid("c")}))
    sms_recent = post_json(client, recent_feeds, world.recent, text_journey)

    run_jobs()
    for group, inv_id, values in plan:
        answer_on_page(client, outbox, inv_id, values, group)
    second = event_body(journey=text_journey, **mixed)
    r = client.post("/api/v1/events", json=second, headers=old_feeds.headers["api"])
    assert r.status_code == 202 and r.get_json()["invitations"][0]["status"] == "scheduled", r.get_json()
    world.recent.needles.add(second["external_id"])
    run_jobs()

    for group, inv_id in ((world.old, sms_old), (world.recent, sms_recent)):
        phone = message_for(outbox, inv_id)["to"]
        text_from(provider_client, phone, "4", group)
        group.invitations.append(inv_id)
        group.tokens.append(token_of(message_for(outbox, inv_id)))
    world.stop_phone = message_for(outbox, sms_old)["to"]
    text_from(provider_client, world.stop_phone, "STOP", world.old)

    resolve_alert(app, manager, plan[0][1], world.old, f"Called {first_name_of(app, plan[0][1])} about {uid('n')}")
    recent_bad = next(inv for group, inv, values in plan
                      if group is world.recent and values["booking_satisfaction"] == "1")
    resolve_alert(app, manager, recent_bad, world.recent, f"Apologised {uid('note')}")

    with app.app_context():
        statuses = db.session.scalars(select(Invitation.status).where(
            Invitation.id.in_(world.old.invitations + world.recent.invitations))).all()
        assert set(statuses) == {"answered"} and len(statuses) == len(world.old.invitations + world.recent.invitations)
        patient = db.session.scalar(select(Patient).where(Patient.source == old_feeds.source["api"],
                                                          Patient.external_id == mixed["id"]))
        world.mixed_patient = patient.id
        world.mixed_old_event = db.session.scalar(select(Event.id).where(Event.source == old_feeds.source["api"],
                                                                         Event.external_id == first["external_id"]))
    return world


def first_name_of(app, inv_id: int) -> str:
    with app.app_context():
        return db.session.get(Invitation, inv_id).patient.first_name


# -- moving the old group back in time ---------------------------------------------------------------

def old_rows(world: World) -> dict[str, set]:
    """The primary keys of every row that belongs to the old group, per table."""
    sources = world.old.sources
    with db.session.no_autoflush:
        events = set(db.session.scalars(select(Event.id).where(Event.source.in_(sources),
                                                               Event.patient_id != world.mixed_patient)))
        events.add(world.mixed_old_event)
        invitations = set(db.session.scalars(select(Invitation.id).where(Invitation.event_id.in_(events))))
        responses = set(db.session.scalars(select(Response.id).where(Response.invitation_id.in_(invitations))))
        alerts = set(db.session.scalars(select(Alert.id).where(Alert.response_id.in_(responses))))
        return {
            "events": events, "invitations": invitations, "responses": responses, "alerts": alerts,
            "answers": set(db.session.scalars(select(Answer.id).where(Answer.response_id.in_(responses)))),
            "comments": set(db.session.scalars(select(Comment.id).where(Comment.response_id.in_(responses)))),
            "audit_log": set(db.session.scalars(select(AuditEntry.id).where(
                AuditEntry.target.in_([f"alert {a}" for a in alerts])))),
            "patients": set(db.session.scalars(select(Patient.id).where(Patient.source.in_(sources),
                                                                        Patient.id != world.mixed_patient))),
            "hospital_messages": set(db.session.scalars(select(HospitalMessage.id).where(
                HospitalMessage.source.in_(sources)))),
            "inbound_messages": set(db.session.scalars(select(InboundMessage.id).where(
                InboundMessage.provider_message_id.in_(world.old.sms_ids)))),
        }


def move_back(rows: dict[str, set], days: int) -> None:
    """Every time of these rows, `days` earlier (then the rollups are rebuilt for the new days)."""
    for name, ids in rows.items():
        table = db.metadata.tables[name]
        times = [c for c in table.columns if isinstance(c.type, UTCDateTime)]
        if not times:
            continue
        for row in db.session.execute(select(table.c.id, *times).where(table.c.id.in_(ids))).all():
            values = {c.name: row[i + 1] - timedelta(days=days) for i, c in enumerate(times) if row[i + 1] is not None}
            db.session.execute(update(table).where(table.c.id == row[0]).values(**values))
    db.session.commit()


# -- looking at the whole database ---------------------------------------------------------------

def dump() -> dict[str, dict]:
    """Every row of every table, by primary key."""
    out = {}
    for table in db.metadata.sorted_tables:
        pk = list(table.primary_key.columns)
        out[table.name] = {tuple(row[c.name] for c in pk): dict(row)
                           for row in db.session.execute(select(table)).mappings()}
    db.session.rollback()
    return out


def diff(before: dict, after: dict) -> dict[str, dict]:
    """Per table: rows deleted, rows added, and the changed columns of each changed row."""
    out = {}
    for name, rows in before.items():
        now = after[name]
        changed = {k: {c for c in rows[k] if rows[k][c] != now[k][c]} for k in rows.keys() & now.keys()
                   if rows[k] != now[k]}
        found = {"deleted": set(rows.keys() - now.keys()), "added": set(now.keys() - rows.keys()), "changed": changed}
        if any(found.values()):
            out[name] = found
    return out


def text_columns(table):
    return [c for c in table.columns if isinstance(c.type, (String, Text, JSON))]


def occurrences(needles: set[str]) -> set[tuple[str, str, str]]:
    """(table, column, needle) wherever a needle appears in a text or JSON column of any table."""
    found = set()
    for table in db.metadata.sorted_tables:
        for column in text_columns(table):  # one column at a time: SQLite caps an expression's depth
            hits = or_(*(cast(column, Text).contains(n, autoescape=True) for n in needles))
            for (value,) in db.session.execute(select(column).where(hits)).all():
                text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
                found.update((table.name, column.name, n) for n in needles if n in text)
    db.session.rollback()
    return found


# -- what managers and integrations read ------------------------------------------------------------

def without_themes(doc):
    """The feed without its friction themes: they are mined from the comments' words, which the
    purge removes (numbers are what must not change)."""
    if isinstance(doc, dict):
        return {k: without_themes(v) for k, v in doc.items() if k != "themes"}
    if isinstance(doc, list):
        return [without_themes(v) for v in doc]
    return doc


def themes_in(doc) -> list:
    if isinstance(doc, dict):
        return [t for k, v in doc.items() for t in (v if k == "themes" and isinstance(v, list) else themes_in(v))]
    if isinstance(doc, list):
        return [t for v in doc for t in themes_in(v)]
    return []


def has_a_score(doc) -> bool:
    if isinstance(doc, dict):
        return isinstance(doc.get("score"), (int, float)) or any(has_a_score(v) for v in doc.values())
    return isinstance(doc, list) and any(has_a_score(v) for v in doc)


def reports(client, auth, world: World, start: date) -> dict:
    """Scores, map (JSON and CSV) and trends of both journeys, over the whole span and the old part."""
    out = {}
    today = datetime.now(timezone.utc).date()
    for slug in (world.journey, world.text_journey):
        for period in ((start, today), (start, start + timedelta(days=10))):
            query = f"from={period[0]}&to={period[1]}"
            for path in ("scores", "map", "trends"):
                r = client.get(f"/api/v1/journeys/{slug}/{path}?{query}", headers=auth)
                assert r.status_code == 200, r.get_data(as_text=True)
                out[(slug, period, path)] = r.get_json()
            r = client.get(f"/api/v1/journeys/{slug}/map.csv?{query}", headers=auth)
            assert r.status_code == 200
            out[(slug, period, "csv")] = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    return out


def comparable(reports_: dict) -> dict:
    return {k: [row for row in v if not row["metric"].startswith("theme:")] if k[2] == "csv" else without_themes(v)
            for k, v in reports_.items()}


def rollup_rows() -> dict[str, list]:
    """The rollup tables and comments without their ids (a rebuild numbers rows afresh)."""
    out = {}
    for name in ("rollup_daily_counts", "rollup_daily_scores", "rollup_touchpoint_counts", "rollup_touchpoint_scores",
                 "comments"):
        table = db.metadata.tables[name]
        out[name] = sorted(tuple(sorted((k, str(v)) for k, v in row.items() if k != "id"))
                           for row in db.session.execute(select(table)).mappings())
    db.session.rollback()
    return out


def rebuild(app) -> None:
    result = app.test_cli_runner().invoke(args=["rollups", "rebuild"])
    assert result.exit_code == 0, result.output


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture
def setting_up(app, new_journey, routes, monkeypatch, staff):
    """Two journeys of the test's own (the booking survey, and the one answered by text), an alert
    rule on bad satisfaction, a location routed to the first for HL7 and FHIR bookings, and noon
    as the hospital's default time zone (hospital messages carry none)."""
    journey, text_journey = new_journey(), new_journey(rules={"booking": {"question_set": "booking-pulse"}})
    location = uid("LOC").upper()
    settings = routes({"match": {"location": [location]}, "journey": journey})
    zone = daytime_tz()
    monkeypatch.setitem(app.config, "FEEDBACK_DEFAULT_TIMEZONE", zone)
    monkeypatch.setitem(app.extensions, "feedback_intake",
                        replace(settings, timezone=zone, policy=replace(settings.policy, default_timezone=zone)))
    with app.app_context():
        found = db.session.scalar(select(Journey).where(Journey.slug == journey))
        save_rule(found, None, low_satisfaction=True, high_friction=False, terms=[], active=True)
        db.session.commit()
    return journey, text_journey, location, staff("manager")


# -- the tests -------------------------------------------------------------------------------------

def test_the_retention_setting_defaults_to_two_years_and_the_environment_overrides_it(app):
    from feedback_service.config import load_settings
    assert load_settings({})["RETENTION_DAYS"] == RETENTION_DAYS
    assert load_settings({"FEEDBACK_RETENTION_DAYS": "0"})["RETENTION_DAYS"] == 0
    assert app.config["FEEDBACK_RETENTION_DAYS"] == RETENTION_DAYS


def test_old_patients_lose_who_they_are_everywhere_and_scores_stay(app, client, provider_client, auth, outbox,
                                                                   run_jobs, setting_up):
    journey, text_journey, location, manager = setting_up
    world = build(app, client, provider_client, outbox, run_jobs, manager, journey, text_journey, location,
                  answers=12)
    with app.app_context():
        rows = old_rows(world)
        assert len(rows["events"]) == 17 and len(rows["hospital_messages"]) == 2 and len(rows["inbound_messages"]) == 2
        move_back(rows, AGE_DAYS)
    rebuild(app)  # the moved moments now count on their new (old) days
    with app.app_context():
        rows = old_rows(world)  # the comments as the rebuild numbered them
    start = datetime.now(timezone.utc).date() - timedelta(days=AGE_DAYS + 4)
    before_reports = reports(client, auth, world, start)
    old_map = before_reports[(journey, (start, start + timedelta(days=10)), "map")]
    assert has_a_score(without_themes(old_map)) and themes_in(old_map)

    with app.app_context():
        before = dump()
        rollups_before = rollup_rows()
        # Nothing is ever old when the period is 0.
        assert purge_expired(0) == {}
        assert diff(before, dump()) == {}
        # Everything old is there to be found, in clear, before the purge.
        assert {n for _t, _c, n in occurrences(world.old.needles)} == world.old.needles

        counts = purge_expired(RETENTION_DAYS, batch_size=3)  # small batches: many transactions
        after = dump()

    # Exactly the old rows changed, only in their identifying columns; everything else (recent
    # patients, the other tests' rows, the rollups, opt-outs, responses, numeric answers) as it was.
    text_answers = {k for k in rows["answers"] if before["answers"][(k,)]["question_key"] == "comment"}
    noted = {k for k in rows["alerts"] if before["alerts"][(k,)]["note"]}
    expected = {
        "events": {"changed": {(k,): {"external_id", "reference", "message_id"} for k in rows["events"]}},
        "invitations": {"changed": {(k,): {"sent_to", "token_hash", "provider_message_id"}
                                    for k in rows["invitations"]}},
        "answers": {"deleted": {(k,) for k in text_answers}},
        "comments": {"deleted": {(k,) for k in rows["comments"]}},
        "alerts": {"changed": {(k,): {"note"} for k in noted}},
        "audit_log": {"changed": {(k,): {"after"} for k in rows["audit_log"]
                                  if (before["audit_log"][(k,)]["after"] or {}).get("note")}},
        "patients": {"changed": {(k,): {"external_id", "first_name", "phone", "email", "birth_date", "fhir_id"}
                                 for k in rows["patients"]}},
        "hospital_messages": {"changed": {(k,): {"body", "result"} for k in rows["hospital_messages"]}},
        "inbound_messages": {"deleted": {(k,) for k in rows["inbound_messages"]}},
    }
    found = diff(before, after)
    assert set(found) == set(expected)
    for name, want in expected.items():
        assert found[name]["added"] == set(), name
        assert found[name]["deleted"] == want.get("deleted", set()), name
        changed = found[name]["changed"]
        assert set(changed) == set(want.get("changed", {})), name
        for key, columns in changed.items():  # a column may already have been empty
            assert columns <= want["changed"][key] | {"last_error", "reminder_token_hash"}, (name, key, columns)
    assert all(after["events"][(k,)]["external_id"] == f"{PURGED}{k}" for k in rows["events"])
    assert all(after["invitations"][(k,)]["token_hash"] is None for k in rows["invitations"])
    assert all(after["patients"][(k,)]["birth_date"] is None and after["patients"][(k,)]["updated_at"] ==
               before["patients"][(k,)]["updated_at"] for k in rows["patients"])
    assert all(after["alerts"][(k,)]["note"] == NOTE_REMOVED for k in noted)
    assert all((after["hospital_messages"][(k,)]["body"], after["hospital_messages"][(k,)]["result"]) == ("", None)
               for k in rows["hospital_messages"])
    assert counts == {"events": len(rows["events"]), "invitations": len(rows["invitations"]),
                      "answers": len(text_answers), "comments": len(rows["comments"]), "alerts": len(noted),
                      "audit_entries": len(expected["audit_log"]["changed"]), "patients": len(rows["patients"]),
                      "hospital_messages": len(rows["hospital_messages"]),
                      "inbound_messages": len(rows["inbound_messages"])}
    assert counts["answers"] == counts["comments"] == 16 and counts["alerts"] == counts["audit_entries"] == 1

    with app.app_context():
        # No trace of the old patients in any text or JSON column of any table, but the opt-out.
        assert occurrences(world.old.needles) == {("opt_outs", "address", world.stop_phone)}
        # The recent ones and the mixed patient (who came back since) are all still there.
        assert {n for _t, _c, n in occurrences(world.recent.needles)} == world.recent.needles
        mixed = db.session.get(Patient, world.mixed_patient)
        assert mixed.first_name and mixed.email and not mixed.external_id.startswith(PURGED)
        assert db.session.get(Event, world.mixed_old_event).external_id == f"{PURGED}{world.mixed_old_event}"
        assert rollup_rows() | {"comments": None} == rollups_before | {"comments": None}

    # What managers and integrations read is the same, but for the themes mined from the comments.
    after_reports = reports(client, auth, world, start)
    assert comparable(after_reports) == comparable(before_reports)
    assert themes_in(after_reports[(journey, (start, start + timedelta(days=10)), "map")]) == []
    # Rebuilding the rollups from what is left gives the same rows and the same reports.
    with app.app_context():
        purged_rollups = rollup_rows()
    rebuild(app)
    with app.app_context():
        assert rollup_rows() == purged_rollups
    assert comparable(reports(client, auth, world, start)) == comparable(before_reports)

    # Old links are unknown now, the alert page still opens without the
    # comment or the note, and the STOP still holds for the number when it comes back.
    for token in world.old.tokens:  # before, these opted the address out, answered or not
        assert client.post(f"/unsubscribe/{token}").status_code == 404
    old_alert = manager.get(f"/dashboard/alerts/{world.old.alert_ids[0]}")
    assert old_alert.status_code == 200 and NOTE_REMOVED in old_alert.text
    assert not any(n in old_alert.text for n in world.old.needles)

    with app.app_context():
        again = dump()
        assert purge_expired(RETENTION_DAYS) == dict.fromkeys(counts, 0)
        assert diff(again, dump()) == {}

    back = event_body(journey=text_journey, phone=world.stop_phone, consent_email=False)
    r = client.post("/api/v1/events", json=back, headers=auth)
    assert r.status_code == 202 and r.get_json()["invitations"][0]["reason"] == "opted-out", r.get_json()


def test_the_worker_job_purges_through_the_cli_and_a_second_run_changes_nothing(
        app, client, provider_client, auth, outbox, run_jobs, setting_up, settings):
    job = next((j for j in jobs.JOBS if j.NAME == "retention"), None)
    if job is None:
        pytest.skip("retention job not registered yet")
    journey, text_journey, location, manager = setting_up
    world = build(app, client, provider_client, outbox, run_jobs, manager, journey, text_journey, location,
                  answers=1)
    with app.app_context():
        rows = old_rows(world)
        move_back(rows, AGE_DAYS)
    env = {**os.environ, **settings, "FEEDBACK_RETENTION_DAYS": str(RETENTION_DAYS)}

    def run_once() -> dict:
        done = subprocess.run([CLI, "jobs", "run-once"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])["retention"]

    first = run_once()
    assert first["events"] == len(rows["events"]) and first["patients"] == len(rows["patients"])
    assert first["hospital_messages"] == len(rows["hospital_messages"]) and first["comments"] == len(rows["comments"])
    with app.app_context():
        assert occurrences(world.old.needles) == {("opt_outs", "address", world.stop_phone)}
        assert {n for _t, _c, n in occurrences(world.recent.needles)} == world.recent.needles
    assert run_once() == dict.fromkeys(first, 0)


def test_a_running_process_shows_no_purged_comment_in_the_themes(app, client, outbox, run_jobs, setting_up):
    journey, _text_journey, _location, manager = setting_up
    world = World(journey, "", Group(), Group())
    old_feeds, recent_feeds = Feeds(app, world.old, "old"), Feeds(app, world.recent, "new")
    old = [post_json(client, old_feeds, world.old, journey) for _ in range(12)]
    recent = post_json(client, recent_feeds, world.recent, journey)
    run_jobs()
    for i, inv_id in enumerate(old):
        answer_on_page(client, outbox, inv_id, {"booking_ease": str(2 + i % 5), "booking_satisfaction": "2",
                                                "comment": f"Old comment {uid('c')}: the phone line was busy"},
                       world.old)
    answer_on_page(client, outbox, recent, {**BOOKING, "comment": "All fine"}, world.recent)
    with app.app_context():
        move_back(old_rows(world), AGE_DAYS)
    rebuild(app)
    start = datetime.now(timezone.utc).date() - timedelta(days=AGE_DAYS + 4)
    page = f"/dashboard/comments?journey={journey}&from={start}&to={datetime.now(timezone.utc).date()}"
    old_comments = {n for n in world.old.needles if n.startswith("Old comment")}
    shown = manager.get(page)
    assert shown.status_code == 200 and any(c in shown.text for c in old_comments)

    with app.app_context():
        assert purge_expired(RETENTION_DAYS)["comments"] == len(old)
    shown = manager.get(page)
    assert shown.status_code == 200
    assert not [c for c in old_comments if c in shown.text]
