"""Test fixtures: a real database per session (SQLite file, or PostgreSQL from
FEEDBACK_TEST_DATABASE_URL), the real CLI, and factories that give every test its own ids."""
from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import phonenumbers
import pytest
import yaml
from sqlalchemy import select

from feedback_service import create_app
from feedback_service.config import PROJECT_ROOT
from feedback_service.extensions import db
from feedback_service.journeys.library import load_library
from tests.scratch import scratch_database


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    """A database of our own: a new SQLite file, or a new database on the PostgreSQL server."""
    with scratch_database(os.environ.get("FEEDBACK_TEST_DATABASE_URL"), tmp_path_factory.mktemp("db"),
                          prefix="feedback_test") as url:
        yield url


@pytest.fixture(scope="session")
def outbox(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("outbox") / "outbox.jsonl"


@pytest.fixture(scope="session")
def settings(database_url, outbox, tmp_path_factory) -> dict:
    """The FEEDBACK_* settings every app and subprocess of this session shares."""
    return {
        "FEEDBACK_DATABASE_URL": database_url,
        "FEEDBACK_CONSOLE_OUTBOX": str(outbox),
        "FEEDBACK_BASE_URL": "http://survey.test",
        "FEEDBACK_SECRET_KEY": "test-secret-" + uuid.uuid4().hex,
        # Every test's client is 127.0.0.1: the guessing limits are tested with an app of their own.
        "FEEDBACK_TOKEN_GUESS_LIMIT": "100000 per minute",
        "FEEDBACK_SIGN_IN_LIMIT": "100000 per minute",
    }


@pytest.fixture(scope="session")
def app(settings):
    app = create_app({"TESTING": True, **settings})
    result = app.test_cli_runner().invoke(args=["init"])
    assert result.exit_code == 0, result.output
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield
        db.session.rollback()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def api_key(app) -> str:
    result = app.test_cli_runner().invoke(args=["api-key", "create", f"hospital-{uuid.uuid4().hex[:8]}",
                                                "--scope", "events", "--scope", "scores"])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[0]


@pytest.fixture
def auth(api_key) -> dict:
    return {"Authorization": f"Bearer {api_key}"}


def uid(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_phone() -> str:
    """A valid US number of the test's own: text limits count per handset, across patients."""
    while True:
        number = f"+1{random.randint(201, 989)}{random.randint(200, 999)}{random.randint(0, 9999):04d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(number)):
            return number


def daytime_tz(now: datetime | None = None) -> str:
    """A fixed-offset zone where it is about noon right now, so quiet hours never get in the way."""
    now = now or datetime.now(timezone.utc)
    offset = 12 - now.hour  # hours east of UTC
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


def night_tz(now: datetime | None = None) -> str:
    """A fixed-offset zone where it is about 02:00 right now."""
    now = now or datetime.now(timezone.utc)
    offset = (2 - now.hour + 12) % 24 - 12
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


def event_body(type_="booking", *, journey=None, touchpoint=None, occurred_at=None, **patient) -> dict:
    """A valid event with fresh ids; the patient reachable by SMS in a daytime zone, unless overridden."""
    body = {
        "external_id": uid("evt"),
        "type": type_,
        "occurred_at": (occurred_at or datetime.now(timezone.utc) - timedelta(days=3)).isoformat(),
        "patient": {"id": uid("pat"), "first_name": "Ana", "phone": new_phone(), "email": "ana@example.org",
                    "locale": "en", "timezone": daytime_tz(), "consent_sms": True, "consent_email": True,
                    **patient},
    }
    if journey:
        body["journey"] = journey
    if touchpoint:
        body["touchpoint"] = touchpoint
    return body


def outbox_lines(outbox: Path) -> list[dict]:
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text().splitlines() if line.strip()]


def message_for(outbox: Path, invitation_id: int) -> dict:
    found = [m for m in outbox_lines(outbox) if m["invitation_id"] == invitation_id]
    assert len(found) == 1, f"invitation {invitation_id} was sent {len(found)} times"
    return found[0]


def token_of(message: dict) -> str:
    return message["survey_url"].rsplit("/", 1)[-1]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def load_journey_copy(app, folder: Path, prefix: str = "j", rules: dict | None = None, journey: dict | None = None,
                      **rule_overrides) -> str:
    """Load a journey of its own (a copy of general-care under a fresh slug) through the library
    loader; its slug. Overrides apply to every rule; `rules={"booking": {...}}` to one event type's."""
    slug = uid(prefix)
    dest = folder / slug
    dest.mkdir(parents=True)
    for f in (PROJECT_ROOT / "surveys" / "general-care").glob("*.yaml"):
        doc = yaml.safe_load(f.read_text())
        if f.name == "journey.yaml":
            doc["slug"], doc["default"] = slug, False
            doc.update(journey or {})
            for rule in doc["rules"]:
                rule.update(rule_overrides, **(rules or {}).get(rule["event"], {}))
        (dest / f.name).write_text(yaml.safe_dump(doc, allow_unicode=True))
    with app.app_context():
        load_library(folder)
        db.session.commit()
    for child in dest.iterdir():
        child.unlink()
    dest.rmdir()
    return slug


@pytest.fixture
def new_journey(app, tmp_path):
    """A journey of the test's own: load_journey_copy in the test's folder."""
    def make(rules: dict | None = None, journey: dict | None = None, **rule_overrides) -> str:
        return load_journey_copy(app, tmp_path, "j", rules, journey, **rule_overrides)
    return make


@pytest.fixture
def routes(app, monkeypatch):
    """Put routes of the test's own ahead of the shipped mapping file's, for this test only:
    routes({"match": {"location": ["W1"]}, "journey": slug}, ...). Returns the settings used."""
    from dataclasses import replace

    from feedback_service.events.mapping import Mapping, MappingDoc

    shipped = yaml.safe_load((PROJECT_ROOT / "config" / "mapping.yaml").read_text())

    def apply(*extra: dict, **doc):
        mapping = Mapping(MappingDoc.model_validate({**shipped, **doc, "routes": [*extra, *shipped["routes"]]}))
        settings = replace(app.extensions["feedback_intake"], mapping=mapping)
        monkeypatch.setitem(app.extensions, "feedback_intake", settings)
        return settings
    return apply


@pytest.fixture
def run_jobs(app):
    """`feedback-service jobs run-once`, through the real CLI."""
    def run() -> dict:
        result = app.test_cli_runner().invoke(args=["jobs", "run-once"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])
    return run


# -- Twilio and SendGrid, through their real SDKs, against fakes on 127.0.0.1 -----------------

TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "test-auth-token-" + uuid.uuid4().hex
TWILIO_SERVICE = "MG" + "fedcba9876543210" * 2
SENDGRID_KEY = "SG.test-" + uuid.uuid4().hex
SENDER = "surveys@riverside.example"


@pytest.fixture(scope="session")
def fakes():
    from tests.fake_providers import FakeProvider
    twilio, sendgrid = FakeProvider(), FakeProvider()
    yield twilio, sendgrid
    twilio.close()
    sendgrid.close()


@pytest.fixture(autouse=True)
def _providers_in_good_health():
    """A circuit opened by one test's failing provider must not hold back the next test's sends."""
    from feedback_service.channels.breaker import reset_breakers
    reset_breakers()


@pytest.fixture
def fake_twilio(fakes):
    fakes[0].reset()
    return fakes[0]


@pytest.fixture
def fake_sendgrid(fakes):
    fakes[1].reset()
    return fakes[1]


@pytest.fixture(scope="session")
def sendgrid_signing_key():
    """A P-256 key pair like the one SendGrid signs event-webhook posts with."""
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def provider_settings(settings, fakes, sendgrid_signing_key) -> dict:
    """Settings of a deployment with real providers: credentials, and the SDKs' base URLs on the fakes."""
    import base64

    from cryptography.hazmat.primitives import serialization
    public = sendgrid_signing_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        **settings,
        "TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_MESSAGING_SERVICE_SID": TWILIO_SERVICE, "TWILIO_API_BASE_URL": fakes[0].url,
        "SENDGRID_API_KEY": SENDGRID_KEY, "SENDGRID_FROM_EMAIL": SENDER, "SENDGRID_API_BASE_URL": fakes[1].url,
        "SENDGRID_WEBHOOK_PUBLIC_KEY": base64.b64encode(public).decode(),
        "FEEDBACK_SMS_RATE_PER_SECOND": 0.0,  # no pacing unless a test asks for it
        "FEEDBACK_EMAIL_RATE_PER_SECOND": 0.0,
        "FEEDBACK_PROVIDER_TIMEOUT_SECONDS": 2.0,
    }


@pytest.fixture(scope="session")
def provider_app(app, provider_settings):
    """The service configured for Twilio and SendGrid, on the session's database."""
    papp = create_app({"TESTING": True, **provider_settings})
    yield papp
    with papp.app_context():
        db.engine.dispose()


@pytest.fixture
def provider_client(provider_app):
    return provider_app.test_client()


def twilio_post(client, path: str, form: dict, *, token: str = TWILIO_TOKEN, base: str = "http://survey.test",
                signature: str | None = None):
    """POST a webhook as Twilio would, signed by the SDK's own code against our public URL."""
    from twilio.request_validator import RequestValidator
    signature = signature if signature is not None else RequestValidator(token).compute_signature(base + path, form)
    return client.post(path, data=form, headers={"X-Twilio-Signature": signature})


def sendgrid_post(client, events, key, *, timestamp: str | None = None, body: str | None = None):
    """POST event-webhook events as SendGrid would, signed with the P-256 key."""
    import base64
    import time as _time

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    raw = body if body is not None else json.dumps(events)
    timestamp = timestamp or str(int(_time.time()))
    signature = base64.b64encode(key.sign((timestamp + raw).encode(), ec.ECDSA(hashes.SHA256()))).decode()
    return client.post("/webhooks/sendgrid/events", data=raw, content_type="application/json",
                       headers={"X-Twilio-Email-Event-Webhook-Signature": signature,
                                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp})


def post_event(client, auth, body) -> dict:
    """POST one event; returns its one invitation outcome (id, status, reason, channel ...)."""
    r = client.post("/api/v1/events", json=body, headers=auth)
    assert r.status_code == 202, r.get_json()
    [invitation] = r.get_json()["invitations"]
    return invitation


def run_jobs_of(app) -> dict:
    """`feedback-service jobs run-once` through this app's CLI (the `run_jobs` fixture's, for any app)."""
    result = app.test_cli_runner().invoke(args=["jobs", "run-once"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def invitation_row(app, inv_id: int):
    """The invitation as stored now, detached."""
    from feedback_service.scheduling.models import Invitation
    with app.app_context():
        inv = db.session.get(Invitation, inv_id)
        db.session.expunge(inv)
        return inv


STAFF_PASSWORD = "a long enough password"


def staff_user(app, role: str) -> str:
    """A new staff account of this role, created through the CLI like a first admin; its email."""
    email = f"{uid(role)}@staff.test"
    result = app.test_cli_runner().invoke(args=["user", "create", email, "--role", role, "--password", STAFF_PASSWORD])
    assert result.exit_code == 0, result.output
    return email


def sign_in(client, email: str, password: str = STAFF_PASSWORD):
    """Sign a test client in through the real /login form (CSRF token and all)."""
    page = client.get("/login")
    return client.post("/login", data={"csrf_token": csrf_of(page.text), "email": email, "password": password})


@pytest.fixture
def staff(app):
    """staff("designer") -> a test client signed in as a new account with that role (.email set)."""
    def make(role: str):
        client = app.test_client()
        client.email = staff_user(app, role)
        response = sign_in(client, client.email)
        assert response.status_code == 302, response.text
        return client
    return make


def worst_values(questions: list[dict]) -> dict[str, str]:
    """The worst answer to every closed question (and a comment to any free-text one)."""
    from feedback_service.journeys.questions import SCALES, goodness
    values = {}
    for q in questions:
        if q["type"] == "text":
            values[q["key"]] = "Nobody called me back."
            continue
        if q["type"] in SCALES:
            lo, hi, _ = SCALES[q["type"]]
            options = [str(v) for v in range(lo, hi + 1)]
        elif q["type"] == "yes_no":
            options = ["yes", "no"]
        else:
            options = [o["value"] for o in q["options"]]
        values[q["key"]] = min(options, key=lambda v: goodness(q, v) if "measure" in q else 0)
    return values


def worst_answer(app, journey: str) -> int:
    """A booking in `journey`, sent, then answered as badly as its questions allow; the alert id
    (the journey must have an alert rule that fires on it)."""
    from feedback_service.alerts.models import Alert
    from feedback_service.responses.services import record_response
    from feedback_service.scheduling.models import Invitation
    client = app.test_client()
    result = app.test_cli_runner().invoke(args=["api-key", "create", uid("worst")])
    auth = {"Authorization": f"Bearer {result.stdout.strip().splitlines()[0]}"}
    inv_id = post_event(client, auth, event_body(journey=journey, email=f"{uid('w')}@example.org"))["id"]
    for _ in range(50):  # a dev server's worker (browser tests) may be sending it at this moment
        run_jobs_of(app)
        if invitation_row(app, inv_id).status == "sent":
            break
        time.sleep(0.1)
    with app.app_context():
        invitation = db.session.get(Invitation, inv_id)
        assert invitation.status == "sent", invitation.status
        response = record_response(invitation, worst_values(invitation.question_set_version.questions))
        return db.session.scalar(select(Alert.id).where(Alert.response_id == response.id))
