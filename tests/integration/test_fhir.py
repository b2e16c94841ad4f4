"""FHIR R4 in (POST /api/v1/fhir): authentication and content negotiation, OperationOutcome
answers, batch- and transaction-response Bundles, subscription notifications, patient resolution,
routing through the mapping file, exclusions, the discharge contact window, cancellations,
duplicates, the shared real FHIR samples, and no 500 for odd shapes."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from feedback_service.events.models import Event, HospitalMessage
from feedback_service.extensions import db
from feedback_service.patients.models import Patient
from tests.conftest import new_phone, uid
from tests.hospital import FHIR_SAMPLES, fhir_sample

FHIR = "/api/v1/fhir"
FHIR_JSON = "application/fhir+json"
OUTCOME_SYSTEM = "urn:feedback-service:intake-outcome"
REASON_SYSTEM = "urn:feedback-service:skip-reason"


# ---------------------------------------------------------------------------------------------- helpers

class Feed:
    """A hospital feed of the test's own: an API key for a fresh source, so that the shared
    samples' ids (Patient/example ...) and every row the test counts are its own."""

    def __init__(self, source: str, key: str):
        self.source, self.key = source, key
        self.headers = {"Authorization": f"Bearer {key}"}


def new_feed(app) -> Feed:
    source = uid("hospital")
    result = app.test_cli_runner().invoke(args=["api-key", "create", source])
    assert result.exit_code == 0, result.output
    return Feed(source, result.stdout.strip().splitlines()[0])


@pytest.fixture
def feed(app) -> Feed:
    return new_feed(app)


def post(client, feed_or_headers, body, status: int | None = None, *, content_type: str = FHIR_JSON,
         raw: bytes | None = None):
    headers = feed_or_headers.headers if isinstance(feed_or_headers, Feed) else feed_or_headers
    data = raw if raw is not None else json.dumps(body)
    r = client.post(FHIR, data=data, headers={**headers, "Content-Type": content_type})
    if status is not None:
        assert r.status_code == status, r.get_data(as_text=True)
    assert r.status_code != 500
    return r


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def concept(*codes: str) -> dict:
    return {"coding": [{"system": "urn:test", "code": c} for c in codes]}


def patient_resource(pid: str | None = None, *, mrn: str | None = None, phone: str | None = None,
                     email: str | None = None, birth: str | None = "1970-05-01", **extra) -> dict:
    pid = pid or uid("p")
    resource = {
        "resourceType": "Patient", "id": pid,
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                             "code": "MR"}]}, "value": mrn or uid("mrn")}],
        "name": [{"given": ["Ana"], "family": "Test"}],
        "telecom": [{"system": "phone", "use": "mobile", "value": phone or new_phone()},
                    {"system": "email", "value": email or f"{uid('ana')}@example.org"}],
    }
    if birth:
        resource["birthDate"] = birth
    resource.update(extra)
    return resource


def appointment(aid: str | None = None, patient_ref: str | None = None, *, status: str = "booked",
                created: datetime | None = None, location: str | None = None,
                appointment_type: str | None = None, service_type: str | None = None,
                category: str | None = None, **extra) -> dict:
    resource = {"resourceType": "Appointment", "id": aid or uid("a"), "status": status,
                "created": iso(created or now_utc()),
                "start": iso(now_utc() + timedelta(days=7)), "end": iso(now_utc() + timedelta(days=7, hours=1)),
                "participant": [{"actor": {"reference": patient_ref}, "status": "accepted"}] if patient_ref else []}
    if location:
        resource["participant"].append({"actor": {"reference": f"Location/{location}"}, "status": "accepted"})
    if appointment_type:
        resource["appointmentType"] = concept(appointment_type)
    if service_type:
        resource["serviceType"] = [concept(service_type)]
    if category:
        resource["serviceCategory"] = [concept(category)]
    resource.update(extra)
    return resource


def encounter(eid: str | None = None, patient_ref: str | None = None, *, status: str = "finished",
              klass: str = "IMP", end: datetime | None = None, location: str | None = None,
              disposition: str | None = None, type_code: str | None = None,
              appointment_ref: str | None = None, **extra) -> dict:
    end = end or now_utc() - timedelta(hours=1)
    resource = {"resourceType": "Encounter", "id": eid or uid("e"), "status": status,
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": klass},
                "period": {"start": iso(end - timedelta(days=3)), "end": iso(end)}}
    if patient_ref:
        resource["subject"] = {"reference": patient_ref}
    if location:
        resource["location"] = [{"location": {"reference": f"Location/{location}"}}]
    if disposition:
        resource["hospitalization"] = {"dischargeDisposition": concept(disposition)}
    if type_code:
        resource["type"] = [concept(type_code)]
    if appointment_ref:
        resource["appointment"] = [{"reference": appointment_ref}]
    resource.update(extra)
    return resource


def bundle(type_: str, *resources, full_urls: bool = True) -> dict:
    entries = []
    for res in resources:
        entry = {"resource": res}
        if full_urls and isinstance(res, dict) and res.get("id"):
            entry["fullUrl"] = f"http://hospital.example/fhir/{res['resourceType']}/{res['id']}"
        entries.append(entry)
    return {"resourceType": "Bundle", "type": type_, "entry": entries}


def codes_of(outcome: dict) -> dict[str, str]:
    """{system: code} of the first issue's details: what became of the resource, and why."""
    issue = outcome["issue"][0]
    return {c["system"]: c["code"] for c in issue.get("details", {}).get("coding", [])}


def assert_outcome(response, status: int, outcome: str, reason=None) -> dict:
    """`reason`: the skip-reason code expected (None: none; ...: not checked)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == FHIR_JSON
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    codes = codes_of(body)
    assert codes[OUTCOME_SYSTEM] == outcome, body
    if reason is not ...:
        assert codes.get(REASON_SYSTEM) == reason, body
    assert body["issue"][0]["severity"] == "information"
    return body


def assert_error(response, status: int, code: str, *, expression: str | None = None,
                 mentions: str | None = None) -> dict:
    """An OperationOutcome with an error issue of this code (and expression, and text)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == FHIR_JSON
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"], body
    assert all(i["severity"] == "error" and i["code"] == code for i in body["issue"]), body
    if expression is not None:
        assert expression in [e for i in body["issue"] for e in i.get("expression", [])], body
    if mentions is not None:
        assert any(mentions in i["diagnostics"] for i in body["issue"]), body
    return body


def entry_responses(response, type_: str = "batch-response") -> list[dict]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == FHIR_JSON
    body = response.get_json()
    assert body["resourceType"] == "Bundle" and body["type"] == type_, body
    return [e["response"] for e in body["entry"]]


def events_of(app, feed: Feed, reference: str | None = None) -> list[dict]:
    with app.app_context():
        query = select(Event).where(Event.source == feed.source).order_by(Event.id)
        if reference:
            query = query.where(Event.reference == reference)
        return [{"id": e.id, "type": e.type, "journey": e.journey.slug if e.journey else None,
                 "touchpoint": e.touchpoint.slug if e.touchpoint else None, "skip_reason": e.skip_reason,
                 "occurred_at": e.occurred_at, "reference": e.reference, "codes": e.codes,
                 "patient_class": e.patient_class, "disposition": e.discharge_disposition,
                 "external_id": e.patient.external_id,
                 "invitations": [{"id": i.id, "status": i.status, "skip_reason": i.skip_reason,
                                  "channel": i.channel, "send_at": i.send_at, "send_by": i.send_by,
                                  "journey": i.journey.slug, "touchpoint": i.touchpoint.slug}
                                 for i in e.invitations]}
                for e in db.session.scalars(query)]


def patients_of(app, feed: Feed) -> list[Patient]:
    with app.app_context():
        rows = list(db.session.scalars(select(Patient).where(Patient.source == feed.source).order_by(Patient.id)))
        for row in rows:
            db.session.expunge(row)
        return rows


def messages_of(app, feed: Feed) -> list[tuple[str, str]]:
    with app.app_context():
        return [(m.message_type, m.status) for m in db.session.scalars(
            select(HospitalMessage).where(HospitalMessage.source == feed.source).order_by(HospitalMessage.id))]


def known_patient(client, feed: Feed, pid: str | None = None, **facts) -> dict:
    """A Patient posted on its own first: what follows finds it recorded, as the patient of most
    tests here. (A Patient in the same Bundle as its event: see "patients" and "regressions".)"""
    p = patient_resource(pid, **facts)
    assert_outcome(post(client, feed, p), 200, "patient-updated")
    return p


@pytest.fixture
def journey_route(new_journey, routes):
    """A fresh journey, routed from a location code of the test's own: (slug, location code)."""
    def make(touchpoints: dict | None = None, follow_up: bool = False, **match) -> tuple[str, str]:
        slug = new_journey()
        location = uid("LOC")
        routes({"match": match or {"location": [location]}, "journey": slug, "follow_up": follow_up,
                "touchpoints": touchpoints or {}})
        return slug, location
    return make


# ---------------------------------------------------------------------------------------------- auth and content

@pytest.mark.parametrize("header", [None, "Basic {key}", "Bearer", "Bearer fbk_not-a-real-key", "Bearer {key}x"],
                         ids=["none", "basic", "bearer-alone", "wrong-key", "key-plus-one"])
def test_a_bad_key_answers_401_operation_outcome(app, client, api_key, header):
    headers = {"Authorization": header.format(key=api_key)} if header else {}
    r = client.post(FHIR, data=json.dumps(patient_resource()), headers={**headers, "Content-Type": FHIR_JSON})
    assert_error(r, 401, "login")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_events_api_key_is_taken(app, client, auth):
    """The shared session key of /api/v1/events works here too."""
    assert_outcome(post(client, auth, patient_resource()), 200, "patient-updated")


@pytest.mark.parametrize("content_type", [FHIR_JSON, "application/json", "application/fhir+json; charset=utf-8"])
def test_fhir_and_plain_json_are_taken(client, feed, content_type):
    assert_outcome(post(client, feed, patient_resource(), content_type=content_type), 200, "patient-updated")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml",
                                          "application/fhir+xml"])
def test_another_content_type_answers_415(app, client, feed, content_type):
    assert_error(post(client, feed, patient_resource(), content_type=content_type), 415, "not-supported")
    assert messages_of(app, feed) == [] and patients_of(app, feed) == []


@pytest.mark.parametrize("raw", [b"", b"{", b"{'resourceType': 'Patient'}", b"\xff\xfe\x00", b"[" * 100000],
                         ids=["empty", "truncated", "single-quotes", "bad-bytes", "deep-nesting"])
def test_invalid_json_answers_400_structure(app, client, feed, raw):
    assert_error(post(client, feed, None, raw=raw), 400, "structure")
    assert messages_of(app, feed) == []


@pytest.mark.parametrize("body", [None, [], "Patient", 5, {}, {"resourceType": 7}, {"id": "x"}],
                         ids=["null", "list", "string", "number", "empty-object", "numeric-type", "no-type"])
def test_json_that_is_no_resource_answers_400(app, client, feed, body):
    assert_error(post(client, feed, body), 400, "invalid", mentions="resourceType")
    assert messages_of(app, feed) == []


@pytest.mark.parametrize("body", [
    fhir_sample("Subscription-example.json"),
    {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}},
    {"resourceType": "Nope", "id": "n1"},
], ids=["subscription-sample", "observation", "nope"])
def test_a_resource_we_do_not_take_answers_422_not_supported(app, client, feed, body):
    assert_error(post(client, feed, body), 422, "not-supported", mentions=f"{body['resourceType']} resources")
    assert messages_of(app, feed) == [] and events_of(app, feed) == []


@pytest.mark.parametrize("bundle_type", ["document", "message", "transaction-response", "batch-response",
                                         "searchsetx", None])
def test_bundle_types_we_do_not_read_answer_422_not_supported(app, client, feed, bundle_type):
    body = bundle("batch", patient_resource())
    body["type"] = bundle_type
    assert_error(post(client, feed, body), 422, "not-supported", mentions="Bundle.type")
    assert patients_of(app, feed) == []


@pytest.mark.parametrize("bundle_type", ["batch", "collection", "searchset", "history", "subscription-notification"])
def test_bundle_types_we_read_answer_a_batch_response(app, client, feed, bundle_type):
    p = patient_resource()
    [response] = entry_responses(post(client, feed, bundle(bundle_type, p)))
    assert response["status"] == "200 OK"
    assert codes_of(response["outcome"])[OUTCOME_SYSTEM] == "patient-updated"
    assert [x.fhir_id for x in patients_of(app, feed)] == [p["id"]]



# ---------------------------------------------------------------------------------------------- one resource

def test_a_booked_appointment_answers_201_with_a_scheduled_invitation(app, client, feed, journey_route):
    slug, location = journey_route(touchpoints={"booking": "online-booking"})
    p = patient_resource()
    created = now_utc() - timedelta(minutes=10)
    assert_outcome(post(client, feed, p), 200, "patient-updated")
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location, created=created)
    body = assert_outcome(post(client, feed, a), 201, "event")
    [event] = events_of(app, feed)
    assert f"booking event {event['id']}" in body["issue"][0]["diagnostics"]
    assert (event["type"], event["journey"], event["touchpoint"]) == ("booking", slug, "online-booking")
    assert event["occurred_at"] == created  # Appointment.created
    assert event["reference"] == f"Appointment/{a['id']}"
    assert event["codes"] == {"location": [location]}
    [inv] = event["invitations"]
    assert (inv["status"], inv["channel"], inv["journey"], inv["touchpoint"]) == ("scheduled", "sms", slug,
                                                                                 "online-booking")
    assert inv["send_at"] >= created + timedelta(minutes=60)  # the booking rule's delay


def test_without_created_the_booking_time_is_meta_last_updated(app, client, feed, journey_route):
    _, location = journey_route()
    p = patient_resource()
    updated = now_utc() - timedelta(hours=2)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location, meta={"lastUpdated": iso(updated)})
    del a["created"]
    assert_outcome(post(client, feed, p), 200, "patient-updated")
    assert_outcome(post(client, feed, a), 201, "event")
    [event] = events_of(app, feed)
    assert event["occurred_at"] == updated


def test_a_booking_with_neither_created_nor_last_updated_is_refused(app, client, feed):
    p = patient_resource()
    post(client, feed, p, 200)
    a = appointment(patient_ref=f"Patient/{p['id']}")
    del a["created"]
    assert_error(post(client, feed, a), 422, "invalid", mentions="Appointment.created")
    assert events_of(app, feed) == []


@pytest.mark.parametrize("change, path", [
    ({"start": "not-a-date"}, "Appointment.start"),
    ({"created": "2024-13-45"}, "Appointment.created"),
    ({"status": None}, "Appointment.status"),
    ({"status": "nope"}, "Appointment.status"),
    ({"participant": "everyone"}, "Appointment.participant"),
], ids=["bad-start", "bad-created", "missing-status", "unknown-status", "participant-not-a-list"])
def test_an_invalid_appointment_answers_422_naming_the_path(app, client, feed, change, path):
    p = patient_resource()
    post(client, feed, p, 200)
    a = appointment(patient_ref=f"Patient/{p['id']}")
    a.update(change)
    if change.get("status", "") is None:
        del a["status"]
    assert_error(post(client, feed, a), 422, "invalid", expression=path)
    assert events_of(app, feed) == []


@pytest.mark.parametrize("change, path", [
    ({"status": "done"}, "Encounter.status"),
    ({"class": "IMP"}, "Encounter.class"),
    ({"period": {"end": "yesterday"}}, "Encounter.period.end"),
], ids=["unknown-status", "class-not-a-coding", "bad-period-end"])
def test_an_invalid_encounter_answers_422_naming_the_path(app, client, feed, change, path):
    p = patient_resource()
    post(client, feed, p, 200)
    e = encounter(patient_ref=f"Patient/{p['id']}")
    e.update(change)
    body = assert_error(post(client, feed, e), 422, "invalid")
    paths = [x for i in body["issue"] for x in i.get("expression", [])]
    assert any(x.startswith(path) for x in paths), paths
    assert events_of(app, feed) == []


@pytest.mark.parametrize("kind, status", [
    *[("Appointment", s) for s in ("proposed", "pending", "arrived", "checked-in", "waitlist")],
    *[("Encounter", s) for s in ("planned", "arrived", "triaged", "in-progress", "onleave", "unknown")],
])
def test_a_status_that_is_no_moment_is_ignored_with_its_reason(app, client, feed, kind, status):
    p = known_patient(client, feed)
    make = appointment if kind == "Appointment" else encounter
    body = assert_outcome(post(client, feed, make(patient_ref=f"Patient/{p['id']}", status=status)), 200,
                          "ignored", "not-a-journey-moment")
    assert body["issue"][0]["diagnostics"] == f"ignored: status {status!r} is no journey moment"
    assert events_of(app, feed) == []


# ---------------------------------------------------------------------------------------------- patients

def test_a_patient_alone_is_kept_with_its_facts(app, client, feed):
    phone = new_phone()
    p = patient_resource(mrn=uid("MRN"), phone=phone, email="Ana.Test@Example.ORG", birth="1961-02-03",
                         communication=[{"language": {"coding": [{"code": "en"}]}},
                                        {"language": {"coding": [{"code": "es"}]}, "preferred": True}])
    body = assert_outcome(post(client, feed, p), 200, "patient-updated")
    assert p["id"] in body["issue"][0]["diagnostics"]
    [row] = patients_of(app, feed)
    assert row.external_id == p["identifier"][0]["value"]
    assert (row.fhir_id, row.phone, row.email, row.locale) == (p["id"], phone, "ana.test@example.org", "es")
    assert row.birth_date == date(1961, 2, 3) and row.first_name == "Ana"
    assert (row.consent_sms, row.consent_email) == (True, True)  # the mapping file's consent
    assert (row.deceased, row.no_publicity) == (False, False)
    assert events_of(app, feed) == []


def test_a_patient_without_identifier_is_known_by_its_reference(app, client, feed):
    p = patient_resource()
    del p["identifier"]
    post(client, feed, p, 200)
    assert [r.external_id for r in patients_of(app, feed)] == [f"Patient/{p['id']}"]


def test_a_national_number_is_read_with_the_mapping_region(app, client, feed):
    p = patient_resource()
    p["telecom"] = [{"system": "phone", "use": "home", "value": "(212) 555-0100"},
                    {"system": "phone", "use": "mobile", "value": "(415) 555-2671"}]
    post(client, feed, p, 200)
    [row] = patients_of(app, feed)
    assert row.phone == "+14155552671"  # the mobile one, as E.164 in the US region


def test_a_patient_posted_again_is_updated_not_duplicated(app, client, feed):
    p = patient_resource()
    post(client, feed, p, 200)
    phone = new_phone()
    p["telecom"] = [{"system": "sms", "value": phone}]
    assert_outcome(post(client, feed, p), 200, "patient-updated")
    [row] = patients_of(app, feed)
    assert row.phone == phone


def test_a_patient_sent_earlier_is_found_by_id_for_the_same_source_only(app, client, feed, journey_route):
    _, location = journey_route()
    p = patient_resource()
    post(client, feed, p, 200)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    assert_outcome(post(client, feed, a), 201, "event")
    [event] = events_of(app, feed)
    assert event["external_id"] == p["identifier"][0]["value"]
    # Another hospital does not know this patient.
    other = new_feed(app)
    assert_error(post(client, other, a), 422, "invalid", mentions=f"Patient/{p['id']} is not known")
    assert events_of(app, other) == []


def test_an_unknown_patient_answers_422_naming_it(app, client, feed):
    ref = f"Patient/{uid('nobody')}"
    assert_error(post(client, feed, appointment(patient_ref=ref)), 422, "invalid", mentions=f"{ref} is not known")
    assert events_of(app, feed) == [] and patients_of(app, feed) == []


def test_an_appointment_without_a_patient_answers_422(app, client, feed):
    assert_error(post(client, feed, appointment()), 422, "invalid", mentions="the patient is missing")


def test_a_contained_patient_is_used(app, client, feed, journey_route):
    _, location = journey_route()
    p = patient_resource("p1")
    a = appointment(patient_ref="#p1", location=location, contained=[p])
    assert_outcome(post(client, feed, a), 201, "event")
    [event] = events_of(app, feed)
    assert event["external_id"] == p["identifier"][0]["value"]
    assert event["invitations"][0]["status"] == "scheduled"


@pytest.mark.parametrize("by", ["full-url", "patient-id"])
def test_a_patient_in_the_bundle_is_found_by_full_url_or_id(app, client, feed, journey_route, by):
    """Wherever it stands in the Bundle: here after its appointment (before it: "regressions")."""
    _, location = journey_route()
    p = patient_resource()
    full_url = f"urn:uuid:{uid('u')}" if by == "full-url" else f"http://hospital.example/fhir/Patient/{p['id']}"
    a = appointment(patient_ref=full_url if by == "full-url" else f"Patient/{p['id']}", location=location)
    body = {"resourceType": "Bundle", "type": "batch",
            "entry": [{"resource": a}, {"fullUrl": full_url, "resource": p}]}
    first, second = entry_responses(post(client, feed, body))
    assert first["status"] == "201 Created"
    assert codes_of(second["outcome"])[OUTCOME_SYSTEM] == "patient-updated"
    [event] = events_of(app, feed)
    assert event["external_id"] == p["identifier"][0]["value"]
    assert [row.fhir_id for row in patients_of(app, feed)] == [p["id"]]


@pytest.mark.parametrize("facts, reason", [
    ({"deceasedBoolean": True}, "deceased"),
    ({"deceasedDateTime": "2024-01-01T00:00:00Z"}, "deceased"),
    ({"meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                             "code": "R"}]}}, "no-publicity"),
    ({"meta": {"security": [{"code": "V"}]}}, "no-publicity"),
], ids=["deceased-boolean", "deceased-datetime", "restricted", "very-restricted"])
def test_patient_facts_exclude_the_booking(app, client, feed, journey_route, facts, reason):
    _, location = journey_route()
    p = known_patient(client, feed, **facts)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    [response] = entry_responses(post(client, feed, bundle("batch", a)))
    assert response["status"] == "201 Created"
    assert codes_of(response["outcome"]) == {OUTCOME_SYSTEM: "event", REASON_SYSTEM: reason}
    [event] = events_of(app, feed)
    assert event["skip_reason"] == reason and event["invitations"] == []


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


@pytest.mark.parametrize("excluded", [True, False], ids=["turns-18-tomorrow", "turns-18-today"])
def test_under_the_minimum_age_on_the_day_is_excluded(app, client, feed, journey_route, excluded):
    _, location = journey_route()
    eighteen = years_before(now_utc().date(), 18)
    birth = eighteen + timedelta(days=1) if excluded else eighteen
    p = known_patient(client, feed, birth=birth.isoformat())
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    [response] = entry_responses(post(client, feed, bundle("batch", a)))
    [event] = events_of(app, feed)
    if excluded:
        assert codes_of(response["outcome"])[REASON_SYSTEM] == "under-minimum-age"
        assert event["skip_reason"] == "under-minimum-age" and event["invitations"] == []
    else:
        assert REASON_SYSTEM not in codes_of(response["outcome"])
        assert event["skip_reason"] is None and event["invitations"][0]["status"] == "scheduled"


# ---------------------------------------------------------------------------------------------- routing

@pytest.mark.parametrize("kind, where", [
    ("department", {"serviceCategory": [concept("{code}")]}),
    ("department", {"specialty": [concept("{code}")]}),
    ("appointment_type", {"appointmentType": concept("{code}")}),
    ("service_type", {"serviceType": [concept("{code}")]}),
], ids=["service-category", "specialty", "appointment-type", "service-type"])
def test_appointment_codes_route_to_the_journey(app, client, feed, new_journey, routes, kind, where):
    slug, code = new_journey(), uid("CODE")
    routes({"match": {kind: [code.lower()]}, "journey": slug})  # codes match case-insensitively
    p = known_patient(client, feed)
    a = appointment(patient_ref=f"Patient/{p['id']}", **json.loads(json.dumps(where).replace("{code}", code)))
    entry_responses(post(client, feed, bundle("batch", a)))
    [event] = events_of(app, feed)
    assert event["journey"] == slug and event["touchpoint"] == "phone-booking"  # the rule's default
    assert code in event["codes"][kind]


def test_a_route_naming_two_kinds_needs_both(app, client, feed, new_journey, routes):
    slug, location, kind = new_journey(), uid("LOC"), uid("TYPE")
    routes({"match": {"location": [location], "appointment_type": [kind]}, "journey": slug})
    p = known_patient(client, feed)
    only_location = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    both = appointment(patient_ref=f"Patient/{p['id']}", location=location, appointment_type=kind)
    entry_responses(post(client, feed, bundle("batch", only_location, both)))
    assert events_of(app, feed, f"Appointment/{only_location['id']}")[0]["journey"] is None
    assert events_of(app, feed, f"Appointment/{both['id']}")[0]["journey"] == slug


def test_an_unmapped_appointment_is_kept_without_journey_and_listed(app, client, feed):
    p = known_patient(client, feed)
    location = uid("NOWHERE")
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    [response] = entry_responses(post(client, feed, bundle("batch", a)))
    assert response["status"] == "201 Created"
    assert codes_of(response["outcome"]) == {OUTCOME_SYSTEM: "event", REASON_SYSTEM: "unmapped"}
    [event] = events_of(app, feed)
    assert (event["journey"], event["skip_reason"], event["invitations"]) == (None, "unmapped", [])
    result = app.test_cli_runner().invoke(args=["events", "unmapped", "--json"])
    assert result.exit_code == 0, result.output
    groups = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    [mine] = [g for g in groups if g["source"] == feed.source]
    assert mine["type"] == "booking" and mine["count"] == 1
    assert mine["codes"] == {"location": [location]} and mine["example_event_id"] == event["id"]


def test_a_route_to_a_journey_that_does_not_exist_says_so(app, client, feed, routes):
    location = uid("LOC")
    routes({"match": {"location": [location]}, "journey": uid("missing")})
    p = known_patient(client, feed)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    [response] = entry_responses(post(client, feed, bundle("batch", a)))
    assert codes_of(response["outcome"])[REASON_SYSTEM] == "mapped-journey-missing"


def test_a_sensitive_service_line_is_never_surveyed(app, client, feed, journey_route):
    _, location = journey_route()
    p = known_patient(client, feed)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location, service_type="SUB")
    e = encounter(patient_ref=f"Patient/{p['id']}", location=location, type_code="psy")
    responses = entry_responses(post(client, feed, bundle("batch", a, e)))
    assert [codes_of(r["outcome"]).get(REASON_SYSTEM) for r in responses] == [
        "sensitive-service-line", "sensitive-service-line"]
    assert all(ev["skip_reason"] == "sensitive-service-line" and not ev["invitations"]
               for ev in events_of(app, feed))


def test_the_shipped_mapping_routes_the_sample_appointment(app, client, feed):
    """Appointment-example's FOLLOWUP appointment type meets the shipped "Follow-up appointments"
    route (general-care); a booking there takes the booking rule's default touchpoint."""
    a = fhir_sample("Appointment-example.json")
    a["created"] = iso(now_utc())
    known_patient(client, feed, "example")
    body = assert_outcome(post(client, feed, a), 201, "event")
    assert "scheduled by sms" in body["issue"][0]["diagnostics"]
    [event] = events_of(app, feed)
    assert (event["type"], event["journey"], event["touchpoint"]) == ("booking", "general-care", "phone-booking")
    assert event["reference"] == "Appointment/example" and event["invitations"][0]["status"] == "scheduled"
    assert event["codes"] == {"location": ["1"], "department": ["gp", "394814009"],
                              "appointment_type": ["FOLLOWUP"], "service_type": ["52"]}


# ---------------------------------------------------------------------------------------------- encounters

@pytest.mark.parametrize("klass, patient_class", [("IMP", "inpatient"), ("ACUTE", "inpatient"),
                                                  ("NONAC", "inpatient"), ("EMER", "emergency")])
def test_a_finished_inpatient_or_emergency_encounter_is_a_discharge(app, client, feed, journey_route, klass,
                                                                     patient_class):
    slug, location = journey_route(touchpoints={"discharge": "discharge-information"})
    p = known_patient(client, feed)
    ended = now_utc() - timedelta(hours=3)
    e = encounter(patient_ref=f"Patient/{p['id']}", klass=klass, location=location, end=ended)
    [response] = entry_responses(post(client, feed, bundle("batch", e)))
    [event] = events_of(app, feed)
    assert response["status"] == "201 Created" and response["location"] == f"events/{event['id']}"
    assert (event["type"], event["journey"], event["touchpoint"]) == ("discharge", slug, "discharge-information")
    assert event["occurred_at"] == ended and event["patient_class"] == patient_class
    assert event["reference"] == f"Encounter/{e['id']}"
    [inv] = event["invitations"]
    assert inv["status"] == "scheduled"


def test_without_period_end_the_discharge_time_is_meta_last_updated(app, client, feed, journey_route):
    _, location = journey_route()
    p = known_patient(client, feed)
    updated = now_utc() - timedelta(hours=5)
    e = encounter(patient_ref=f"Patient/{p['id']}", location=location, meta={"lastUpdated": iso(updated)})
    del e["period"]
    entry_responses(post(client, feed, bundle("batch", e)))
    [event] = events_of(app, feed)
    assert event["type"] == "discharge" and event["occurred_at"] == updated


def test_a_discharge_invitation_keeps_to_the_contact_window(app, client, feed, journey_route):
    _, location = journey_route()
    p = known_patient(client, feed)
    ended = now_utc() - timedelta(days=5)
    e = encounter(patient_ref=f"Patient/{p['id']}", location=location, end=ended)
    entry_responses(post(client, feed, bundle("batch", e)))
    [event] = events_of(app, feed)
    [inv] = event["invitations"]
    assert inv["status"] == "scheduled"
    assert inv["send_at"] >= ended + timedelta(hours=48)
    assert inv["send_by"] == ended + timedelta(days=42)


@pytest.mark.parametrize("days_ago, reason", [(12, "too-late"), (41, "too-late"),
                                               (43, "outside-contact-window"), (60, "outside-contact-window")])
def test_an_old_discharge_is_not_sent_and_says_why(app, client, feed, journey_route, days_ago, reason):
    """The 42-day contact window is checked first; inside it, a survey due more than 7 days ago
    (FEEDBACK_MAX_SEND_DELAY_DAYS; due 48 hours after discharge) is too late."""
    _, location = journey_route()
    p = known_patient(client, feed)
    ended = now_utc() - timedelta(days=days_ago)
    e = encounter(patient_ref=f"Patient/{p['id']}", location=location, end=ended)
    [response] = entry_responses(post(client, feed, bundle("batch", e)))
    assert codes_of(response["outcome"]) == {OUTCOME_SYSTEM: "event", REASON_SYSTEM: reason}
    [event] = events_of(app, feed)
    [inv] = event["invitations"]
    assert (inv["status"], inv["skip_reason"], inv["send_at"]) == ("skipped", reason, None)
    assert inv["send_by"] == ended + timedelta(days=42)


@pytest.mark.parametrize("disposition, reason", [
    ("hospice", "discharged-to-hospice"), ("50", "discharged-to-hospice"), ("51", "discharged-to-hospice"),
    ("snf", "discharged-to-facility"), ("other-hcf", "discharged-to-facility"), ("REHAB", "discharged-to-facility"),
    ("exp", "deceased"), ("21", "discharged-to-law-enforcement"), ("home", None),
])
@pytest.mark.parametrize("visit", ["discharge", "follow_up"])
def test_a_discharge_disposition_may_exclude(app, client, feed, journey_route, disposition, reason, visit):
    """Whatever the end of the visit becomes: a follow-up too."""
    _, location = journey_route(follow_up=visit == "follow_up")
    p = known_patient(client, feed)
    e = encounter(patient_ref=f"Patient/{p['id']}", location=location, disposition=disposition,
                  klass="IMP" if visit == "discharge" else "AMB")
    [response] = entry_responses(post(client, feed, bundle("batch", e)))
    assert codes_of(response["outcome"]).get(REASON_SYSTEM) == reason
    [event] = events_of(app, feed)
    assert event["type"] == visit
    assert event["disposition"] == disposition and event["skip_reason"] == reason
    assert bool(event["invitations"]) is (reason is None)
    # A death recorded by the disposition is the patient's, for whatever else was planned.
    assert [row.deceased for row in patients_of(app, feed)] == [reason == "deceased"]


@pytest.mark.parametrize("kind", ["ambulatory-encounter", "fulfilled-appointment"])
def test_the_end_of_a_visit_on_a_route_without_follow_up_is_ignored(app, client, feed, journey_route, kind):
    _, location = journey_route()  # not a follow-up route
    p = known_patient(client, feed)
    if kind == "ambulatory-encounter":
        resource = encounter(patient_ref=f"Patient/{p['id']}", klass="AMB", location=location)
    else:
        resource = appointment(patient_ref=f"Patient/{p['id']}", location=location, status="fulfilled")
    [response] = entry_responses(post(client, feed, bundle("batch", resource)))
    assert response["status"] == "200 OK" and "location" not in response
    assert codes_of(response["outcome"]) == {OUTCOME_SYSTEM: "ignored", REASON_SYSTEM: "not-a-follow-up"}
    assert response["outcome"]["issue"][0]["diagnostics"] == (
        "ignored: the end of a visit that the mapping does not make a follow-up")
    assert events_of(app, feed) == []


def test_an_ambulatory_encounter_on_a_follow_up_route_is_a_follow_up(app, client, feed, journey_route):
    slug, location = journey_route(follow_up=True, touchpoints={"follow_up": "telehealth"})
    p = known_patient(client, feed)
    ended = now_utc() - timedelta(hours=1)
    e = encounter(patient_ref=f"Patient/{p['id']}", klass="AMB", location=location, end=ended)
    [response] = entry_responses(post(client, feed, bundle("batch", e)))
    assert response["status"] == "201 Created"
    [event] = events_of(app, feed)
    assert (event["type"], event["journey"], event["touchpoint"]) == ("follow_up", slug, "telehealth")
    assert event["occurred_at"] == ended
    assert event["invitations"][0]["status"] == "scheduled"


def test_an_inpatient_discharge_stays_a_discharge_at_a_follow_up_route(app, client, feed, journey_route):
    """The contact window (and the HCAHPS hold) must not be routed around."""
    _, location = journey_route(follow_up=True)
    p = known_patient(client, feed)
    e = encounter(patient_ref=f"Patient/{p['id']}", klass="IMP", location=location)
    entry_responses(post(client, feed, bundle("batch", e)))
    [event] = events_of(app, feed)
    assert event["type"] == "discharge" and event["invitations"][0]["send_by"] is not None


def test_an_unmapped_inpatient_discharge_is_kept_as_unmapped(app, client, feed):
    p = known_patient(client, feed)
    e = encounter(patient_ref=f"Patient/{p['id']}", location=uid("NOWHERE"))
    entry_responses(post(client, feed, bundle("batch", e)))
    [event] = events_of(app, feed)
    assert (event["type"], event["journey"], event["skip_reason"]) == ("discharge", None, "unmapped")


def test_a_fulfilled_appointment_on_a_follow_up_route_is_a_follow_up(app, client, feed, journey_route):
    slug, location = journey_route(follow_up=True)
    p = known_patient(client, feed)
    ended = now_utc() - timedelta(hours=2)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location, status="fulfilled", end=iso(ended))
    entry_responses(post(client, feed, bundle("batch", a)))
    [event] = events_of(app, feed)
    assert (event["type"], event["journey"]) == ("follow_up", slug)
    assert event["occurred_at"] == ended  # Appointment.end
    assert event["touchpoint"] == "follow-up-visit"


@pytest.mark.parametrize("appointment_status, appointment_answer", [
    ("fulfilled", "event"), ("proposed", "ignored"), ("arrived", "ignored"), ("waitlist", "ignored")])
def test_the_appointment_in_the_bundle_routes_its_encounter(app, client, feed, new_journey, routes,
                                                            appointment_status, appointment_answer):
    """Whatever the appointment's own status: its codes route the visit (one that is no moment
    itself is answered "ignored", and once was a 500)."""
    slug, kind = new_journey(), uid("FU")
    routes({"match": {"appointment_type": [kind]}, "journey": slug, "follow_up": True})
    p = known_patient(client, feed)
    a = appointment(patient_ref=f"Patient/{p['id']}", appointment_type=kind, status=appointment_status)
    e = encounter(patient_ref=f"Patient/{p['id']}", klass="AMB", appointment_ref=f"Appointment/{a['id']}")
    # The encounter alone carries no appointment codes: a visit no route places, kept as unmapped.
    entry_responses(post(client, feed, bundle("batch", e)))
    [alone] = events_of(app, feed)
    assert (alone["type"], alone["journey"], alone["skip_reason"]) == ("follow_up", None, "unmapped")
    e["id"] = uid("e")
    responses = entry_responses(post(client, feed, bundle("batch", a, e)))
    assert [codes_of(r["outcome"])[OUTCOME_SYSTEM] for r in responses] == [appointment_answer, "event"]
    assert responses[1]["status"] == "201 Created"
    encounter_event = events_of(app, feed, f"Encounter/{e['id']}")[0]
    assert (encounter_event["type"], encounter_event["journey"]) == ("follow_up", slug)
    assert kind in encounter_event["codes"]["appointment_type"]


def test_an_appointment_stored_earlier_routes_its_encounter(app, client, feed, new_journey, routes):
    slug, kind = new_journey(), uid("FU")
    routes({"match": {"appointment_type": [kind]}, "journey": slug, "follow_up": True,
            "touchpoints": {"follow_up": "telehealth"}})
    p = known_patient(client, feed)
    a = appointment(patient_ref=f"Patient/{p['id']}", appointment_type=kind)
    entry_responses(post(client, feed, bundle("batch", a)))
    [booking] = events_of(app, feed)
    assert booking["type"] == "booking" and booking["journey"] == slug
    e = encounter(patient_ref=f"Patient/{p['id']}", klass="AMB", appointment_ref=f"Appointment/{a['id']}")
    # (Whether the survey fatigue rule then skips this second survey: see "bugs found".)
    assert_outcome(post(client, feed, e), 201, "event", ...)
    [follow_up] = events_of(app, feed, f"Encounter/{e['id']}")
    assert (follow_up["type"], follow_up["journey"], follow_up["touchpoint"]) == ("follow_up", slug, "telehealth")


# ---------------------------------------------------------------------------------------------- cancellations

@pytest.mark.parametrize("status", ["cancelled", "noshow", "entered-in-error"])
def test_a_cancelled_appointment_cancels_its_unsent_invitation(app, client, feed, journey_route, status):
    _, location = journey_route()
    p = known_patient(client, feed)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    entry_responses(post(client, feed, bundle("batch", a)))
    [event] = events_of(app, feed)
    assert event["invitations"][0]["status"] == "scheduled"
    body = assert_outcome(post(client, feed, dict(a, status=status)), 200, "cancelled")
    assert body["issue"][0]["diagnostics"].startswith(f"1 unsent invitation(s) cancelled for Appointment/{a['id']}")
    [event] = events_of(app, feed)
    [inv] = event["invitations"]
    assert (inv["status"], inv["skip_reason"]) == ("cancelled", "cancelled-by-hospital")
    assert len(events_of(app, feed)) == 1  # a cancellation makes no event


def test_a_cancellation_touches_only_its_own_appointment_and_source(app, client, feed, journey_route):
    _, location = journey_route()
    # Two patients: one patient's second booking in the journey would be skipped for fatigue.
    p1, p2 = known_patient(client, feed), known_patient(client, feed)
    a1 = appointment(patient_ref=f"Patient/{p1['id']}", location=location)
    a2 = appointment(patient_ref=f"Patient/{p2['id']}", location=location)
    entry_responses(post(client, feed, bundle("batch", a1, a2)))
    other = new_feed(app)
    # Another source cancelling an appointment of the same id cancels nothing of ours.
    body = assert_outcome(post(client, other, dict(a1, status="cancelled")), 200, "cancelled")
    assert body["issue"][0]["diagnostics"].startswith("0 unsent")
    assert_outcome(post(client, feed, dict(a1, status="cancelled")), 200, "cancelled")
    statuses = {ev["reference"]: ev["invitations"][0]["status"] for ev in events_of(app, feed)}
    assert statuses == {f"Appointment/{a1['id']}": "cancelled", f"Appointment/{a2['id']}": "scheduled"}


def test_a_cancellation_for_an_unknown_patient_is_taken(app, client, feed):
    a = appointment(patient_ref=f"Patient/{uid('nobody')}", status="cancelled")
    body = assert_outcome(post(client, feed, a), 200, "cancelled")
    assert body["issue"][0]["diagnostics"].startswith("0 unsent")
    assert patients_of(app, feed) == []


@pytest.mark.parametrize("status", ["cancelled", "entered-in-error"])
def test_a_cancelled_encounter_cancels_its_unsent_discharge_survey(app, client, feed, journey_route, status):
    _, location = journey_route()
    p = known_patient(client, feed)
    e = encounter(patient_ref=f"Patient/{p['id']}", location=location)
    entry_responses(post(client, feed, bundle("batch", e)))
    assert_outcome(post(client, feed, dict(e, status=status)), 200, "cancelled")
    [event] = events_of(app, feed)
    assert event["invitations"][0]["status"] == "cancelled"


# ---------------------------------------------------------------------------------------------- duplicates

def test_the_same_appointment_again_is_a_duplicate_with_nothing_new(app, client, feed, journey_route):
    _, location = journey_route()
    p = patient_resource()
    post(client, feed, p, 200)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    assert_outcome(post(client, feed, a), 201, "event")
    [before] = events_of(app, feed)
    resent = dict(a, meta={"versionId": "2"})  # another body, the same appointment and status
    body = assert_outcome(post(client, feed, resent), 200, "duplicate")
    assert f"duplicate of booking event {before['id']}" in body["issue"][0]["diagnostics"]
    assert events_of(app, feed) == [before]  # no new event, no new invitation


def test_the_same_body_twice_is_processed_again_and_answers_duplicate(app, client, feed, journey_route):
    _, location = journey_route()
    p = known_patient(client, feed)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    body = bundle("batch", p, a)
    [_, first] = entry_responses(post(client, feed, body))
    [_, second] = entry_responses(post(client, feed, body))
    assert (first["status"], codes_of(first["outcome"])[OUTCOME_SYSTEM]) == ("201 Created", "event")
    assert (second["status"], codes_of(second["outcome"])[OUTCOME_SYSTEM]) == ("200 OK", "duplicate")
    assert second["location"] == first["location"]
    [event] = events_of(app, feed)
    assert len(event["invitations"]) == 1
    # Each request stored on its own (a fresh control id), not answered from a copy.
    assert messages_of(app, feed) == [("Patient", "processed"), ("Bundle/batch", "processed"),
                                      ("Bundle/batch", "processed")]


def test_a_new_status_of_the_same_appointment_is_no_duplicate(app, client, feed, journey_route):
    _, location = journey_route(follow_up=True)
    p = known_patient(client, feed)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    entry_responses(post(client, feed, bundle("batch", a)))
    assert_outcome(post(client, feed, dict(a, status="fulfilled")), 201, "event", ...)
    assert [e["type"] for e in events_of(app, feed)] == ["booking", "follow_up"]


def test_a_duplicate_inside_one_bundle_is_reported_for_the_second_copy(app, client, feed, journey_route):
    _, location = journey_route()
    p = known_patient(client, feed)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    responses = entry_responses(post(client, feed, bundle("batch", a, dict(a, meta={"versionId": "2"}))))
    assert [codes_of(r["outcome"])[OUTCOME_SYSTEM] for r in responses] == ["event", "duplicate"]
    assert responses[0]["location"] == responses[1]["location"]
    assert len(events_of(app, feed)) == 1


# ---------------------------------------------------------------------------------------------- bundles

def test_a_batch_answers_each_entry_in_order_and_one_bad_entry_stops_nothing(app, client, feed, journey_route):
    _, location = journey_route()
    p = known_patient(client, feed)
    good = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    bad = appointment(patient_ref=f"Patient/{p['id']}", location=location, start="soon")
    unknown = appointment(patient_ref=f"Patient/{uid('nobody')}", location=location)
    ignored = appointment(patient_ref=f"Patient/{p['id']}", status="proposed")
    cancel = appointment(patient_ref=f"Patient/{p['id']}", status="cancelled")
    observation = {"resourceType": "Observation", "id": uid("o"), "status": "final", "code": {"text": "x"}}
    unmapped = appointment(patient_ref=f"Patient/{p['id']}", location=uid("NOWHERE"))
    responses = entry_responses(post(client, feed, bundle("batch", good, bad, unknown, ignored, cancel,
                                                          observation, unmapped)))
    assert [r["status"] for r in responses] == [
        "201 Created", "422 Unprocessable Entity", "422 Unprocessable Entity", "200 OK", "200 OK",
        "200 OK", "201 Created"]
    outcomes = [codes_of(r["outcome"]).get(OUTCOME_SYSTEM) for r in responses]
    assert outcomes == ["event", None, None, "ignored", "cancelled", "ignored", "event"]
    assert codes_of(responses[3]["outcome"])[REASON_SYSTEM] == "not-a-journey-moment"
    assert codes_of(responses[5]["outcome"])[REASON_SYSTEM] == "not-an-event-resource"
    assert responses[5]["outcome"]["issue"][0]["diagnostics"] == "ignored: Observation resources are not journey events"
    assert responses[1]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.start"]
    assert "is not known" in responses[2]["outcome"]["issue"][0]["diagnostics"]
    assert all(i["severity"] == "error" for r in responses[1:3] for i in r["outcome"]["issue"])
    events = {e["reference"]: e for e in events_of(app, feed)}
    assert set(events) == {f"Appointment/{good['id']}", f"Appointment/{unmapped['id']}"}
    good_event, unmapped_event = events["Appointment/" + good["id"]], events["Appointment/" + unmapped["id"]]
    assert responses[0]["location"] == f"events/{good_event['id']}"
    assert responses[6]["location"] == f"events/{unmapped_event['id']}"
    assert [("location" in r) for r in responses] == [True, False, False, False, False, False, True]


@pytest.mark.parametrize("entry, path", [
    (5, "Bundle.entry[1]"),
    ("Patient", "Bundle.entry[1]"),
    ({"resource": {"id": "x"}}, "Bundle.entry[1].resource"),
    ({"resource": ["x"]}, "Bundle.entry[1].resource"),
    ({"resource": {"resourceType": "Nope", "id": "n"}}, "Bundle.entry[1].resource"),
    ({"resource": {"resourceType": "Patient", "id": "p", "birthDate": "tomorrow"}},
     "Bundle.entry[1].resource.birthDate"),
], ids=["number", "string", "no-resource-type", "resource-list", "unknown-type", "bad-birth-date"])
def test_an_odd_entry_is_named_and_the_others_go_on(app, client, feed, entry, path):
    p = patient_resource()
    body = bundle("batch", p)
    body["entry"].append(entry)
    first, second = entry_responses(post(client, feed, body))
    assert codes_of(first["outcome"])[OUTCOME_SYSTEM] == "patient-updated"
    assert second["status"] == "422 Unprocessable Entity"
    assert path in second["outcome"]["issue"][0]["expression"]
    assert [x.fhir_id for x in patients_of(app, feed)] == [p["id"]]


def test_a_transaction_answers_a_transaction_response(app, client, feed, journey_route):
    _, location = journey_route()
    p = known_patient(client, feed)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    cancel = appointment(patient_ref=f"Patient/{p['id']}", status="cancelled")
    responses = entry_responses(post(client, feed, bundle("transaction", a, cancel)), "transaction-response")
    assert [r["status"] for r in responses] == ["201 Created", "200 OK"]
    assert len(events_of(app, feed)) == 1
    assert messages_of(app, feed) == [("Patient", "processed"), ("Bundle/transaction", "processed")]


@pytest.mark.parametrize("bad", ["invalid", "unknown-patient", "no-patient"])
def test_a_transaction_with_a_bad_entry_is_refused_whole(app, client, feed, journey_route, run_jobs, bad):
    """An invalid entry is refused before anything is stored; one refused while processing (its
    patient) leaves its request stored as "refused", with the errors, which the intake job (HL7 v2
    only) leaves alone."""
    _, location = journey_route()
    p = patient_resource()
    good = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    if bad == "invalid":
        wrong, mention = appointment(patient_ref=f"Patient/{p['id']}", location=location, status="nope"), "'nope'"
    elif bad == "unknown-patient":
        ref = f"Patient/{uid('nobody')}"
        wrong, mention = appointment(patient_ref=ref, location=location), f"{ref} is not known"
    else:
        wrong, mention = appointment(location=location), "the patient is missing"
    body = assert_error(post(client, feed, bundle("transaction", good, p, wrong)), 422, "invalid", mentions=mention)
    assert len(body["issue"]) == 1
    assert events_of(app, feed) == [] and patients_of(app, feed) == []
    refused = [] if bad == "invalid" else [("Bundle/transaction", "refused")]
    assert messages_of(app, feed) == refused
    run_jobs()
    assert messages_of(app, feed) == refused
    if refused:
        with app.app_context():
            [result] = db.session.scalars(select(HospitalMessage.result).where(HospitalMessage.source == feed.source))
        assert [e["message"] for r in result for e in r["errors"]] == [body["issue"][0]["diagnostics"]]


def test_an_empty_bundle_answers_an_empty_response(app, client, feed):
    assert entry_responses(post(client, feed, {"resourceType": "Bundle", "type": "batch"})) == []
    assert entry_responses(post(client, feed, {"resourceType": "Bundle", "type": "batch", "entry": []})) == []


def test_1000_entries_are_taken_and_1001_refused(app, client, feed):
    body = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "DELETE", "url": "x"}}] * 1000}
    assert entry_responses(post(client, feed, body)) == []  # entries without a resource are no moments
    body["entry"].append(body["entry"][0])
    assert_error(post(client, feed, body), 400, "invalid", mentions="at most 1000")
    body["entry"] = [{"resource": patient_resource()} for _ in range(1500)]
    assert_error(post(client, feed, body), 400, "invalid", mentions="at most 1000")
    assert patients_of(app, feed) == []


@pytest.mark.parametrize("change, mention", [
    ({"entry": "everything"}, "Bundle.entry"),
    ({"id": 5}, "Bundle.id"),
    ({"timestamp": "not-a-time"}, "Bundle.timestamp"),
])
def test_a_malformed_bundle_answers_400(app, client, feed, change, mention):
    body = bundle("batch", patient_resource())
    body.update(change)
    assert_error(post(client, feed, body), 400, "invalid", mentions=mention)
    assert patients_of(app, feed) == []


# ---------------------------------------------------------------------------------------------- notifications

def subscription_status(type_: str = "event-notification") -> dict:
    return {"resourceType": "SubscriptionStatus", "status": "active", "type": type_,
            "eventsSinceSubscriptionStart": "2",
            "subscription": {"reference": "Subscription/example"}}


def backport_parameters() -> dict:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "subscription", "valueReference": {"reference": "Subscription/example"}},
        {"name": "status", "valueCode": "active"}, {"name": "type", "valueCode": "event-notification"}]}


@pytest.mark.parametrize("style", ["r4b", "r4-backport"])
def test_a_subscription_notification_skips_its_status_and_reads_the_rest(app, client, feed, journey_route, style):
    slug, location = journey_route()
    p = known_patient(client, feed)
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    cancel = appointment(patient_ref=f"Patient/{p['id']}", status="cancelled")
    if style == "r4b":
        body = bundle("subscription-notification", subscription_status(), a, cancel)
    else:
        body = bundle("history", backport_parameters(), a, cancel)
    responses = entry_responses(post(client, feed, body))
    assert [r["status"] for r in responses] == ["201 Created", "200 OK"]
    [event] = events_of(app, feed)
    assert event["journey"] == slug and event["invitations"][0]["status"] == "scheduled"


@pytest.mark.parametrize("style", ["r4b", "r4-backport"])
def test_an_id_only_notification_makes_no_events(app, client, feed, style):
    header = subscription_status() if style == "r4b" else backport_parameters()
    body = {"resourceType": "Bundle", "type": "subscription-notification" if style == "r4b" else "history",
            "entry": [{"fullUrl": "urn:uuid:status", "resource": header},
                      {"fullUrl": f"http://hospital.example/fhir/Appointment/{uid('a')}"},
                      {"fullUrl": f"http://hospital.example/fhir/Encounter/{uid('e')}"}]}
    assert entry_responses(post(client, feed, body)) == []
    assert events_of(app, feed) == [] and patients_of(app, feed) == []


def test_a_heartbeat_notification_makes_no_events(app, client, feed):
    body = bundle("subscription-notification", subscription_status("heartbeat"))
    assert entry_responses(post(client, feed, body)) == []
    assert events_of(app, feed) == []


# ---------------------------------------------------------------------------------------------- the shared samples

SAMPLE_PATIENTS = {"Appointment-example.json": "example", "Encounter-f001.json": "f001",
                   "Encounter-f203.json": "f201"}


@pytest.mark.parametrize("name", FHIR_SAMPLES)
def test_every_sample_alone_is_refused_with_a_clear_reason(app, client, feed, name):
    """As published (2013 dates, patients we never saw): a 422 saying why, never a 500."""
    r = post(client, feed, fhir_sample(name))
    if name == "Subscription-example.json":
        assert_error(r, 422, "not-supported", mentions="Subscription resources are not journey events")
    else:
        assert_error(r, 422, "invalid", mentions=f"Patient/{SAMPLE_PATIENTS[name]} is not known")
    assert events_of(app, feed) == []


@pytest.mark.parametrize("patient_first", [True, False], ids=["patient-first", "patient-after"])
def test_done_when_a_real_appointment_bundle_schedules_the_mapped_booking_invitation(app, client, ctx, feed,
                                                                                    new_journey, routes,
                                                                                    patient_first):
    """The FHIR R4 Appointment example, with its patient in a Bundle and its dates brought to now,
    produces a scheduled booking invitation for the journey and touchpoint the mapping names,
    wherever the Patient stands in the Bundle."""
    from feedback_service.events.models import Event as EventRow
    from feedback_service.scheduling.models import Invitation as InvitationRow

    slug = new_journey()
    routes({"match": {"location": ["1"], "appointment_type": ["FOLLOWUP"]}, "journey": slug,
            "touchpoints": {"booking": "online-booking"}})
    a = fhir_sample("Appointment-example.json")
    created = now_utc() - timedelta(minutes=5)
    a["created"] = iso(created)
    a["start"], a["end"] = iso(now_utc() + timedelta(days=14)), iso(now_utc() + timedelta(days=14, hours=2))
    phone = new_phone()
    p = patient_resource("example", phone=phone)
    responses = entry_responses(post(client, feed, bundle("transaction", *([p, a] if patient_first else [a, p]))),
                                "transaction-response")
    [appointment_response] = [r for r in responses if r["status"] == "201 Created"]
    assert sorted(r["status"] for r in responses) == ["200 OK", "201 Created"]
    assert appointment_response["location"].startswith("events/")
    event_id = int(appointment_response["location"].split("/")[1])

    event = db.session.get(EventRow, event_id)
    assert (event.source, event.type, event.reference) == (feed.source, "booking", "Appointment/example")
    assert event.occurred_at == created
    assert (event.journey.slug, event.touchpoint.slug) == (slug, "online-booking")
    invitation = db.session.scalar(select(InvitationRow).where(InvitationRow.event_id == event_id))
    assert invitation is not None
    assert invitation.status == "scheduled" and invitation.skip_reason is None
    assert (invitation.journey.slug, invitation.stage.slug, invitation.touchpoint.slug) == (
        slug, "booking", "online-booking")
    assert invitation.channel == "sms" and invitation.patient.phone == phone
    assert invitation.patient.external_id == p["identifier"][0]["value"]
    assert invitation.send_at >= created + timedelta(minutes=60)
    assert invitation.question_set_version.question_set.key == "booking"


def test_the_inpatient_sample_encounter_is_a_discharge(app, client, feed, new_journey, routes):
    slug = new_journey()
    routes({"match": {"service_type": ["183807002"]}, "journey": slug,
            "touchpoints": {"discharge": "discharge-information"}})
    e = fhir_sample("Encounter-f203.json")
    ended = now_utc() - timedelta(hours=6)
    e["period"] = {"start": iso(ended - timedelta(days=9)), "end": iso(ended)}
    known_patient(client, feed, "f201")
    assert_outcome(post(client, feed, e), 201, "event")
    [event] = events_of(app, feed)
    assert (event["type"], event["journey"], event["touchpoint"]) == ("discharge", slug, "discharge-information")
    assert (event["patient_class"], event["occurred_at"]) == ("inpatient", ended)
    [inv] = event["invitations"]
    assert inv["status"] == "scheduled" and inv["send_at"] >= ended + timedelta(hours=48)
    assert inv["send_by"] == ended + timedelta(days=42)


def test_the_inpatient_sample_as_published_is_outside_the_contact_window(app, client, feed, new_journey, routes):
    slug = new_journey()
    routes({"match": {"service_type": ["183807002"]}, "journey": slug})
    known_patient(client, feed, "f201")
    assert_outcome(post(client, feed, fhir_sample("Encounter-f203.json")), 201, "event", "outside-contact-window")


def test_the_ambulatory_sample_without_an_end_is_refused_naming_period_end(app, client, feed):
    """Encounter-f001 has no period and no meta.lastUpdated: when it ended is unknown."""
    [_, response] = entry_responses(post(client, feed, bundle("batch", patient_resource("f001"),
                                                              fhir_sample("Encounter-f001.json"))))
    assert response["status"] == "422 Unprocessable Entity"
    assert "Encounter.period.end" in response["outcome"]["issue"][0]["diagnostics"]
    assert events_of(app, feed) == []


@pytest.mark.parametrize("route, expected", [
    ({"follow_up": False}, "ignored"),
    ({"follow_up": True, "touchpoints": {"follow_up": "telehealth"}}, "follow_up"),
    (None, "unmapped"),
], ids=["routed-not-follow-up", "routed-follow-up", "no-route"])
def test_the_ambulatory_sample_is_ignored_unless_a_follow_up(app, client, feed, new_journey, routes, route,
                                                             expected):
    slug = new_journey()
    if route is not None:
        routes({"match": {"service_type": ["270427003"]}, "journey": slug, **route})
    e = fhir_sample("Encounter-f001.json")
    e["period"] = {"start": iso(now_utc() - timedelta(hours=3)), "end": iso(now_utc() - timedelta(hours=1))}
    known_patient(client, feed, "f001")
    [response] = entry_responses(post(client, feed, bundle("batch", e)))
    events = events_of(app, feed)
    if expected == "ignored":
        assert response["status"] == "200 OK"
        assert codes_of(response["outcome"]) == {OUTCOME_SYSTEM: "ignored", REASON_SYSTEM: "not-a-follow-up"}
        assert events == []
    elif expected == "follow_up":
        assert response["status"] == "201 Created"
        assert [(ev["type"], ev["journey"], ev["touchpoint"]) for ev in events] == [("follow_up", slug, "telehealth")]
        assert events[0]["patient_class"] == "outpatient"
    else:
        assert codes_of(response["outcome"]) == {OUTCOME_SYSTEM: "event", REASON_SYSTEM: "unmapped"}
        assert [(ev["type"], ev["journey"]) for ev in events] == [("follow_up", None)]


def test_the_subscription_sample_in_a_bundle_is_ignored(app, client, feed):
    [response] = entry_responses(post(client, feed, bundle("collection", fhir_sample("Subscription-example.json"))))
    assert response["status"] == "200 OK"
    assert codes_of(response["outcome"]) == {OUTCOME_SYSTEM: "ignored", REASON_SYSTEM: "not-an-event-resource"}
    assert response["outcome"]["issue"][0]["diagnostics"] == "ignored: Subscription resources are not journey events"


# ---------------------------------------------------------------------------------------------- regressions

def test_a_refused_appointment_resent_after_its_patient_is_recorded(app, client, feed, journey_route):
    """Each request is processed anew (no answer kept by body): the same body, refused while its
    Patient was unknown, goes through once the Patient is recorded."""
    _, location = journey_route()
    p = patient_resource()
    a = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    assert_error(post(client, feed, a), 422, "invalid", mentions="is not known")
    post(client, feed, p, 200)
    assert_outcome(post(client, feed, a), 201, "event")
    assert len(events_of(app, feed)) == 1


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_a_json_body_in_another_unicode_encoding_is_read_and_stored_decoded(app, client, feed, encoding):
    p = patient_resource(name=[{"given": ["José"], "family": "Núñez"}])
    assert_outcome(post(client, feed, None, raw=json.dumps(p, ensure_ascii=False).encode(encoding)), 200,
                   "patient-updated")
    assert [row.first_name for row in patients_of(app, feed)] == ["José"]
    with app.app_context():
        [stored] = db.session.scalars(select(HospitalMessage.body).where(HospitalMessage.source == feed.source))
    assert json.loads(stored) == p


@pytest.mark.parametrize("shape, status, mention", [
    ("long-disposition", 422, "Encounter.hospitalization.dischargeDisposition: longer than 40 characters"),
    ("long-locale", 422, "Patient.communication.language: longer than 20 characters"),
    ("long-patient-id", 422, "Patient.id: longer than 64 characters"),
    ("long-appointment-id", 422, "id: longer than 128 characters"),
    ("nul-in-identifier", 400, "NUL"),
    ("nul-in-a-key", 400, "NUL"),
    ("nul-in-an-entry-we-ignore", 400, "NUL"),
])
def test_over_long_or_nul_values_are_refused_naming_the_field(app, client, feed, shape, status, mention):
    """On PostgreSQL these once reached the columns and failed with DataError, a 500."""
    known = known_patient(client, feed)
    if shape == "long-disposition":
        body = encounter(patient_ref=f"Patient/{known['id']}", disposition="D" * 41)
    elif shape == "long-locale":
        body = patient_resource(communication=[{"language": {"coding": [{"code": "en-" + "x" * 30}]}}])
    elif shape == "long-patient-id":
        body = patient_resource("a" * 65)
    elif shape == "long-appointment-id":
        body = appointment("a" * 120, patient_ref=f"Patient/{known['id']}")
    elif shape == "nul-in-identifier":
        body = patient_resource(mrn="MRN\u0000" + uid("x"))
    elif shape == "nul-in-a-key":
        body = patient_resource(**{"extension\u0000": []})
    else:
        body = bundle("batch", {"resourceType": "Observation", "id": "o1", "status": "final",
                                "code": {"text": "a\u0000b"}})
    assert_error(post(client, feed, body), status, "invalid", mentions=mention)
    assert events_of(app, feed) == []
    assert [row.fhir_id for row in patients_of(app, feed)] == [known["id"]]
    assert messages_of(app, feed) == [("Patient", "processed")] + (
        [(body["resourceType"], "processed")] if status == 422 else [])


def test_path_steps_name_fhir_elements_not_pydantic_wrappers(app, client, feed):
    p = known_patient(client, feed)
    a = appointment(patient_ref=f"Patient/{p['id']}")
    a["participant"].append({"actor": 5, "status": "accepted"})
    body = assert_error(post(client, feed, a), 422, "invalid")
    paths = [x for i in body["issue"] for x in i.get("expression", [])]
    assert "Appointment.participant[1].actor" in paths and not any("root" in x for x in paths), paths


@pytest.mark.parametrize("bundle_type, then", [("batch", "encounter"), ("transaction", "encounter"),
                                               ("batch", "same-patient"), ("collection", "contained-twin")])
def test_a_new_patient_then_its_event_in_one_bundle(app, client, feed, journey_route, bundle_type, then):
    """Once a 500: the Patient's row, not flushed, was not seen by the next entry, which added a
    second one (UNIQUE source, external_id)."""
    _, location = journey_route()
    p = patient_resource()
    if then == "encounter":
        second = encounter(patient_ref=f"Patient/{p['id']}", location=location)
    elif then == "same-patient":
        second = dict(p, meta={"versionId": "2"})
    else:  # an appointment carrying the same patient (same identifier) contained
        second = appointment(patient_ref="#pt", location=location, contained=[dict(p, id="pt")])
    responses = entry_responses(post(client, feed, bundle(bundle_type, p, second)),
                                f"{'transaction' if bundle_type == 'transaction' else 'batch'}-response")
    assert responses[0]["status"] == "200 OK"
    assert responses[1]["status"] == ("200 OK" if then == "same-patient" else "201 Created")
    assert [row.external_id for row in patients_of(app, feed)] == [p["identifier"][0]["value"]]
    assert len(events_of(app, feed)) == (0 if then == "same-patient" else 1)


# ---------------------------------------------------------------------------------------------- fatigue

def test_a_second_survey_in_the_same_journey_is_skipped_for_fatigue(app, client, feed, journey_route):
    _, location = journey_route()
    p = known_patient(client, feed)
    first = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    second = appointment(patient_ref=f"Patient/{p['id']}", location=location)
    assert_outcome(post(client, feed, first), 201, "event", None)
    assert_outcome(post(client, feed, second), 201, "event", "fatigue-journey")
