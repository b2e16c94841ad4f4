"""The events API contract: authentication, intake of one event or a list, idempotency, validation
by field path, journey and touchpoint resolution, JSON errors for every client mistake, and the
read-only endpoints (journeys, scores, OpenAPI document, health check)."""
from __future__ import annotations

import json
from datetime import datetime

import pytest
import yaml
from sqlalchemy import func, select

from feedback_service.config import PROJECT_ROOT
from feedback_service.events.models import Event
from feedback_service.extensions import db
from feedback_service.journeys.library import load_library
from feedback_service.patients.models import Patient
from feedback_service.scheduling.models import Invitation
from tests.conftest import event_body, uid

EVENTS = "/api/v1/events"
INVITATION_KEYS = {"id", "status", "reason", "stage", "touchpoint", "channel", "question_set",
                   "question_set_version", "send_at"}


# ---------------------------------------------------------------------------------------------- helpers

def post(client, headers, body, status=202):
    r = client.post(EVENTS, json=body, headers=headers)
    assert r.status_code == status, r.get_json()
    assert r.is_json
    return r.get_json()


def stored(app, external_id) -> list[tuple[int, str]]:
    """(id, source) of every stored event with this external id, whatever its source."""
    with app.app_context():
        return [(e.id, e.source) for e in
                db.session.scalars(select(Event).where(Event.external_id == external_id).order_by(Event.id))]


def create_key(app) -> tuple[str, str]:
    """(name, key) of a new API key, through the real CLI."""
    name = uid("hospital")
    result = app.test_cli_runner().invoke(args=["api-key", "create", name])
    assert result.exit_code == 0, result.output
    return name, result.stdout.strip().splitlines()[0]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def assert_unauthorized(response):
    assert response.status_code == 401
    assert response.is_json and isinstance(response.get_json()["error"], str)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def assert_invalid(response, *paths):
    """422 naming exactly these field paths."""
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body["error"], str)
    assert set(body["errors"]) == set(paths), body["errors"]
    assert all(isinstance(msg, str) and msg for msg in body["errors"].values())


@pytest.fixture
def journey_without(app, tmp_path):
    """A fresh copy of surveys/general-care without the trigger rule for one event type."""
    def make(event_type: str) -> str:
        slug = uid("j")
        root = tmp_path / uid("lib")
        dest = root / slug
        dest.mkdir(parents=True)
        for f in (PROJECT_ROOT / "surveys" / "general-care").glob("*.yaml"):
            doc = yaml.safe_load(f.read_text())
            if f.name == "journey.yaml":
                doc["slug"], doc["default"] = slug, False
                doc["rules"] = [r for r in doc["rules"] if r["event"] != event_type]
            (dest / f.name).write_text(yaml.safe_dump(doc, allow_unicode=True))
        with app.app_context():
            load_library(root)
            db.session.commit()
        return slug
    return make


# ---------------------------------------------------------------------------------------------- auth

@pytest.mark.parametrize("header", [
    None,
    "Basic {key}",
    "{key}",
    "Token {key}",
    "Bearer",
    "Bearer ",
    "Bearer fbk_not-a-real-key-at-all",
    "Bearer not-even-the-prefix",
    "Bearer {key}x",
], ids=["none", "basic", "no-scheme", "token-scheme", "bearer-alone", "bearer-empty", "wrong-key",
        "no-prefix", "key-plus-one"])
def test_events_without_a_valid_key_are_refused(app, client, api_key, header):
    body = event_body()
    headers = {} if header is None else {"Authorization": header.format(key=api_key)}
    assert_unauthorized(client.post(EVENTS, json=body, headers=headers))
    assert stored(app, body["external_id"]) == []


def test_a_revoked_key_is_refused(app, client):
    name, key = create_key(app)
    first = event_body()
    post(client, bearer(key), first)

    result = app.test_cli_runner().invoke(args=["api-key", "revoke", name])
    assert result.exit_code == 0, result.output

    second = event_body()
    assert_unauthorized(client.post(EVENTS, json=second, headers=bearer(key)))
    assert_unauthorized(client.get("/api/v1/journeys", headers=bearer(key)))
    assert stored(app, second["external_id"]) == []
    assert [source for _, source in stored(app, first["external_id"])] == [name]


def test_the_bearer_scheme_is_case_insensitive(client, api_key):
    post(client, {"Authorization": f"bearer {api_key}"}, event_body())


# ---------------------------------------------------------------------------------------------- one event

def test_one_new_event_is_stored_with_its_invitation(app, client, auth):
    body = event_body("booking")  # no journey, no touchpoint
    recorded = post(client, auth, body)

    assert recorded["external_id"] == body["external_id"]
    assert recorded["duplicate"] is False
    assert recorded["journey"] == "general-care"  # the default journey
    assert recorded["type"] == "booking"
    assert recorded["reason"] is None
    [inv] = recorded["invitations"]
    assert set(inv) == INVITATION_KEYS
    assert isinstance(inv["id"], int)
    assert (inv["status"], inv["reason"], inv["channel"]) == ("scheduled", None, "sms")
    assert (inv["stage"], inv["touchpoint"]) == ("booking", "phone-booking")  # the rule's default touchpoint
    assert inv["question_set"] == "booking"
    assert isinstance(inv["question_set_version"], int) and inv["question_set_version"] >= 1
    assert datetime.fromisoformat(inv["send_at"]).utcoffset() is not None

    with app.app_context():
        event = db.session.get(Event, recorded["id"])
        assert event.external_id == body["external_id"]
        assert event.journey.slug == "general-care" and event.touchpoint.slug == "phone-booking"
        assert event.patient.external_id == body["patient"]["id"]
        assert [i.id for i in event.invitations] == [inv["id"]]


@pytest.mark.parametrize("type_, stage, touchpoint, question_set", [
    ("booking", "booking", "phone-booking", "booking"),
    ("discharge", "discharge", "discharge-desk", "discharge"),
    ("follow_up", "follow-up", "follow-up-visit", "follow-up"),
])
def test_each_type_uses_its_rule_and_default_touchpoint(client, auth, new_journey, type_, stage, touchpoint,
                                                        question_set):
    journey = new_journey()
    recorded = post(client, auth, event_body(type_, journey=journey))
    assert recorded["journey"] == journey and recorded["type"] == type_
    [inv] = recorded["invitations"]
    assert (inv["stage"], inv["touchpoint"], inv["question_set"]) == (stage, touchpoint, question_set)


@pytest.mark.parametrize("type_, touchpoint", [
    ("booking", "online-booking"),
    ("discharge", "discharge-information"),
    ("follow_up", "telehealth"),
])
def test_an_explicit_touchpoint_of_the_rule_stage_is_honoured(app, client, auth, new_journey, type_, touchpoint):
    recorded = post(client, auth, event_body(type_, journey=new_journey(), touchpoint=touchpoint))
    [inv] = recorded["invitations"]
    assert inv["touchpoint"] == touchpoint
    with app.app_context():
        assert db.session.get(Event, recorded["id"]).touchpoint.slug == touchpoint
        assert db.session.get(Invitation, inv["id"]).touchpoint.slug == touchpoint


def test_an_event_without_a_rule_for_its_type_is_stored_with_no_rule(app, client, auth, journey_without):
    journey = journey_without("follow_up")
    recorded = post(client, auth, event_body("follow_up", journey=journey))
    assert recorded["duplicate"] is False and recorded["journey"] == journey
    assert recorded["invitations"] == [] and recorded["reason"] == "no-rule"
    with app.app_context():
        event = db.session.get(Event, recorded["id"])
        assert event.type == "follow_up" and event.invitations == []

    # The other rules of that journey still work.
    [inv] = post(client, auth, event_body("booking", journey=journey))["invitations"]
    assert inv["stage"] == "booking"


def test_a_duplicate_of_a_no_rule_event_still_says_why(client, auth, journey_without):
    # Was a bug: a duplicate answered reason null, so the client was not told why no survey would come.
    body = event_body("follow_up", journey=journey_without("follow_up"))
    assert post(client, auth, body)["reason"] == "no-rule"
    again = post(client, auth, body, status=200)
    assert again["duplicate"] is True
    assert again["invitations"] == [] and again["reason"] == "no-rule"


def test_a_duplicate_of_a_skipped_invitation_keeps_its_reason(client, auth, new_journey):
    body = event_body(journey=new_journey(), consent_sms=False, consent_email=False)
    original = post(client, auth, body)
    assert original["reason"] == "no-consent"
    again = post(client, auth, body, status=200)
    assert again["reason"] == "no-consent"
    assert [(i["id"], i["reason"]) for i in again["invitations"]] == [(original["invitations"][0]["id"],
                                                                        "no-consent")]


# ---------------------------------------------------------------------------------------------- lists

def test_a_list_answers_each_event_in_order(app, client, auth, new_journey):
    journey = new_journey()
    bodies = [event_body("discharge", journey=journey), event_body("booking", journey=journey),
              event_body("follow_up", journey=journey)]
    answer = post(client, auth, bodies)
    assert list(answer) == ["events"]
    events = answer["events"]
    assert [e["external_id"] for e in events] == [b["external_id"] for b in bodies]
    assert [e["type"] for e in events] == ["discharge", "booking", "follow_up"]
    assert [e["invitations"][0]["stage"] for e in events] == ["discharge", "booking", "follow-up"]
    assert all(e["duplicate"] is False for e in events)
    for e in events:
        assert stored(app, e["external_id"])[0][0] == e["id"]


def test_a_list_of_one_still_answers_a_list(client, auth):
    body = event_body()
    events = post(client, auth, [body])["events"]
    assert [e["external_id"] for e in events] == [body["external_id"]]


def test_a_list_of_1000_events_is_accepted(app, client, auth, journey_without):
    journey = journey_without("booking")  # no invitations to schedule keeps the request quick
    bodies = [event_body("booking", journey=journey) for _ in range(1000)]
    events = post(client, auth, bodies)["events"]
    assert len(events) == 1000
    assert [e["external_id"] for e in events] == [b["external_id"] for b in bodies]
    assert not any(e["duplicate"] for e in events)
    with app.app_context():
        ids = [b["external_id"] for b in bodies]
        assert db.session.scalar(select(func.count()).select_from(Event).where(Event.external_id.in_(ids))) == 1000


def test_a_list_of_1001_events_is_refused_whole(app, client, auth, journey_without):
    journey = journey_without("booking")
    bodies = [event_body("booking", journey=journey) for _ in range(1001)]
    assert_invalid(client.post(EVENTS, json=bodies, headers=auth), "body")
    assert stored(app, bodies[0]["external_id"]) == [] and stored(app, bodies[-1]["external_id"]) == []


def test_an_empty_list_is_refused(client, auth):
    assert_invalid(client.post(EVENTS, json=[], headers=auth), "body")


# ---------------------------------------------------------------------------------------------- duplicates

def test_a_duplicate_answers_200_with_the_original_and_changes_nothing(app, client, auth):
    body = event_body("booking", first_name="Ana")
    original = post(client, auth, body)
    [inv] = original["invitations"]

    resent = json.loads(json.dumps(body))
    resent["type"] = "discharge"
    resent["patient"].update(first_name="Changed", phone="+442071838750", email="other@example.org",
                             locale="es", timezone="Asia/Tokyo", consent_sms=False, consent_email=False)
    again = post(client, auth, resent, status=200)
    assert again["duplicate"] is True
    assert (again["id"], again["external_id"], again["type"]) == (original["id"], body["external_id"], "booking")
    assert [i["id"] for i in again["invitations"]] == [inv["id"]]

    with app.app_context():
        assert len(stored(app, body["external_id"])) == 1
        patient = db.session.scalar(select(Patient).where(Patient.external_id == body["patient"]["id"]))
        assert (patient.first_name, patient.phone, patient.email) == ("Ana", body["patient"]["phone"], "ana@example.org")
        assert (patient.locale, patient.timezone) == ("en", body["patient"]["timezone"])
        assert (patient.consent_sms, patient.consent_email) == (True, True)
        assert db.session.scalar(select(func.count()).select_from(Invitation)
                                 .where(Invitation.patient_id == patient.id)) == 1
        assert db.session.get(Invitation, inv["id"]).status == "scheduled"


def test_a_duplicate_inside_one_list_is_reported_for_the_second_copy(app, client, auth):
    first, other = event_body(), event_body()
    copy = {**first, "patient": {**first["patient"], "first_name": "Copy"}}
    events = post(client, auth, [first, other, copy])["events"]
    assert [e["duplicate"] for e in events] == [False, False, True]
    assert events[2]["id"] == events[0]["id"]
    assert [i["id"] for i in events[2]["invitations"]] == [i["id"] for i in events[0]["invitations"]]
    assert len(stored(app, first["external_id"])) == 1
    with app.app_context():
        patient = db.session.scalar(select(Patient).where(Patient.external_id == first["patient"]["id"]))
        assert patient.first_name == "Ana"


def test_a_list_of_only_duplicates_answers_200(client, auth):
    bodies = [event_body(), event_body()]
    first = post(client, auth, bodies)["events"]
    again = post(client, auth, bodies, status=200)["events"]
    assert [e["id"] for e in again] == [e["id"] for e in first]
    assert all(e["duplicate"] for e in again)


def test_a_list_mixing_new_and_duplicate_events_answers_202(client, auth):
    old = event_body()
    original = post(client, auth, old)
    events = post(client, auth, [old, event_body()])["events"]
    assert [e["duplicate"] for e in events] == [True, False]
    assert events[0]["id"] == original["id"]


def test_the_same_external_id_from_another_source_is_a_new_event(app, client, auth):
    body = event_body()
    original = post(client, auth, body)
    other_name, other_key = create_key(app)
    other = post(client, bearer(other_key), {**body, "patient": {**body["patient"], "id": uid("pat")}})
    assert other["duplicate"] is False and other["id"] != original["id"]
    assert len(other["invitations"]) == 1
    rows = stored(app, body["external_id"])
    assert [row_id for row_id, _ in rows] == [original["id"], other["id"]]
    assert rows[1][1] == other_name and rows[0][1] != other_name


# ---------------------------------------------------------------------------------------------- validation

def _set(path, value):
    def change(body):
        *parents, last = path.split(".")
        target = body
        for p in parents:
            target = target[p]
        target[last] = value
    return change


def _drop(name):
    return lambda body: body.pop(name)


BAD_FIELDS = [
    ("patient.phone", _set("patient.phone", "555-0123")),
    ("patient.phone", _set("patient.phone", "+1555")),
    ("occurred_at", _set("occurred_at", "2024-05-01T10:00:00")),
    ("occurred_at", _set("occurred_at", "yesterday")),
    ("type", _set("type", "visit")),
    ("patient.consent_sms", _set("patient.consent_sms", "yes")),
    ("patient.consent_email", _set("patient.consent_email", 1)),
    ("patient.timezone", _set("patient.timezone", "Mars/Olympus_Mons")),
    ("patient.email", _set("patient.email", "not-an-email")),
    ("patient.locale", _set("patient.locale", "english please")),
    ("priority", _set("priority", "high")),
    ("patient.nickname", _set("patient.nickname", "Annie")),
    ("patient", _drop("patient")),
    ("external_id", _drop("external_id")),
    ("external_id", _set("external_id", "")),
    ("journey", _set("journey", "Not A Slug")),
]


@pytest.mark.parametrize("path, change", BAD_FIELDS, ids=[f"{p}-{i}" for i, (p, _) in enumerate(BAD_FIELDS)])
def test_a_bad_field_is_named_by_its_path(app, client, auth, path, change):
    body = event_body()
    change(body)
    assert_invalid(client.post(EVENTS, json=body, headers=auth), path)
    if body.get("external_id"):
        assert stored(app, body["external_id"]) == []


def test_every_bad_field_is_named_at_once(client, auth):
    body = event_body(phone="12", email="nope", timezone="Nowhere/City", consent_sms="yes")
    body["type"] = "visit"
    body["occurred_at"] = "2024-05-01 10:00"
    assert_invalid(client.post(EVENTS, json=body, headers=auth),
                   "patient.phone", "patient.email", "patient.timezone", "patient.consent_sms", "type",
                   "occurred_at")


def test_a_bad_event_in_a_list_is_named_by_index_and_nothing_is_stored(app, client, auth):
    bodies = [event_body(), event_body(), event_body(phone="not a phone"), event_body()]
    bodies[3]["surprise"] = True
    assert_invalid(client.post(EVENTS, json=bodies, headers=auth), "[2].patient.phone", "[3].surprise")
    for body in bodies:
        assert stored(app, body["external_id"]) == []


def test_an_event_that_is_not_an_object_in_a_list_is_named_by_index(app, client, auth):
    good = event_body()
    assert_invalid(client.post(EVENTS, json=[good, "oops"], headers=auth), "[1]")
    assert stored(app, good["external_id"]) == []


# ---------------------------------------------------------------------------------------------- journey, touchpoint

def test_an_unknown_journey_is_refused(app, client, auth):
    body = event_body(journey="no-such-journey")
    assert_invalid(client.post(EVENTS, json=body, headers=auth), "journey")
    assert stored(app, body["external_id"]) == []


@pytest.mark.parametrize("type_, touchpoint", [
    ("booking", "discharge-desk"),  # a touchpoint of another stage
    ("discharge", "phone-booking"),
    ("follow_up", "nowhere"),  # no such touchpoint at all
])
def test_a_touchpoint_outside_the_rule_stage_is_refused(app, client, auth, new_journey, type_, touchpoint):
    body = event_body(type_, journey=new_journey(), touchpoint=touchpoint)
    assert_invalid(client.post(EVENTS, json=body, headers=auth), "touchpoint")
    assert stored(app, body["external_id"]) == []


def test_an_unknown_journey_in_a_list_stores_nothing(app, client, auth, new_journey):
    journey = new_journey()
    bodies = [event_body(journey=journey), event_body(journey="no-such-journey"),
              event_body("booking", journey=journey, touchpoint="care-team")]
    assert_invalid(client.post(EVENTS, json=bodies, headers=auth), "[1].journey", "[2].touchpoint")
    for body in bodies:
        assert stored(app, body["external_id"]) == []


def test_an_unknown_journey_in_a_list_of_one_is_named_by_index(client, auth, new_journey):
    # Was a bug: resolve_targets() prefixed paths only for lists of two or more.
    assert_invalid(client.post(EVENTS, json=[event_body(journey="no-such-journey")], headers=auth), "[0].journey")
    tp = event_body("booking", journey=new_journey(), touchpoint="care-team")
    assert_invalid(client.post(EVENTS, json=[tp], headers=auth), "[0].touchpoint")


# ---------------------------------------------------------------------------------------------- bodies and errors

@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_a_json_body_is_read_whatever_its_content_type(app, client, auth, content_type):
    # `curl -d` sends application/x-www-form-urlencoded unless told otherwise.
    body = event_body()
    r = client.post(EVENTS, data=json.dumps(body), headers={**auth, "Content-Type": content_type})
    assert r.status_code == 202, r.get_json()
    assert len(stored(app, body["external_id"])) == 1


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_answers_422_naming_body(app, client, auth, content_type):
    headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
    r = client.post(EVENTS, data="external_id=a&type=booking", headers=headers)
    assert r.status_code == 422 and r.is_json and "body" in r.get_json()["errors"]


def test_a_post_without_a_body_answers_422(client, auth):
    r = client.post(EVENTS, headers=auth)
    assert r.status_code == 422 and r.is_json and "body" in r.get_json()["errors"]


@pytest.mark.parametrize("raw", ['{"external_id": ', "{'single': 'quotes'}", "not json", "", "\xff\xfe",
                                 '{"a": 1} trailing'],
                         ids=["truncated", "single-quotes", "text", "empty", "bad-bytes", "trailing"])
def test_malformed_json_answers_422(client, auth, raw):
    r = client.post(EVENTS, data=raw.encode("latin-1"), headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.is_json and isinstance(r.get_json()["error"], str)
    assert "body" in r.get_json()["errors"]


@pytest.mark.parametrize("raw, path", [
    ("null", "body"), ("42", "body"), ('"an event"', "body"), ("true", "body"),
    ("{}", "external_id"), ('{"patient": null}', "patient"), ("[[]]", "[0]"), ("[null]", "[0]"),
    ('{"external_id": "EID", "type": "booking", "occurred_at": "2024-05-01T10:00:00Z", "patient": []}', "patient"),
    ('{"external_id": "EID", "type": "booking", "occurred_at": {"at": 1}, "patient": {"id": "p"}}', "occurred_at"),
    ('{"external_id": ["EID"], "type": "booking", "occurred_at": "2024-05-01T10:00:00Z", "patient": {"id": 7}}',
     "external_id"),
])
def test_json_that_is_no_event_answers_422_not_500(app, client, auth, raw, path):
    external_id = uid("evt")
    r = client.post(EVENTS, data=raw.replace("EID", external_id), headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 422, r.get_data(as_text=True)
    assert r.is_json and path in r.get_json()["errors"]
    assert stored(app, external_id) == []


def test_deeply_nested_json_answers_422_not_500(client, auth):
    # Was a bug: RecursionError escaped request.get_json(silent=True) as a 500.
    for raw in ("[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000):
        r = client.post(EVENTS, data=raw, headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 422 and r.is_json and "body" in r.get_json()["errors"]


@pytest.mark.parametrize("zone", ["Europe", "America/Argentina", "x" * 300], ids=["directory", "sub-directory",
                                                                                    "too-long"])
def test_a_timezone_that_is_a_folder_or_too_long_answers_422(app, client, auth, zone):
    # Was a bug: ZoneInfo raised IsADirectoryError / OSError(ENAMETOOLONG), uncaught: a 500.
    body = event_body(timezone=zone)
    assert_invalid(client.post(EVENTS, json=body, headers=auth), "patient.timezone")
    assert stored(app, body["external_id"]) == []


def test_a_locale_longer_than_its_column_is_a_422(app, client, auth):
    # Was a bug: pattern-valid but longer than VARCHAR(20), a 500 on PostgreSQL.
    body = event_body(locale="en-US-abcdefgh-ijklmnop-qrstuvwx")
    assert_invalid(client.post(EVENTS, json=body, headers=auth), "patient.locale")
    assert stored(app, body["external_id"]) == []


@pytest.mark.parametrize("value", [1764000000, 1764000000.5, True])
def test_occurred_at_must_be_an_iso_string(app, client, auth, value):
    body = {**event_body(), "occurred_at": value}
    assert_invalid(client.post(EVENTS, json=body, headers=auth), "occurred_at")


def test_an_unknown_api_path_answers_404_json(client, auth):
    for path in ("/api/v1/nothing-here", "/api/v2/events", "/api/v1/events/1"):
        r = client.get(path, headers=auth)
        assert r.status_code == 404 and r.is_json and isinstance(r.get_json()["error"], str), path


@pytest.mark.parametrize("method, path", [("GET", EVENTS), ("PUT", EVENTS), ("DELETE", EVENTS),
                                          ("POST", "/api/v1/journeys"), ("DELETE", "/api/v1/journeys/x/scores")])
def test_a_wrong_method_answers_405_json(client, auth, method, path):
    r = client.open(path, method=method, headers=auth)
    assert r.status_code == 405 and r.is_json and isinstance(r.get_json()["error"], str)


def test_a_405_names_the_allowed_methods(client, auth):
    # Was a bug: the JSON error handler dropped the Allow header (RFC 9110 15.5.6: MUST).
    r = client.get(EVENTS, headers=auth)
    assert r.status_code == 405 and r.is_json
    assert "POST" in {m.strip() for m in r.headers.get("Allow", "").split(",")}
    r = client.post("/api/v1/journeys", headers=auth)
    assert r.status_code == 405 and "GET" in {m.strip() for m in r.headers.get("Allow", "").split(",")}


# ---------------------------------------------------------------------------------------------- read endpoints

def test_journeys_are_listed_with_stages_and_touchpoints_in_order(client, auth, new_journey):
    mine = new_journey()
    r = client.get("/api/v1/journeys", headers=auth)
    assert r.status_code == 200
    journeys = {j["slug"]: j for j in r.get_json()["journeys"]}
    assert {"general-care", mine} <= set(journeys)

    general = journeys["general-care"]
    assert general["name"] == "General care" and general["default"] is True
    assert journeys[mine]["default"] is False
    stages = general["stages"]
    assert [s["slug"] for s in stages] == ["awareness", "booking", "pre-visit", "visit", "discharge", "follow-up"]
    assert [s["name"] for s in stages] == ["Awareness", "Booking", "Pre-visit", "Visit", "Discharge", "Follow-up"]
    assert [s["position"] for s in stages] == list(range(6))
    visit = stages[3]
    assert [t["slug"] for t in visit["touchpoints"]] == ["reception", "care-team", "facilities"]
    assert [t["name"] for t in visit["touchpoints"]] == ["Reception and check-in", "Care team",
                                                         "Rooms and facilities"]
    assert [t["position"] for t in visit["touchpoints"]] == [0, 1, 2]
    assert [t["kind"] for t in visit["touchpoints"]] == ["human", "human", "physical"]
    assert [t["slug"] for t in stages[1]["touchpoints"]] == ["phone-booking", "online-booking"]
    # A copy lists the same structure.
    assert [s["slug"] for s in journeys[mine]["stages"]] == [s["slug"] for s in stages]


def test_journeys_need_a_key(client):
    assert_unauthorized(client.get("/api/v1/journeys"))
    assert_unauthorized(client.get("/api/v1/journeys", headers=bearer("fbk_wrong")))


def test_scores_of_an_unknown_journey_answer_404_json(client, auth):
    r = client.get("/api/v1/journeys/no-such-journey/scores", headers=auth)
    assert r.status_code == 404 and r.is_json and isinstance(r.get_json()["error"], str)


@pytest.mark.parametrize("query, paths", [
    ("from=yesterday", {"from"}),
    ("to=2024-13-01", {"to"}),
    ("from=2024-02-30&to=31/12/2024", {"from", "to"}),
    ("from=2024-06-02&to=2024-06-01", {"from"}),
])
def test_scores_with_bad_dates_answer_422(client, auth, new_journey, query, paths):
    r = client.get(f"/api/v1/journeys/{new_journey()}/scores?{query}", headers=auth)
    assert_invalid(r, *paths)


def test_scores_with_a_good_period_answer_200(client, auth, new_journey):
    journey = new_journey()
    for query in ("", "?from=2024-06-01&to=2024-06-01", "?from=2024-01-01", "?to=2030-12-31"):
        r = client.get(f"/api/v1/journeys/{journey}/scores{query}", headers=auth)
        assert r.status_code == 200, (query, r.get_json())
        body = r.get_json()
        assert body["journey"] == journey and len(body["stages"]) == 6


def test_scores_need_a_key(client, new_journey):
    assert_unauthorized(client.get(f"/api/v1/journeys/{new_journey()}/scores"))
    assert_unauthorized(client.get("/api/v1/journeys/no-such-journey/scores"))


def test_the_openapi_document_needs_no_key(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = json.loads(r.get_data(as_text=True))
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {"/api/v1/events", "/api/v1/fhir", "/api/v1/hl7v2", "/api/v1/journeys",
                                 "/api/v1/journeys/{slug}/scores", "/api/v1/journeys/{slug}/map",
                                 "/api/v1/journeys/{slug}/map.csv", "/api/v1/journeys/{slug}/trends"}
    assert "post" in doc["paths"]["/api/v1/events"]
    assert "EventIn" in doc["components"]["schemas"]


def test_health_check(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


def test_a_body_over_8_mb_answers_413_json(client, auth):
    r = client.post(EVENTS, data=b"[" + b" " * (9 * 1024 * 1024) + b"]", headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.is_json and isinstance(r.get_json()["error"], str)
