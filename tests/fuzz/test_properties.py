"""Property tests of intake (Hypothesis) with generated bodies, good and broken: JSON events (wrong
types, missing and unknown fields, huge strings, any Unicode, nested junk, lists of good and bad
events, bodies that are no JSON, any Content-Type), FHIR resources and Bundles made from the real
samples and then mutated, HL7 v2 messages made from the real samples with segments, fields and
encoding characters mutated, and arbitrary survey-link tokens.

Whatever comes in: never a 5xx (with TESTING on, an exception reaches the test instead), every
4xx says what was wrong in the endpoint's own terms, a list with a bad event stores nothing, and
a valid event sent again changes nothing. Each run draws new cases (no seed, no example database)."""
from __future__ import annotations

import copy
import itertools
import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import hypothesis
import phonenumbers
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from feedback_service.config import PROJECT_ROOT
from feedback_service.events.models import Event, HospitalMessage
from feedback_service.extensions import db
from feedback_service.patients.models import Patient
from feedback_service.scheduling.models import Invitation
from tests.conftest import uid
from tests.hospital import FHIR_SAMPLES, HL7_SAMPLES, fhir_sample, fresh_hl7

EVENTS, FHIR, HL7 = "/api/v1/events", "/api/v1/fhir", "/api/v1/hl7v2"
ER7 = "x-application/hl7-v2+er7"


def bounded(n: int) -> settings:
    """n cases; no deadline (PostgreSQL is slower), no example database (no .hypothesis folder)."""
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


class Feed:
    """An API key of this module's own, so that every row it counts is its own."""

    def __init__(self, app):
        self.source = uid("fuzz")
        result = app.test_cli_runner().invoke(args=["api-key", "create", self.source])
        assert result.exit_code == 0, result.output
        self.headers = {"Authorization": f"Bearer {result.stdout.strip().splitlines()[0]}"}


@pytest.fixture(scope="module")
def feed(app) -> Feed:
    return Feed(app)


def stored(app, source: str) -> tuple[int, int, int]:
    """(events, patients, invitations) of a source."""
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(Event).where(Event.source == source)),
                db.session.scalar(select(func.count()).select_from(Patient).where(Patient.source == source)),
                db.session.scalar(select(func.count()).select_from(Invitation).join(Event).where(
                    Event.source == source)))


def snapshot(app, source: str, external_ids: list[str]) -> list[dict]:
    """The stored events of these ids, each with its patient and invitations, every column."""
    def row(obj) -> dict:
        return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}
    with app.app_context():
        events = db.session.scalars(select(Event).where(Event.source == source, Event.external_id.in_(external_ids))
                                    .order_by(Event.id)).all()
        return [{**row(e), "patient": row(e.patient), "invitations": [row(i) for i in e.invitations]} for e in events]


def check_error_json(response, status: int = 422) -> dict:
    """A JSON error body: "error", and "errors" by field path; those paths."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.mimetype == "application/json", response.mimetype
    body = response.get_json()
    assert isinstance(body["error"], str) and body["error"], body
    assert body["errors"] and all(isinstance(v, str) and v for v in body["errors"].values()), body
    return body["errors"]


# -- JSON events ---------------------------------------------------------------------------------

# Every run's ids are new (a case replayed while shrinking too): the drawn text, then this.
RUN, CALLS = uuid.uuid4().hex[:8], itertools.count()
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)  # any Unicode text but NUL
NOW = datetime.now(timezone.utc).replace(tzinfo=None)
OFFSET = st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
# Local wall-clock times at least 15 hours old read at any offset are in the past in UTC.
PAST = st.builds(lambda t, tz: t.replace(tzinfo=tz).isoformat(),
                 st.datetimes(datetime(2000, 1, 2), NOW - timedelta(hours=15)), OFFSET)
# A discharge 15 to 40 hours ago: its survey is scheduled (48 hours after discharge), and not due
# while the test session lasts, so later tests' dispatch runs never meet it.
RECENT_DISCHARGE = st.builds(lambda ago, tz: (datetime.now(timezone.utc) - ago).astimezone(tz).isoformat(),
                             st.timedeltas(timedelta(hours=15), timedelta(hours=40)), OFFSET)
# Each journey's rules: event type -> its default touchpoint (from the shipped library).
RULES = {doc["slug"]: {r["event"]: r["touchpoint"] for r in doc["rules"]}
         for doc in (yaml.safe_load(p.read_text()) for p in sorted((PROJECT_ROOT / "surveys").glob("*/journey.yaml")))}
TYPES = ("booking", "discharge", "follow_up")
EVENT_FIELDS = ("external_id", "type", "occurred_at", "journey", "touchpoint", "patient")
PATIENT_FIELDS = ("id", "first_name", "phone", "email", "locale", "timezone", "consent_sms", "consent_email")

JUNK = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=6)
HUGE = st.sampled_from([1_000, 100_000]).flatmap(lambda n: st.sampled_from(["x" * n, "é" * n, "😀" * n]))
NOT_A_STRING = st.integers() | st.floats(allow_nan=False) | st.booleans() | st.lists(JUNK, max_size=2) \
    | st.dictionaries(TEXT, JUNK, max_size=2)
WITH_NUL = st.builds(lambda a, b: f"{a}\x00{b}", TEXT, TEXT)
LONE_SURROGATE = st.builds(lambda a, c: f"{a}{c}", TEXT, st.characters(categories=["Cs"]))  # "\ud800" in JSON
# Valid numbers of a dozen countries: libphonenumber's own examples with other last digits.
EXAMPLE_NUMBERS = sorted({phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
                          for region in ("US", "CA", "GB", "ES", "MX", "DE", "FR", "IN", "BR", "PH", "VN", "NG")
                          for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE)
                          if (n := phonenumbers.example_number_for_type(region, kind))})
PHONE = st.builds(lambda number, tail: number[:-4] + f"{tail:04d}", st.sampled_from(EXAMPLE_NUMBERS),
                  st.integers(0, 9999)).filter(lambda n: phonenumbers.is_valid_number(phonenumbers.parse(n)))
NOT_A_SLUG = TEXT.filter(lambda s: not re.fullmatch(r"[a-z][a-z0-9-]{0,79}", s.strip()))

# What breaks each field: values the contract refuses, whatever else the event holds.
BROKEN = {
    "external_id": st.sampled_from(["", "   ", "x" * 129]) | HUGE | WITH_NUL | LONE_SURROGATE | NOT_A_STRING
    | st.none(),
    "type": TEXT.filter(lambda s: s.strip() not in TYPES) | NOT_A_STRING | st.none(),
    "occurred_at": st.one_of(
        TEXT.filter(lambda s: not re.match(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", s)),
        st.integers(), st.floats(allow_nan=False), st.none(),
        st.datetimes(datetime(2000, 1, 2), datetime(2100, 1, 1)).map(datetime.isoformat),  # no offset
        st.dates().map(lambda d: d.isoformat()),  # no time
        st.builds(lambda t, tz: t.replace(tzinfo=tz).isoformat(),
                  st.datetimes(NOW + timedelta(hours=30), datetime(9999, 1, 1)), OFFSET),  # future
        st.builds(lambda t, tz: t.replace(tzinfo=tz).isoformat(),
                  st.datetimes(datetime(1, 1, 2), datetime(1999, 12, 31)), OFFSET),  # before 2000
        st.sampled_from(["2024-13-01T00:00:00Z", "2024-02-30T10:00:00+01:00", "2024-01-01T25:61:00Z"])),
    "journey": NOT_A_SLUG | NOT_A_STRING,
    "touchpoint": NOT_A_SLUG | NOT_A_STRING,
    "patient": TEXT | st.integers() | st.lists(JUNK, max_size=3) | st.none(),
    "patient.id": st.sampled_from(["", " \t ", "p" * 129]) | HUGE | WITH_NUL | LONE_SURROGATE | NOT_A_STRING
    | st.none(),
    "patient.first_name": st.sampled_from(["N" * 101]) | HUGE | WITH_NUL | LONE_SURROGATE | NOT_A_STRING,
    "patient.phone": st.sampled_from(["12345", "+1", "+15", "+1555000", "0044 20 7946 0958", "tel:+14155550123",
                                      "+999999999999", "☎"]) | WITH_NUL | NOT_A_STRING,
    "patient.email": st.sampled_from(["no-at-sign", "a@", "@example.org", "a@@example.org", "a b@example.org",
                                      "x" * 300 + "@example.org"]) | NOT_A_STRING,
    "patient.locale": TEXT.filter(lambda s: not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*", s.strip())
                                  or len(s.strip()) > 20) | NOT_A_STRING,
    "patient.timezone": st.sampled_from(["Mars/Olympus_Mons", "Europe", "America/", "../../etc/passwd", "",
                                         "UTC\x00", "a" * 300]) | NOT_A_STRING,
    "patient.consent_sms": st.sampled_from(["true", "yes", 1, 0, None, "false"]),
    "patient.consent_email": st.sampled_from(["true", "yes", 1, 0, None, "false"]),
}
# Well-formed, but naming what does not exist: refused only once every field is well-formed.
UNKNOWN = {"journey": st.builds(lambda t: f"no-such-{t}", st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True)),
           "touchpoint": st.builds(lambda t: f"no-such-{t}", st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True))}
EXTRA_KEY = TEXT.filter(lambda k: k and k not in EVENT_FIELDS and k not in PATIENT_FIELDS)
DEFAULT_JOURNEY = next(slug for slug in RULES if yaml.safe_load(
    (PROJECT_ROOT / "surveys" / slug / "journey.yaml").read_text()).get("default"))


@st.composite
def valid_events(draw) -> dict:
    """An event the contract accepts: any Unicode in free text, optional fields left out or null."""
    journey = draw(st.sampled_from([None, *RULES]))
    type_ = draw(st.sampled_from(TYPES))
    recent = type_ == "discharge" and draw(st.booleans())
    event = {"external_id": draw(TEXT), "type": type_, "occurred_at": draw(RECENT_DISCHARGE if recent else PAST)}
    patient = {"id": draw(TEXT) + "-p"}
    optional = {
        "first_name": (draw(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=100)), True),
        "phone": (draw(PHONE), True),
        "email": (draw(st.from_regex(r"[a-z0-9]{1,20}(\.[a-z0-9+]{1,10})?@example\.(org|com)", fullmatch=True)), True),
        "locale": (draw(st.sampled_from(["en", "es", "en-US", "pt_BR", "fil", "zh-Hant-TW"])), True),
        "timezone": (draw(st.sampled_from(["Europe/Madrid", "America/Chicago", "Etc/UTC", "Asia/Kolkata"])), True),
        "consent_sms": (draw(st.booleans()), False),
        "consent_email": (draw(st.booleans()), False),
    }
    for name, (value, nullable) in optional.items():
        # Given, left out, or null where the field allows it.
        how = draw(st.sampled_from(["given", "given", "absent", *(["null"] if nullable else [])]))
        if how != "absent":
            patient[name] = value if how == "given" else None
    event["patient"] = patient
    if journey is not None:
        event["journey"] = journey
    if draw(st.booleans()):  # the rule's own touchpoint, named
        event["touchpoint"] = RULES[journey or DEFAULT_JOURNEY][type_]
    return event


@st.composite
def broken_events(draw) -> tuple[dict, dict[str, str]]:
    """A valid event with some fields broken: (event, {path: "schema" | "unknown"}). The broken
    paths never contain one another."""
    event = draw(valid_events())
    broken: dict[str, str] = {}
    paths = draw(st.lists(st.sampled_from(sorted(BROKEN) + ["extra", "patient.extra", "missing", "unknown"]),
                          min_size=1, max_size=3, unique=True))
    for path in paths:
        if path == "unknown":
            name = draw(st.sampled_from(sorted(UNKNOWN)))
            if _covered(name, broken) or name == "touchpoint" and "journey" in broken:
                continue  # an unknown journey hides its touchpoint
            event[name] = draw(UNKNOWN[name])
            broken[name] = "unknown"
        elif path == "missing":
            name = draw(st.sampled_from(["external_id", "type", "occurred_at", "patient", "patient.id"]))
            if _covered(name, broken) or not _drop(event, name):
                continue
            broken[name] = "schema"
        elif path in ("extra", "patient.extra"):
            if path == "patient.extra" and not isinstance(event.get("patient"), dict):
                continue
            key = draw(EXTRA_KEY)
            target, prefix = (event, "") if path == "extra" else (event["patient"], "patient.")
            if _covered(prefix + key, broken) or key in target:
                continue
            target[key] = draw(JUNK)
            broken[prefix + key] = "schema"
        else:
            if _covered(path, broken):
                continue
            value = draw(BROKEN[path])
            if path.startswith("patient."):
                event["patient"][path.split(".", 1)[1]] = value
            else:
                event[path] = value
            broken[path] = "schema"
    assume(broken)
    return event, broken


def _covered(path: str, broken: dict) -> bool:
    """Whether the path, one of its parents or one of its children is broken already."""
    return any(path == p or path.startswith(p + ".") or p.startswith(path + ".") for p in broken)


def _drop(event: dict, path: str) -> bool:
    container, _, name = path.rpartition(".")
    target = event["patient"] if container else event
    if not isinstance(target, dict) or name not in target:
        return False
    del target[name]
    return True


def expected_errors(items: list[tuple[dict, dict]], is_list: bool) -> set[str]:
    """The paths a 422 must name: the schema errors if any event has one, else the unknowns."""
    def prefixed(i, path):
        return f"[{i}].{path}" if is_list else path
    schema = {prefixed(i, p) for i, (_, broken) in enumerate(items) for p, kind in broken.items() if kind == "schema"}
    if schema:
        return schema
    return {prefixed(i, p) for i, (_, broken) in enumerate(items) for p, kind in broken.items()}


def fresh_ids(events: list[dict], broken: list[dict]) -> None:
    """Make each well-formed external_id unique to this call (a replay is then no duplicate)."""
    call = next(CALLS)
    for i, (event, paths) in enumerate(zip(events, broken)):
        if isinstance(event, dict) and "external_id" not in paths and isinstance(event.get("external_id"), str):
            event["external_id"] += f"-{RUN}-{call}-{i}"


CONTENT_TYPES = st.sampled_from([None, "application/json", "application/json; charset=utf-8", "text/plain",
                                 "application/x-www-form-urlencoded", "multipart/form-data", "application/xml",
                                 "application/fhir+json", "*/*", "garbage;;;="])


def post_json(client, feed, body, content_type, ensure_ascii: bool):
    headers = {**feed.headers, **({"Content-Type": content_type} if content_type else {})}
    # Raw UTF-8 or \u escapes; a lone surrogate has no UTF-8, so it goes as its \u escape either way.
    data = json.dumps(body, ensure_ascii=ensure_ascii).encode("utf-8", "backslashreplace")
    return client.post(EVENTS, data=data, headers=headers)


@given(items=st.lists(st.one_of(valid_events().map(lambda e: (e, {})), broken_events()), min_size=1, max_size=6),
       as_list=st.booleans(), content_type=CONTENT_TYPES, ensure_ascii=st.booleans())
@bounded(150)
def test_events_good_and_broken(app, feed, fuzz_cases, items, as_list, content_type, ensure_ascii):
    """Any mix of good and broken events, alone or in a list, under any Content-Type: 202 when
    all are good, else 422 naming exactly the broken fields' paths and nothing stored."""
    fuzz_cases["hypothesis"] += 1
    is_list = as_list or len(items) > 1
    events = [copy.deepcopy(e) for e, _ in items]
    fresh_ids(events, [b for _, b in items])
    before = stored(app, feed.source)
    response = post_json(app.test_client(), feed, events if is_list else events[0], content_type, ensure_ascii)
    hypothesis.event(f"{response.status_code}")  # how the cases split: pytest --hypothesis-show-statistics
    if any(broken for _, broken in items):
        errors = check_error_json(response)
        assert set(errors) == expected_errors(items, is_list), errors
        assert stored(app, feed.source) == before
    else:
        assert response.status_code == 202, response.get_data(as_text=True)[:500]
        body = response.get_json()
        recorded = body["events"] if is_list else [body]
        assert [r["duplicate"] for r in recorded] == [False] * len(events)
        assert stored(app, feed.source)[0] == before[0] + len(events)


@given(items=st.lists(st.one_of(valid_events().map(lambda e: (e, {})), broken_events()), min_size=1, max_size=6),
       junk=st.lists(JUNK, min_size=1, max_size=2), content_type=CONTENT_TYPES)
@bounded(60)
def test_a_list_with_anything_bad_stores_nothing(app, feed, fuzz_cases, items, junk, content_type):
    """Bad events and items that are no event at all among good ones: 422, each bad item named by
    its index, nothing stored, not even the good ones' patients."""
    fuzz_cases["hypothesis"] += 1
    events = [copy.deepcopy(e) for e, _ in items]
    fresh_ids(events, [b for _, b in items])
    events += junk  # items that are not events: each named by its index
    before = stored(app, feed.source)
    errors = check_error_json(post_json(app.test_client(), feed, events, content_type, True))
    named = {int(re.match(r"\[(\d+)\]", path)[1]) for path in errors}
    bad = {i for i, (_, broken) in enumerate(items) if any(k == "schema" for k in broken.values())}
    junk_items = set(range(len(items), len(events)))
    assert named == bad | junk_items, (errors, bad)
    assert stored(app, feed.source) == before


@given(events=st.lists(valid_events(), min_size=1, max_size=4), as_list=st.booleans(),
       renamed=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20),
       content_type=CONTENT_TYPES)
@bounded(60)
def test_a_valid_event_sent_again_changes_nothing(app, feed, fuzz_cases, events, as_list, renamed, content_type):
    """The same events again (even with other patient details): 200 with the same ids, and no
    event, patient or invitation row changes."""
    fuzz_cases["hypothesis"] += 1
    is_list = as_list or len(events) > 1
    events = copy.deepcopy(events)
    fresh_ids(events, [{}] * len(events))
    client = app.test_client()
    first = post_json(client, feed, events if is_list else events[0], content_type, True)
    assert first.status_code == 202, first.get_data(as_text=True)[:500]
    recorded = first.get_json()["events"] if is_list else [first.get_json()]
    ids, external_ids = [r["id"] for r in recorded], [r["external_id"] for r in recorded]
    before, rows = stored(app, feed.source), snapshot(app, feed.source, external_ids)
    for sent in events:
        sent["patient"]["first_name"] = renamed
    again = post_json(client, feed, events if is_list else events[0], content_type, False)
    assert again.status_code == 200, again.get_data(as_text=True)[:500]
    recorded = again.get_json()["events"] if is_list else [again.get_json()]
    assert [r["id"] for r in recorded] == ids and all(r["duplicate"] for r in recorded)
    assert stored(app, feed.source) == before
    assert snapshot(app, feed.source, external_ids) == rows


@given(data=st.binary(max_size=300) | st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
       content_type=CONTENT_TYPES)
@bounded(100)
def test_bodies_that_are_no_events(app, feed, fuzz_cases, data, content_type):
    """Bytes of any kind: 422 naming the body (or, in a JSON list, each item), nothing stored."""
    fuzz_cases["hypothesis"] += 1
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        parsed = None
    assume(not isinstance(parsed, dict))
    headers = {**feed.headers, **({"Content-Type": content_type} if content_type else {})}
    before = stored(app, feed.source)
    errors = check_error_json(app.test_client().post(EVENTS, data=data, headers=headers))
    if isinstance(parsed, list) and parsed and len(parsed) <= 1000:
        assert all(re.match(r"\[\d+\]", path) for path in errors), errors
    else:
        assert set(errors) == {"body"}, errors
    assert stored(app, feed.source) == before


def test_bodies_over_the_limits(app, feed):
    """Over 8 MB: 413 as JSON; 1001 events: 422 naming the body; nesting past the JSON parser: 422."""
    client = app.test_client()
    big = client.post(EVENTS, data=b"[" + b" " * (8 * 1024 * 1024) + b"]", headers=feed.headers)
    assert big.status_code == 413 and big.mimetype == "application/json" and big.get_json()["error"]
    event = {"external_id": "x", "type": "booking", "occurred_at": "2024-01-01T00:00:00Z", "patient": {"id": "p"}}
    assert set(check_error_json(client.post(EVENTS, json=[event] * 1001, headers=feed.headers))) == {"body"}
    deep = b"[" * 100_000 + b"]" * 100_000
    assert set(check_error_json(client.post(EVENTS, data=deep, headers=feed.headers))) == {"body"}


# -- FHIR ----------------------------------------------------------------------------------------

SAMPLES = {name: fhir_sample(name) for name in FHIR_SAMPLES}
# The patients the samples point at, so that Bundles carry them and reach the events behind.
REFERENCED = sorted({ref for doc in SAMPLES.values()
                     for ref in [(doc.get("subject") or {}).get("reference"),
                                 *[(p.get("actor") or {}).get("reference") for p in doc.get("participant", [])]]
                     if ref and ref.startswith("Patient/")})
BUNDLE_TYPES = ["batch", "transaction", "collection", "searchset", "history", "document", "message"]


def patient_resource(ref: str, phone: str, mrn: str) -> dict:
    return {"resourceType": "Patient", "id": ref.split("/", 1)[1],
            "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": mrn}],
            "name": [{"given": ["Ana"]}], "birthDate": "1970-05-01",
            "telecom": [{"system": "phone", "use": "mobile", "value": phone},
                        {"system": "email", "value": "ana@example.org"}]}


def _places(doc) -> list[tuple]:
    """Every (container, key) in a JSON document, the document's own keys too."""
    out, stack = [], [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            out.append((node, key))
            stack.append(value)
    return out


@st.composite
def mutated(draw, doc, most: int = 2):
    """The document with up to `most` of: a value dropped, replaced by junk (other types, nested
    junk, huge strings, or now and then text with NUL or a lone surrogate), wrapped in a list, a
    key added, or another status."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(0, most))):
        places = _places(doc)
        if not places:
            break
        container, key = places[draw(st.integers(0, len(places) - 1))]
        how = draw(st.sampled_from(["drop", "drop", "junk", "junk", "junk", "wrap", "add", "huge", "odd", "status",
                                    "status", "status"]))
        if how == "drop":
            del container[key]
        elif how == "junk":
            container[key] = draw(JUNK)
        elif how == "wrap":
            container[key] = [container[key]]
        elif how == "huge":
            container[key] = draw(HUGE)
        elif how == "odd":  # text no FHIR string may hold
            odd = draw(WITH_NUL | LONE_SURROGATE)
            container[key] = f"{container[key]}{odd}" if isinstance(container[key], str) else odd
        elif how == "status" and isinstance(container, dict):
            container["status"] = draw(TEXT | st.sampled_from(["booked", "fulfilled", "cancelled", "finished",
                                                               "entered-in-error", "noshow"]))
        elif isinstance(container, dict):
            container[draw(TEXT)] = draw(JUNK)
    return doc


@st.composite
def fhir_bodies(draw) -> dict:
    names = draw(st.lists(st.sampled_from(FHIR_SAMPLES), min_size=1, max_size=3))
    resources = [draw(mutated(SAMPLES[name])) for name in names]
    if len(resources) == 1 and draw(st.booleans()):
        return resources[0]
    resources += [patient_resource(ref, draw(PHONE), draw(st.from_regex(r"MRN[0-9]{1,8}", fullmatch=True)))
                  for ref in REFERENCED if draw(st.booleans())]
    entries = [{"fullUrl": f"http://hospital.example/fhir/{r.get('resourceType')}/{r.get('id')}", "resource": r}
               for r in draw(st.permutations(resources))]
    return draw(mutated({"resourceType": "Bundle", "type": draw(st.sampled_from(BUNDLE_TYPES)), "entry": entries},
                        most=1))


def fresh_fhir_ids(body) -> None:
    """New appointment and encounter ids for this call, so that the events are new (not duplicates)."""
    call = next(CALLS)
    entries = body.get("entry") if body.get("resourceType") == "Bundle" else [{"resource": body}]
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") in ("Appointment", "Encounter") \
                and isinstance(resource.get("id"), str):
            resource["id"] = f"{resource['id'][:30]}-{RUN}-{call}"


@given(body=fhir_bodies(), content_type=st.sampled_from(["application/fhir+json", "application/json",
                                                         "application/json+fhir; charset=utf-8"]),
       ensure_ascii=st.booleans())
@bounded(150)
def test_fhir_samples_mutated(app, feed, fuzz_cases, body, content_type, ensure_ascii):
    """The real samples, alone or in Bundles, mutated: always FHIR JSON back; an error is an
    OperationOutcome whose every issue says what is wrong (and, for a resource's content, where)
    and stores no event (a refused transaction none of its entries'); an accepted transaction
    has no entry in error."""
    fuzz_cases["hypothesis"] += 1
    fresh_fhir_ids(body)
    raw = json.dumps(body, ensure_ascii=ensure_ascii, allow_nan=True).encode("utf-8", "backslashreplace")
    before = stored(app, feed.source)[0]
    response = app.test_client().post(FHIR, data=raw, headers={**feed.headers, "Content-Type": content_type})
    hypothesis.event(f"{response.status_code}")
    assert response.status_code in (200, 201, 400, 422), response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/fhir+json", response.mimetype
    answer = response.get_json()
    if response.status_code >= 400:
        assert answer["resourceType"] == "OperationOutcome" and answer["issue"], answer
        for issue in answer["issue"]:
            assert issue["severity"] == "error" and issue["diagnostics"], issue
            if response.status_code == 422 and issue["code"] == "invalid":
                assert issue["expression"] and all(issue["expression"]), issue
    is_transaction = body.get("resourceType") == "Bundle" and body.get("type") == "transaction"
    if response.status_code >= 400:  # a refused transaction too
        assert stored(app, feed.source)[0] == before
    if answer["resourceType"] == "Bundle":
        assert answer["type"] == ("transaction-response" if is_transaction else "batch-response")
        statuses = [e["response"]["status"] for e in answer["entry"]]
        for status in statuses:
            hypothesis.event(f"entry {status}")
        assert all(s in ("200 OK", "201 Created", "422 Unprocessable Entity") for s in statuses), statuses
        if is_transaction:
            assert "422 Unprocessable Entity" not in statuses
        assert stored(app, feed.source)[0] - before <= statuses.count("201 Created")


def test_fhir_bodies_no_json_reader_should_choke_on(app, feed):
    """Valid JSON that no FHIR resource holds and no text column can store: 400, never a crash."""
    client = app.test_client()
    headers = {**feed.headers, "Content-Type": "application/fhir+json"}
    deep_list = '{"resourceType": "Patient", "id": "p", "extension": ' + "[" * 900 + "]" * 900 + "}"
    extension = '{"url": "urn:x"}'
    for _ in range(200):
        extension = '{"url": "urn:x", "extension": [' + extension + "]}"
    deep_extension = '{"resourceType": "Patient", "id": "p", "extension": [' + extension + "]}"
    surrogate = '{"resourceType": "Patient", "id": "p", "identifier": [{"value": "MRN\\ud800"}]}'
    for raw in (deep_list, deep_extension, surrogate, surrogate.replace("Patient", "Bundle", 1)):
        response = client.post(FHIR, data=raw, headers=headers)
        assert response.status_code == 400, response.get_data(as_text=True)[:300]
        assert response.get_json()["issue"][0]["diagnostics"]


# -- HL7 v2 --------------------------------------------------------------------------------------

HL7_TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from("|^~\\&\r\n"), max_size=40)


@st.composite
def hl7_edits(draw) -> tuple:
    """A sample's name and the edits to make to it: fields, segments, separators, line ends,
    encodings, framing bytes and truncation."""
    name = draw(st.sampled_from(HL7_SAMPLES))
    edits = draw(st.lists(st.one_of(
        st.tuples(st.just("field"), st.integers(0, 12), st.integers(0, 50), HL7_TEXT | HUGE
                  | st.sampled_from(['""', "20251301", "2025", "99999999999999", "-0500", "CP", "MR"])),
        st.tuples(st.just("drop"), st.integers(0, 12)),
        st.tuples(st.just("copy"), st.integers(0, 12), st.integers(1, 30)),
        st.tuples(st.just("swap"), st.integers(0, 12), st.integers(0, 12)),
        st.tuples(st.just("encoding"), st.text(max_size=5)),
        st.tuples(st.just("separator"), st.characters(codec="utf-8"), st.booleans()),
        st.tuples(st.just("truncate"), st.integers(0, 400)),
        st.tuples(st.just("insert"), st.integers(0, 400), st.binary(max_size=8)),
    ), max_size=4))
    ending = draw(st.sampled_from(["\r", "\n", "\r\n", "\n\r"]))
    # Mostly as senders send it, so that most cases get past the MSH to the fields behind it.
    prefix = draw(st.sampled_from(["", "", "", "", "\ufeff", " \r\n", "\x0b"]))
    codec = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1", "utf-16"]))
    return name, edits, ending, prefix, codec


def hl7_bytes(name: str, edits, ending, prefix, codec) -> bytes:
    text = fresh_hl7(name, control_id=f"fz{RUN}{next(CALLS)}")
    segments = [s.split("|") for s in text.strip("\r").split("\r")]
    inserts, separator = [], None
    for edit in edits:
        kind = edit[0]
        if kind == "field" and segments:
            fields = segments[edit[1] % len(segments)]
            fields += [""] * (edit[2] + 1 - len(fields))
            fields[edit[2]] = edit[3]
        elif kind == "drop" and segments:
            del segments[edit[1] % len(segments)]
        elif kind == "copy" and segments:
            i = edit[1] % len(segments)
            segments[i:i] = [list(segments[i]) for _ in range(edit[2])]
        elif kind == "swap" and segments:
            i, j = edit[1] % len(segments), edit[2] % len(segments)
            segments[i], segments[j] = segments[j], segments[i]
        elif kind == "encoding" and segments and len(segments[0]) > 1:
            segments[0][1] = edit[1]
        elif kind == "separator":
            separator = edit
        elif kind in ("truncate", "insert"):
            inserts.append(edit)
    lines = ["|".join(s) for s in segments]
    if separator:  # another field separator: in every segment (as HL7 allows), or only in MSH
        _, char, everywhere = separator
        lines = [char.join(f.replace(char, "") for f in s) if everywhere or i == 0 else line
                 for i, (s, line) in enumerate(zip(segments, lines))]
    message = prefix + ending.join(lines)
    data = message.encode(codec, "replace" if codec == "latin-1" else "surrogatepass")
    for edit in inserts:
        data = data[:edit[1]] if edit[0] == "truncate" else data[:edit[1]] + edit[2] + data[edit[1]:]
    return data


def failed_messages(app, source: str) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(HospitalMessage).where(
            HospitalMessage.source == source, HospitalMessage.status == "failed"))


@given(message=hl7_edits(), content_type=st.sampled_from([ER7, "text/plain", "application/octet-stream", None]))
@bounded(150)
def test_hl7_samples_mutated(app, feed, fuzz_cases, message, content_type):
    """The real samples with fields, segments, encoding characters, separators, line endings,
    encodings and bytes mutated: always an ACK (ER7), AA with 200, AE or AR with 400, the reason
    in ERR and no event stored; and no message acknowledged then fails to be processed."""
    fuzz_cases["hypothesis"] += 1
    data = hl7_bytes(*message)
    headers = {**feed.headers, **({"Content-Type": content_type} if content_type else {})}
    before = stored(app, feed.source)[0]
    response = app.test_client().post(HL7, data=data, headers=headers)
    assert response.mimetype == ER7, response.mimetype
    ack = response.get_data(as_text=True)
    segments = ack.rstrip("\r").split("\r")
    assert segments[0].startswith("MSH") and segments[1].startswith("MSA"), ack
    code = segments[1][4:6]
    hypothesis.event(code)
    assert (response.status_code, code in ("AE", "AR")) in ((200, False), (400, True)), (response.status_code, ack)
    assert code in ("AA", "AE", "AR"), ack
    if code != "AA":  # the reason, in ERR-8 (the ACK uses the message's own field separator)
        assert len(segments) == 3 and segments[2].startswith("ERR"), ack
        assert segments[2].rsplit(segments[0][3], 1)[1], ack
        assert stored(app, feed.source)[0] == before
    assert failed_messages(app, feed.source) == 0


# -- Survey links --------------------------------------------------------------------------------

LINKS = [("GET", "/s/{}"), ("POST", "/s/{}"), ("GET", "/s/{}/thanks"), ("GET", "/unsubscribe/{}"),
         ("POST", "/unsubscribe/{}")]


@pytest.fixture(scope="module")
def unavailable_pages(app) -> set[bytes]:
    """The one page for a link that opens nothing, in each language it is written in."""
    client = app.test_client()
    pages = {client.get("/s/no-such-token", headers={"Accept-Language": lang}).data for lang in ("en", "es")}
    assert len(pages) == 2
    return pages


@given(token=st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=200)
       | st.from_regex(r"[A-Za-z0-9_-]{20,60}", fullmatch=True),
       link=st.sampled_from(LINKS),
       accept_language=st.none() | st.sampled_from(["en", "es-MX,es;q=0.9", "fr", "*"]) | st.from_regex(
           r"[ -~]{0,40}", fullmatch=True))
@bounded(150)
def test_any_survey_link_token(app, unavailable_pages, fuzz_cases, token, link, accept_language):
    """A link with any token (none was ever sent): the same 404 "unavailable" page, whatever the
    method or the browser's languages."""
    fuzz_cases["hypothesis"] += 1
    assume(token not in (".", ".."))  # dot segments: the browser resolves them before asking
    from urllib.parse import quote
    headers = {"Accept-Language": accept_language} if accept_language is not None else {}
    method, path = link
    response = app.test_client().open(path.format(quote(token, safe="")), method=method, headers=headers,
                                      data={"q": "5"} if method == "POST" else None)
    assert response.status_code == 404, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.data in unavailable_pages
