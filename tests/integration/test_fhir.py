"""FHIR R4 in (POST /api/v1/fhir): authentication and content negotiation, OperationOutcome
answers, batch- and transaction-response Bundles, subscription notifications, patient resolution,
routing through the mapping file, exclusions, the discharge contact window, cancellations,
duplicates, the shared real FHIR samples, and no 500 for odd shapes."""
from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from feedback_service.events.models import Event, HospitalMessage
from feedback_service.extensions import db
from feedback_service.patients.models import Patient
from feedback_service.scheduling.models import Invitation
from tests.conftest import new_phone, uid
from tests.hospital import FHIR_SAMPLES, fhir_sample

FHIR = "/api/v1/fhir"
FHIR_JSON = "application/fhir+json"
OUTCOME_SYSTEM = "urn:feedback-service:intake-outcome"
REASON_SYSTEM = "urn:feedback-service:skip-reason"
ON_POSTGRES = bool(os.environ.get("FEEDBACK_TEST_DATABASE_URL"))


# ---------------------------------------------------------------------------------------------- helpers

class Feed:
    """A hospital feed of the test's own: an API key for a fresh source, so that the shared
    samples' ids (Patient/example ...) and every row the test counts are its own."""

    def __init__(self, source: str, key: str):
        self.source, self.key = source, key
        self.headers = {"Authorization": f"Bearer {key}"}


@pytest.fixture
def feed(app) -> Feed:
    source = uid("hospital")
    result = app.test_cli_runner().invoke(args=["api-key", "create", source])
    assert result.exit_code == 0, result.output
    return Feed(source, result.stdout.strip().splitlines()[0])


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


def assert_outcome(response, status: int, outcome: str, reason: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == FHIR_JSON
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    codes = codes_of(body)
    assert codes[OUTCOME_SYSTEM] == outcome, body
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

