"""API keys (feedback_service/api/): stored as a sha256 only, scoped ("events" in, "scores" out),
revocable, their last use shown on the admin page and by `feedback-service api-key list`, and
migration 0006 giving keys made before scopes existed both of them. Keys are made and revoked with
the real `feedback-service` command, in its own process."""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import bindparam, func, inspect, select, text

from feedback_service import MIGRATIONS_DIR, create_app
from feedback_service.api.models import ApiKey
from feedback_service.events.models import Event, HospitalMessage
from feedback_service.extensions import db
from feedback_service.security import hash_secret
from feedback_service.sqltypes import UTCDateTime, utcnow
from feedback_service.staff.models import AuditEntry
from tests.conftest import csrf_of, event_body, new_phone, sign_in, staff_user, uid
from tests.hospital import ADT_A03, fhir_sample, raw_hl7
from tests.scratch import scratch_database
from tests.security.test_survey_links import tables_holding

CLI = str(Path(sys.executable).parent / "feedback-service")
EVENTS_IN = ("events", "fhir", "hl7v2")
SCORES_OUT = ("scores", "map", "map.csv", "trends")
FHIR_JSON = "application/fhir+json"


# ---------------------------------------------------------------------------------------------- helpers

def cli(settings, *args) -> subprocess.CompletedProcess:
    """`feedback-service ARGS` in a process of its own, on the session's database."""
    result = subprocess.run([CLI, *args], check=False, env={**os.environ, **settings}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def new_key(app, *scopes: str) -> tuple[str, str]:
    """(name, key) of a key made by `api-key create` (in this process: each process of the CLI
    takes seconds to start), with `--scope` for each scope given."""
    name = uid("key")
    result = app.test_cli_runner().invoke(args=["api-key", "create", name,
                                                *(a for s in scopes for a in ("--scope", s))])
    assert result.exit_code == 0, result.output
    return name, result.stdout.strip().splitlines()[0]


def key_row(app, name: str) -> ApiKey:
    with app.app_context():
        row = db.session.scalar(select(ApiKey).where(ApiKey.name == name))
        db.session.expunge(row)
        return row


def fhir_transaction() -> dict:
    """The shared Appointment-example, booked just now, with its patient in the same Bundle."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    appointment = fhir_sample("Appointment-example.json")
    appointment["created"] = now.isoformat()
    appointment["start"], appointment["end"] = ((now + timedelta(days=7, hours=h)).isoformat() for h in (0, 1))
    patient = {"resourceType": "Patient", "id": "example", "birthDate": "1970-05-01",
               "identifier": [{"value": uid("mrn")}], "name": [{"given": ["Ana"], "family": "Test"}],
               "telecom": [{"system": "phone", "use": "mobile", "value": new_phone()}]}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"http://hospital.example/fhir/{r['resourceType']}/{r['id']}", "resource": r}
        for r in (patient, appointment)]}


def call(client, key: str, what: str, slug: str):
    """One API call of the kind `what`, with this key."""
    headers = {"Authorization": f"Bearer {key}"}
    if what == "events":
        return client.post("/api/v1/events", json=event_body(journey=slug), headers=headers)
    if what == "fhir":
        return client.post("/api/v1/fhir", data=json.dumps(fhir_transaction()),
                           headers={**headers, "Content-Type": FHIR_JSON})
    if what == "hl7v2":
        return client.post("/api/v1/hl7v2", data=raw_hl7(ADT_A03),
                           headers={**headers, "Content-Type": "x-application/hl7-v2+er7"})
    if what == "journeys":
        return client.get("/api/v1/journeys", headers=headers)
    return client.get(f"/api/v1/journeys/{slug}/{what}", headers=headers)


def assert_accepted(response, what: str):
    """What each call answers when the key may make it."""
    assert response.status_code == {"events": 202, "fhir": 200, "hl7v2": 200}.get(what, 200), \
        (what, response.status_code, response.get_data(as_text=True)[:500])
    if what == "hl7v2":
        assert "MSA|AA|" in response.get_data(as_text=True)
    elif what == "fhir":
        assert response.get_json()["type"] == "transaction-response"
    elif what == "map.csv":
        assert response.mimetype == "text/csv" and response.get_data(as_text=True).startswith("journey,stage,")


def assert_refused(response, status: int, scope: str | None, fhir: bool):
    """401 (no live key) or 403 (this scope missing): a JSON error, an OperationOutcome for FHIR."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()
    if fhir:
        assert response.mimetype == FHIR_JSON and body["resourceType"] == "OperationOutcome"
        [issue] = body["issue"]
        assert (issue["severity"], issue["code"]) == ("error", "forbidden" if status == 403 else "login")
        message = issue["diagnostics"]
    else:
        assert response.mimetype == "application/json"
        message = body["error"]
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    if status == 403:
        assert f"{scope!r} scope" in message
        assert 'error="insufficient_scope"' in challenge and f'scope="{scope}"' in challenge
    else:
        assert "valid API key" in message


def stored_for(app, source: str) -> tuple[int, int]:
    """(events, hospital messages) kept for a source."""
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(Event).where(Event.source == source)),
                db.session.scalar(select(func.count()).select_from(HospitalMessage)
                                  .where(HospitalMessage.source == source)))


# ---------------------------------------------------------------------------------------------- stored as a hash

def test_only_the_sha256_of_a_key_is_stored(app, settings):
    name = uid("key")
    result = cli(settings, "api-key", "create", name)
    key = result.stdout.strip().splitlines()[0]
    assert key.startswith("fbk_") and len(key) >= 40
    assert "only its hash is kept" in result.stderr
    row = key_row(app, name)
    assert row.key_hash == hash_secret(key) and row.prefix == key[:8]
    # Nowhere in the database, not even in the audit log of its creation.
    assert tables_holding(app, key) == []
    assert tables_holding(app, row.key_hash) == ["api_keys"]
    listing = app.test_cli_runner().invoke(args=["api-key", "list"]).output
    assert name in listing and key not in listing and row.key_hash not in listing


# ---------------------------------------------------------------------------------------------- scopes

def test_an_events_key_made_by_default_sends_events_in_and_cannot_read_scores_out(app, settings, client, new_journey):
    slug = new_journey()
    name, key = new_key(app)
    assert key_row(app, name).scopes == "events"
    for what in EVENTS_IN:
        assert_accepted(call(client, key, what, slug), what)
    assert stored_for(app, name) == (3, 2)  # the event, the appointment; the FHIR and HL7 messages
    for what in SCORES_OUT:
        assert_refused(call(client, key, what, slug), 403, "scores", fhir=False)
    assert_accepted(call(client, key, "journeys", slug), "journeys")


def test_a_scores_key_reads_scores_out_and_cannot_send_events_in(app, settings, client, new_journey):
    slug = new_journey()
    name, key = new_key(app, "scores")
    assert key_row(app, name).scopes == "scores"
    for what in SCORES_OUT:
        assert_accepted(call(client, key, what, slug), what)
    for what in EVENTS_IN:
        assert_refused(call(client, key, what, slug), 403, "events", fhir=what == "fhir")
    assert stored_for(app, name) == (0, 0)
    assert_accepted(call(client, key, "journeys", slug), "journeys")


def test_a_key_may_have_both_scopes_and_no_others(app, settings, client, new_journey):
    slug = new_journey()
    name, key = new_key(app, "scores", "events")
    assert key_row(app, name).scopes == "events scores"
    for what in (*EVENTS_IN, *SCORES_OUT):
        assert_accepted(call(client, key, what, slug), what)
    refused = app.test_cli_runner().invoke(args=["api-key", "create", uid("key"), "--scope", "admin"])
    assert refused.exit_code != 0 and "'admin' is not one of" in refused.output


def test_a_revoked_key_gets_401_everywhere_and_its_last_use_stays(app, settings, client, new_journey):
    slug = new_journey()
    name, key = new_key(app, "events", "scores")
    assert_accepted(call(client, key, "journeys", slug), "journeys")
    cli(settings, "api-key", "revoke", name)
    last_used = key_row(app, name).last_used_at
    assert last_used is not None and key_row(app, name).revoked_at is not None

    adapter = app.url_map.bind("survey.test")
    tried = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or rule.endpoint == "api.openapi":  # the description is public
            continue
        path = adapter.build(rule.endpoint, {"slug": slug} if "slug" in rule.arguments else {})
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(path, method=method, headers={"Authorization": f"Bearer {key}"})
            assert_refused(response, 401, None, fhir=path == "/api/v1/fhir")
            tried += 1
    assert tried >= len(EVENTS_IN) + len(SCORES_OUT) + 1
    assert key_row(app, name).last_used_at == last_used
    assert stored_for(app, name) == (0, 0)


# ---------------------------------------------------------------------------------------------- last use

def admin_page_row(admin, name: str) -> dict[str, str]:
    page = admin.get("/admin/api-keys")
    assert page.status_code == 200
    row = re.search(rf"<tr><td>{re.escape(name)}</td>(.*?)</tr>", page.text, re.S).group(1)
    cells = [c.strip() for c in re.findall(r"<td>(.*?)</td>", f"<td>{name}</td>" + row, re.S)]
    return dict(zip(("name", "source", "scopes", "prefix", "created", "last used"), cells))


def cli_list_row(settings, name: str) -> dict[str, str]:
    lines = cli(settings, "api-key", "list").stdout.splitlines()
    header = lines[0].split("\t")
    [row] = [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.startswith(name + "\t")]
    return row


def assert_just_now(shown: str, fmt: str):
    moment = datetime.strptime(shown, fmt).replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - moment) < timedelta(minutes=3), shown


def test_the_last_use_of_a_key_is_shown_on_the_admin_page_and_by_the_cli(app, settings, client, new_journey):
    slug = new_journey()
    name, key = new_key(app, "scores")
    admin = app.test_client()
    assert sign_in(admin, staff_user(app, "admin")).status_code == 302
    assert admin_page_row(admin, name)["last used"] == "never"
    assert admin_page_row(admin, name)["scopes"] == "scores"
    assert cli_list_row(settings, name)["last used"] == "never"

    assert_accepted(call(client, key, "scores", slug), "scores")
    assert_just_now(admin_page_row(admin, name)["last used"], "%Y-%m-%d %H:%M UTC")
    row = cli_list_row(settings, name)
    assert_just_now(row["last used"], "%Y-%m-%d %H:%M")
    assert (row["scopes"], row["revoked"]) == ("scores", "-")


# ---------------------------------------------------------------------------------------------- the admin form

def test_the_admin_form_refuses_a_key_with_no_scope_and_makes_one_with_scores_only(app):
    admin = app.test_client()
    admin.email = staff_user(app, "admin")
    assert sign_in(admin, admin.email).status_code == 302
    name = uid("key")
    page = admin.get("/admin/api-keys")
    refused = admin.post("/admin/api-keys", data={"csrf_token": csrf_of(page.text), "name": name, "source": ""})
    assert refused.status_code == 422
    assert re.search(r'<p class="error" id="scope_events-error">choose at least one</p>', refused.text)
    assert 'class="key"' not in refused.text
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.name == name)) == 0
        assert db.session.scalar(select(func.count()).select_from(AuditEntry)
                                 .where(AuditEntry.actor == admin.email)) == 0

    made = admin.post("/admin/api-keys", data={"csrf_token": csrf_of(refused.text), "name": name,
                                               "scope_scores": "y"})
    assert made.status_code == 200
    key = re.search(r'<code class="key">([^<]+)</code>', made.text).group(1)
    row = key_row(app, name)
    assert (row.scopes, row.key_hash) == ("scores", hash_secret(key))


# ---------------------------------------------------------------------------------------------- migration 0006

def test_migration_0006_gives_older_keys_both_scopes_and_downgrades_and_upgrades_again(settings, tmp_path):
    """A database at 0005 with a key written by plain SQL, as every key before scopes existed: after
    the upgrade it still sends events and now reads scores too (hospitals' integrations go on
    working); down to 0005 and up again keeps the key."""
    from flask_migrate import downgrade, upgrade

    key = "fbk_" + secrets.token_urlsafe(32)
    with scratch_database(os.environ.get("FEEDBACK_TEST_DATABASE_URL"), tmp_path, prefix="feedback_0006") as url:
        old = create_app({"TESTING": True, **settings, "FEEDBACK_DATABASE_URL": url})
        try:
            with old.app_context():
                upgrade(directory=MIGRATIONS_DIR, revision="0005_dashboard")
                assert "scopes" not in {c["name"] for c in inspect(db.engine).get_columns("api_keys")}
                insert = text("INSERT INTO api_keys (name, source, key_hash, prefix, created_at) "
                              "VALUES ('legacy-ehr', 'legacy-ehr', :hash, :prefix, :created)"
                              ).bindparams(bindparam("created", type_=UTCDateTime()))
                db.session.execute(insert, {"hash": hash_secret(key), "prefix": key[:8],
                                            "created": utcnow() - timedelta(days=400)})
                db.session.commit()
                db.session.remove()  # no open transaction may wait on the migration's ALTER TABLE
                upgrade(directory=MIGRATIONS_DIR)
                assert db.session.scalar(select(ApiKey.scopes).where(ApiKey.name == "legacy-ehr")) == "events scores"
                db.session.remove()
            assert_both_scopes(old.test_client(), key)

            with old.app_context():
                downgrade(directory=MIGRATIONS_DIR, revision="0005_dashboard")
                assert "scopes" not in {c["name"] for c in inspect(db.engine).get_columns("api_keys")}
                assert db.session.execute(text("SELECT key_hash FROM api_keys WHERE name = 'legacy-ehr'")
                                          ).scalar() == hash_secret(key)
                db.session.remove()
                upgrade(directory=MIGRATIONS_DIR)
                assert db.session.scalar(select(ApiKey.scopes).where(ApiKey.name == "legacy-ehr")) == "events scores"
                db.session.remove()
            assert_both_scopes(old.test_client(), key)
        finally:
            with old.app_context():
                db.session.remove()
                db.engine.dispose()


def assert_both_scopes(client, key: str):
    """Past the scope check both ways: on an empty database a 404 (no such journey) and a 422 (no
    event), never a 403."""
    headers = {"Authorization": f"Bearer {key}"}
    scores = client.get("/api/v1/journeys/orthopedic-surgery/scores", headers=headers)
    assert scores.status_code == 404 and "no journey" in scores.get_json()["error"]
    events = client.post("/api/v1/events", json={}, headers=headers)
    assert events.status_code == 422, events.get_json()
