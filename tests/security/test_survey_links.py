"""Survey links against guessing (feedback_service/security.py, responses/, protection.py).

A link's token carries at least 128 random bits; the database keeps only its sha256; unknown,
malformed, used and expired links all get the one kind 404 page, byte for byte; a client
(REMOTE_ADDR, or X-Forwarded-For behind FEEDBACK_PROXY_HOPS proxies) that opens links leading
nowhere gets 429 after FEEDBACK_TOKEN_GUESS_LIMIT of them, and the same holds for failed staff
sign-ins; secrets are compared in constant time (security.matches, hmac.compare_digest)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import random
from datetime import timedelta
from html import escape
from urllib.parse import quote

import pytest
from sqlalchemy import inspect, text, update

from feedback_service import create_app
from feedback_service.extensions import db
from feedback_service.responses.texts import texts_for
from feedback_service.scheduling.models import Invitation
from feedback_service.security import hash_secret, matches, new_token
from feedback_service.sqltypes import utcnow
from tests.conftest import (STAFF_PASSWORD, csrf_of, event_body, message_for, post_event, run_jobs_of, sign_in,
                            staff_user, token_of, worst_values)
from tests.security.test_headers_and_csrf import header_problems

GUESSES = 5
SIGN_INS = 3
# Headers that count the client's guesses, or say the time: the only ones two 404s may differ in.
COUNTERS = {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after", "date"}
ENGLISH, SPANISH = "en-GB,en;q=0.9", "es-MX,es;q=0.9"
MALFORMED = {
    "too short": "abc",
    "bad characters": "abc$def*ghi!jkl(mno)pqr~stu",
    "very long": "A" * 4000,
    "unicode": "ñandú-" * 8,
    "dots": "..",
    "path-ish": "..\\..\\etc\\passwd",
    "encoded dots": "%2e%2e%5c%2e%2e%5cetc",
    "token and more": new_token() + ".",
}


# ------------------------------------------------------------------------------------------------------------ helpers

def send_link(app, api_key: str, outbox, journey: str) -> tuple[int, str]:
    """A booking invitation sent by the dispatcher (console channel): (its id, its link's token)."""
    inv_id = post_event(app.test_client(), {"Authorization": f"Bearer {api_key}"}, event_body(journey=journey))["id"]
    run_jobs_of(app)
    return inv_id, token_of(message_for(outbox, inv_id))


def answer_link(app, token: str) -> None:
    client = app.test_client()
    page = client.get(f"/s/{token}")
    with app.app_context():
        invitation = db.session.get(Invitation, db.session.scalar(
            text("SELECT id FROM invitations WHERE token_hash = :h"), {"h": hash_secret(token)}))
        answers = worst_values(invitation.question_set_version.questions)
    assert client.post(f"/s/{token}", data={"csrf_token": csrf_of(page.text), **answers}).status_code == 302


def tables_holding(app, secret: str) -> list[str]:
    """Every table with a column (of any type, read as text) that contains `secret`."""
    pattern = "%" + secret.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    found = []
    with app.app_context():
        inspector = inspect(db.engine)
        for table in inspector.get_table_names():
            columns = [c["name"] for c in inspector.get_columns(table)]
            where = " OR ".join(f"CAST(\"{c}\" AS TEXT) LIKE :p ESCAPE '\\'" for c in columns)
            if db.session.execute(text(f'SELECT count(*) FROM "{table}" WHERE {where}'), {"p": pattern}).scalar():
                found.append(table)
    return found


def new_address() -> str:
    """A client address of the test's own, so that no two tests share a count."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def client_at(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


@pytest.fixture
def limited(settings):
    """limited(**overrides): the service with low guessing limits, on the session's database. The
    counts live in the one Limiter of the process, whose storage each new app replaces: every
    test makes its app first and uses addresses of its own."""
    made = []

    def make(**overrides):
        made.append(create_app({"TESTING": True, **settings, "FEEDBACK_TOKEN_GUESS_LIMIT": f"{GUESSES} per minute",
                                "FEEDBACK_SIGN_IN_LIMIT": f"{SIGN_INS} per minute", **overrides}))
        return made[-1]
    yield make
    for app in made:
        with app.app_context():
            db.engine.dispose()


def assert_busy(response, locale: str = "en"):
    """The 429 page: "please try again in a minute", with Retry-After, and our usual headers."""
    assert response.status_code == 429, response.status_code
    assert escape(texts_for(locale)["busy_title"]) in response.text
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert header_problems(response, "survey.survey", "429") == []


# ------------------------------------------------------------------------------------------------------------- tokens

def test_links_the_dispatcher_sends_carry_at_least_128_random_bits(app, api_key, outbox, new_journey):
    _, token = send_link(app, api_key, outbox, new_journey())
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert len(raw) * 8 >= 128
    assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == token  # nothing but those bytes

    tokens = [new_token() for _ in range(5000)]
    assert len(set(tokens)) == len(tokens)
    decoded = [base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)) for t in tokens]
    assert {len(d) for d in decoded} == {len(raw)}
    # Random in every byte, not a counter or a clock: each position takes nearly all 256 values.
    assert min(len({d[i] for d in decoded}) for i in range(len(raw))) > 240


def test_the_database_keeps_only_the_sha256_of_a_link(app, api_key, outbox, new_journey):
    inv_id, token = send_link(app, api_key, outbox, new_journey())
    with app.app_context():
        row = db.session.execute(text("SELECT * FROM invitations WHERE id = :id"), {"id": inv_id}).mappings().one()
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert not any(token in str(value) for value in row.values())
    assert tables_holding(app, token) == []
    assert tables_holding(app, row["token_hash"]) == ["invitations"]  # the search finds what is there


def test_matches_compares_a_secret_with_its_stored_hash():
    secret = new_token()
    assert matches(secret, hash_secret(secret))
    assert not matches(secret + "x", hash_secret(secret))
    assert not matches(secret, hash_secret(secret).upper())
    assert not matches(secret, hash_secret(secret)[:-1])
    assert not matches(secret, "")
    assert not matches(secret, None)


def test_survey_links_and_api_keys_are_compared_in_constant_time(app, api_key, outbox, new_journey, monkeypatch):
    """Both go through security.matches, that is hmac.compare_digest: watched here as it is
    called with the stored sha256 of the link and of the key."""
    _, token = send_link(app, api_key, outbox, new_journey())
    compared = []
    real = hmac.compare_digest

    def watching(a, b):
        compared.append((a, b))
        return real(a, b)
    monkeypatch.setattr(hmac, "compare_digest", watching)
    client = app.test_client()
    assert client.get(f"/s/{token}").status_code == 200
    assert (hash_secret(token), hash_secret(token)) in compared
    compared.clear()
    assert client.get("/api/v1/journeys", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200
    assert (hash_secret(api_key), hash_secret(api_key)) in compared


# --------------------------------------------------------------------------------------- one page for every dead link

def test_unknown_malformed_used_and_expired_links_get_the_same_page(app, api_key, outbox, new_journey):
    """Byte for byte, in the browser's language, with the same headers but the guess counters:
    nothing tells a guesser whether a token ever existed. GET and POST alike, and the thank-you
    and unsubscribe addresses too where the link opens nothing there."""
    journey = new_journey()
    _, used = send_link(app, api_key, outbox, journey)
    answer_link(app, used)
    expired_id, expired = send_link(app, api_key, outbox, journey)
    with app.app_context():
        db.session.execute(update(Invitation).where(Invitation.id == expired_id)
                           .values(expires_at=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    dead = {"unknown": new_token(), **MALFORMED, "used": used, "expired": expired}
    paths = {f"{kind} {method}": (method, f"/s/{quote(token, safe='%')}") for kind, token in dead.items()
             for method in ("GET", "POST")}
    paths.update({f"{kind} thanks": ("GET", f"/s/{quote(token, safe='%')}/thanks") for kind, token in dead.items()
                  if kind != "used"})  # the patient who answered gets the thank-you page
    paths.update({f"{kind} unsubscribe": ("GET", f"/unsubscribe/{quote(token, safe='%')}")
                  for kind, token in dead.items() if kind not in ("used", "expired")})  # stopping always works

    for language, locale in ((ENGLISH, "en"), (SPANISH, "es")):
        answers = {}
        for what, (method, path) in paths.items():
            response = app.test_client().open(path, method=method, headers={"Accept-Language": language})
            assert response.status_code == 404, (what, response.status_code)
            headers = {(k.lower(), v) for k, v in response.headers.items() if k.lower() not in COUNTERS}
            answers[what] = (response.get_data(), frozenset(headers))
        bodies = {body for body, _ in answers.values()}
        assert len(bodies) == 1, {what: len(body) for what, (body, _) in answers.items()}
        assert len({headers for _, headers in answers.values()}) == 1
        page = bodies.pop().decode()
        assert escape(texts_for(locale)["unavailable_title"]) in page and f'<html lang="{locale}">' in page


@pytest.mark.parametrize("path", ["/s/{token}/", "/s/{token}%2F..%2F", "/unsubscribe/{token}/"],
                         ids=["trailing-slash", "encoded-slash", "unsubscribe-trailing-slash"])
def test_a_link_mangled_with_a_slash_gets_the_same_kind_page(app, path):
    kind = app.test_client().get(f"/s/{new_token()}")
    mangled = app.test_client().get(path.format(token=new_token()))
    assert (mangled.status_code, mangled.get_data()) == (404, kind.get_data())


# ------------------------------------------------------------------------------------- guessing is limited per client

def test_a_client_gets_429_after_five_links_that_open_nothing_and_another_client_does_not(
        app, api_key, outbox, new_journey, limited):
    _, real = send_link(app, api_key, outbox, new_journey())
    service = limited()
    guesser = client_at(service, new_address())
    # Every link route shares one count: guesses cannot be spread over them.
    misses = [f"/s/{new_token()}", f"/s/{new_token()}/thanks", f"/unsubscribe/{new_token()}", "/s/abc",
              f"/s/{new_token()}"]
    assert len(misses) == GUESSES
    for path in misses:
        assert guesser.get(path).status_code == 404, path
    assert_busy(guesser.get(f"/s/{new_token()}"))
    assert_busy(guesser.post(f"/unsubscribe/{new_token()}"))
    assert_busy(guesser.get(f"/s/{new_token()}", headers={"Accept-Language": SPANISH}), "es")

    neighbour = client_at(service, new_address())
    assert neighbour.get(f"/s/{new_token()}").status_code == 404
    assert neighbour.get(f"/s/{real}").status_code == 200


def test_a_patient_opening_their_own_link_again_and_again_never_counts(app, api_key, outbox, new_journey, limited):
    _, real = send_link(app, api_key, outbox, new_journey())
    service = limited()
    patient = client_at(service, new_address())
    for _ in range(GUESSES * 3):
        assert patient.get(f"/s/{real}").status_code == 200
    # A stale form (no CSRF token) is shown again, not counted either.
    for _ in range(GUESSES):
        assert patient.post(f"/s/{real}", data={}).status_code == 422
    assert patient.get(f"/unsubscribe/{real}").status_code == 200
    # Only links that open nothing count: the client still has all its misses.
    for _ in range(GUESSES):
        assert patient.get(f"/s/{new_token()}").status_code == 404
    assert_busy(patient.get(f"/s/{new_token()}"))


def test_behind_one_proxy_clients_are_told_apart_by_x_forwarded_for(limited):
    service = limited(FEEDBACK_PROXY_HOPS=1)
    proxy = client_at(service, new_address())
    guesser, neighbour = new_address(), new_address()
    for _ in range(GUESSES):
        assert proxy.get(f"/s/{new_token()}", headers={"X-Forwarded-For": guesser}).status_code == 404
    assert_busy(proxy.get(f"/s/{new_token()}", headers={"X-Forwarded-For": guesser}))
    # The proxy appends the address it saw: one the guesser wrote itself in front changes nothing.
    assert_busy(proxy.get(f"/s/{new_token()}", headers={"X-Forwarded-For": f"{new_address()}, {guesser}"}))
    assert proxy.get(f"/s/{new_token()}", headers={"X-Forwarded-For": neighbour}).status_code == 404


def test_without_a_proxy_setting_a_forged_x_forwarded_for_does_not_escape_the_limit(limited):
    service = limited()
    assert service.config["FEEDBACK_PROXY_HOPS"] == 0
    guesser = client_at(service, new_address())
    for _ in range(GUESSES):
        assert guesser.get(f"/s/{new_token()}", headers={"X-Forwarded-For": new_address()}).status_code == 404
    assert_busy(guesser.get(f"/s/{new_token()}", headers={"X-Forwarded-For": new_address()}))


def test_failed_sign_ins_get_429_after_the_limit_and_successful_ones_do_not_count(app, limited):
    email = staff_user(app, "manager")
    service = limited()
    address = new_address()
    for _ in range(SIGN_INS * 2):
        assert sign_in(client_at(service, address), email).status_code == 302
    guesser = client_at(service, address)
    for _ in range(SIGN_INS):
        assert sign_in(guesser, email, "not the password at all").status_code == 422
    # Now even the right password waits: the client is out of tries for the window.
    assert_busy(sign_in(guesser, email, STAFF_PASSWORD))
    assert sign_in(client_at(service, new_address()), email).status_code == 302
