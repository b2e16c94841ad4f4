"""Staff accounts: the `user create` command, sign-in and sign-out, session cookies, who may open
which page (every /admin and /workspace route, per role), the admin pages for accounts, API keys
and settings, and the audit log that records every change."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from html import unescape
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from feedback_service import create_app
from feedback_service.api.keys import create_api_key
from feedback_service.api.models import ApiKey
from feedback_service.extensions import db
from feedback_service.alerts.services import save_rule
from feedback_service.journeys.models import Journey
from feedback_service.security import hash_secret
from feedback_service.staff.models import AuditEntry, StaffUser
from feedback_service.staff.services import find_user, record
from tests.conftest import STAFF_PASSWORD, csrf_of, event_body, sign_in, staff_user, uid, worst_answer

HOME = {"admin": "/admin/users", "designer": "/workspace/journeys", "manager": "/dashboard"}
REFUSED = "That email and password do not match an active account."
SELF_CHANGE = "you cannot demote or disable your own account"
NEW_PASSWORD = "another long password 42"

# Who may use each staff endpoint; every rule under /admin and /workspace must be listed here, so a
# new page cannot ship without someone deciding who sees it.
ACCESS = {
    "staff.users": {"admin"},
    "staff.user": {"admin"},
    "staff.api_keys": {"admin"},
    "staff.revoke_api_key": {"admin"},
    "staff.settings": {"admin"},
    "staff.audit": {"admin"},
    "workspace.journeys": {"designer"},
    "workspace.journey": {"designer"},
    "workspace.change": {"designer"},
    "workspace.edit_thing": {"designer"},
    "workspace.add_touchpoint": {"designer"},
    "workspace.question_set": {"designer"},
    "workspace.preview": {"designer"},
    "workspace.preview_page": {"designer"},
    "workspace.rule": {"designer"},
    "workspace.library": {"designer"},
    "workspace.library_export": {"designer"},
    "dashboard.journey_map": {"manager", "admin"},
    "dashboard.map_csv": {"manager", "admin"},
    "dashboard.trends_page": {"manager", "admin"},
    "dashboard.trend_chart": {"manager", "admin"},
    "dashboard.comments": {"manager", "admin"},
    "dashboard.funnel_page": {"manager", "admin"},
    "dashboard.alerts": {"manager", "admin"},
    "dashboard.alert": {"manager", "admin"},
    "dashboard.alert_action": {"manager", "admin"},
    "dashboard.alert_rules": {"manager", "admin"},
}


# ---------------------------------------------------------------------------------------------- helpers

def new_email(prefix: str = "s") -> str:
    # Not *.test: the admin form's email check refuses special-use domains.
    return f"{uid(prefix)}@staff.example.org"


def cli(app, *args, input=None):
    return app.test_cli_runner().invoke(args=list(args), input=input)


def account(app, email: str) -> StaffUser | None:
    """The stored account (detached), or None."""
    with app.app_context():
        user = find_user(email)
        if user is not None:
            db.session.expunge(user)
        return user


def accounts_named(app, email: str) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(StaffUser)
                                 .where(func.lower(StaffUser.email) == email.strip().lower()))


def audit_rows(app, **where) -> list[AuditEntry]:
    """Stored audit entries matching column=value pairs, oldest first (detached)."""
    with app.app_context():
        query = select(AuditEntry).order_by(AuditEntry.id)
        for column, value in where.items():
            query = query.where(getattr(AuditEntry, column) == value)
        rows = list(db.session.scalars(query))
        db.session.expunge_all()
        return rows


def token(client, path: str) -> str:
    return csrf_of(client.get(path).text)


def post_form(client, path: str, data: dict, page: str | None = None):
    """POST a form the way a browser does: with the CSRF token of the page it sits on."""
    return client.post(path, data={"csrf_token": token(client, page or path), **data})


def signed_in_client(app, role: str, password: str = STAFF_PASSWORD):
    client = app.test_client()
    client.email = staff_user(app, role)
    assert sign_in(client, client.email, password).status_code == 302
    return client


def assert_sent_to_sign_in(response, next_path: str | None = None):
    assert response.status_code == 302, response.status_code
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login"
    if next_path is not None:
        assert parse_qs(location.query).get("next") == [next_path]


def assert_signed_out(client):
    """A signed-out client is sent to sign-in from a protected page, and /login shows the form."""
    assert_sent_to_sign_in(client.get("/admin/audit"), "/admin/audit")
    assert client.get("/login").status_code == 200


def field_errors(html: str) -> list[str]:
    return [unescape(e) for e in re.findall(r'<p class="error" id="[^"]*">([^<]*)</p>', html)]


def session_cookie(response) -> str:
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    return cookie


def cookie_attributes(cookie: str) -> dict[str, str]:
    attributes = {}
    for part in cookie.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value
    return attributes


class _AuditTable(HTMLParser):
    """The audit page's table body as rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append([])
        elif self._in_body and tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def audit_page(client, **params) -> tuple[list[dict], str]:
    """The audit log as an admin reads it: (rows as dicts, the page's HTML)."""
    response = client.get("/admin/audit", query_string=params)
    assert response.status_code == 200, response.status_code
    parser = _AuditTable()
    parser.feed(response.text)
    rows = []
    for at, actor, action, target, before, after in parser.rows:
        rows.append({"at": at, "actor": actor, "action": action, "target": target,
                     "before": None if before == "—" else json.loads(before),
                     "after": None if after == "—" else json.loads(after)})
    return rows, response.text


def pager_links(html: str) -> dict[str, str]:
    nav = re.search(r'<nav aria-label="Pages" class="pager">(.*?)</nav>', html, re.S).group(1)
    return {label: unescape(href) for href, label in re.findall(r'<a href="([^"]+)">([^<]+)</a>', nav)}


def api_status(client, key: str) -> int:
    return client.post("/api/v1/events", json=event_body(), headers={"Authorization": f"Bearer {key}"}).status_code


# ---------------------------------------------------------------------------------------------- the command line

def test_cli_creates_an_account_with_a_hashed_password_and_a_lower_cased_email(app, client):
    email = f"{uid('Mixed')}@Staff.TEST"
    result = cli(app, "user", "create", email, "--role", "designer", "--password", STAFF_PASSWORD)
    assert result.exit_code == 0, result.output
    assert f"created designer {email.lower()}" in result.output
    assert STAFF_PASSWORD not in result.output

    user = account(app, email)
    assert user.email == email.lower() and user.role == "designer" and user.active
    assert user.password_hash.startswith("scrypt:") and STAFF_PASSWORD not in user.password_hash
    assert check_password_hash(user.password_hash, STAFF_PASSWORD)
    [entry] = audit_rows(app, target=f"user:{email.lower()}")
    assert (entry.actor, entry.action, entry.before) == ("command line", "user.create", None)
    assert entry.after == {"email": email.lower(), "role": "designer", "active": True}
    # The account signs in at /login, whatever the case of the email typed there.
    assert sign_in(client, email.upper()).headers["Location"] == HOME["designer"]


def test_cli_asks_for_the_password_twice_without_echoing_it(app, client):
    email, password = new_email("prompt"), "typed at the prompt 123"
    result = cli(app, "user", "create", email, "--role", "manager", input=f"{password}\n{password}\n")
    assert result.exit_code == 0, result.output
    assert "Password" in result.output and "Repeat for confirmation" in result.output
    assert password not in result.output
    assert account(app, email).role == "manager"
    assert sign_in(client, email, password).headers["Location"] == HOME["manager"]


def test_cli_creates_nothing_when_the_two_typed_passwords_differ(app):
    email = new_email("prompt")
    result = cli(app, "user", "create", email, "--role", "admin", input="first long password\nsecond long password\n")
    assert result.exit_code != 0
    assert "do not match" in result.output
    assert account(app, email) is None


@pytest.mark.parametrize("email, role, password, message", [
    ("{email}", "superuser", STAFF_PASSWORD, "superuser"),
    ("{email}", "admin", "short", "at least 12 characters"),
    ("{email}", "admin", "", "at least 12 characters"),
    ("not-an-email", "admin", STAFF_PASSWORD, "must be an email address"),
    ("{local}@", "admin", STAFF_PASSWORD, "must be an email address"),
    ("{local} x@staff.test", "admin", STAFF_PASSWORD, "must be an email address"),
], ids=["bad-role", "short-password", "empty-password", "no-at-sign", "no-domain", "space"])
def test_cli_refuses_a_bad_account_and_creates_nothing(app, email, role, password, message):
    email = email.format(email=new_email("bad"), local=uid("jane"))
    before = audit_rows(app, action="user.create")
    result = cli(app, "user", "create", email, "--role", role, "--password", password)
    assert result.exit_code != 0
    assert message in result.output
    assert accounts_named(app, email) == 0
    assert len(audit_rows(app, action="user.create")) == len(before)


def test_cli_refuses_an_email_that_exists_in_any_case(app):
    email = staff_user(app, "manager")
    result = cli(app, "user", "create", email.upper(), "--role", "admin", "--password", "x" * 20)
    assert result.exit_code != 0
    assert "an account with this email exists" in result.output
    assert accounts_named(app, email) == 1
    assert account(app, email).role == "manager"


# ---------------------------------------------------------------------------------------------- signing in

@pytest.mark.parametrize("role", ["admin", "designer", "manager"])
def test_sign_in_goes_to_the_roles_home_and_notes_the_time(app, client, role):
    email = staff_user(app, role)
    assert account(app, email).last_login_at is None
    response = sign_in(client, email)
    assert response.status_code == 302 and response.headers["Location"] == HOME[role]
    assert client.get(HOME[role]).status_code == 200
    assert client.get("/login").headers["Location"] == HOME[role]  # signed in already
    last = account(app, email).last_login_at
    assert last is not None and abs(datetime.now(timezone.utc) - last) < timedelta(minutes=1)


@pytest.mark.parametrize("case", ["wrong password", "unknown email", "disabled account"])
def test_every_refused_sign_in_gets_the_same_answer(app, client, case):
    email = staff_user(app, "admin")
    if case == "disabled account":
        admin = signed_in_client(app, "admin")
        assert post_form(admin, f"/admin/users/{account(app, email).id}", {"role": "admin"}).status_code == 302
        assert account(app, email).active is False
    response = sign_in(client, new_email("nobody") if case == "unknown email" else email,
                       "not the password at all" if case == "wrong password" else STAFF_PASSWORD)
    assert response.status_code == 422
    assert field_errors(response.text) == [REFUSED]
    assert_signed_out(client)


@pytest.mark.parametrize("next_path", ["/admin/audit?action=user", "/admin/settings"])
def test_sign_in_returns_to_the_page_asked_for(app, client, next_path):
    email = staff_user(app, "admin")
    sent = client.get(next_path)
    assert_sent_to_sign_in(sent, next_path)
    page = client.get(sent.headers["Location"])
    response = client.post(sent.headers["Location"], data={"csrf_token": csrf_of(page.text), "email": email,
                                                           "password": STAFF_PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == next_path


@pytest.mark.parametrize("target", [
    "//evil.test/x", "///evil.test", "https://evil.test/x", "http:evil.test", "/\\evil.test", "/\\/evil.test",
    "\\\\evil.test", "/\t/evil.test", "javascript:alert(1)",
])
def test_sign_in_never_redirects_off_site(app, client, target):
    email = staff_user(app, "manager")
    page = client.get("/login", query_string={"next": target})
    response = client.post("/login", query_string={"next": target},
                           data={"csrf_token": csrf_of(page.text), "email": email, "password": STAFF_PASSWORD})
    assert response.status_code == 302
    location = response.headers["Location"]
    # Read as a browser would: backslashes count as slashes, tabs and newlines are dropped.
    seen = urljoin("http://survey.test/login", re.sub(r"[\t\n\r]", "", location).replace("\\", "/"))
    assert urlsplit(seen).netloc == "survey.test", location


@pytest.mark.parametrize("csrf", ["missing", "bogus", "another session's"])
def test_sign_in_without_this_sessions_csrf_token_is_refused(app, client, csrf):
    email = staff_user(app, "admin")
    client.get("/login")
    data = {"email": email, "password": STAFF_PASSWORD}
    if csrf == "bogus":
        data["csrf_token"] = "not-a-token"
    elif csrf == "another session's":
        data["csrf_token"] = token(app.test_client(), "/login")
    response = client.post("/login", data=data)
    assert response.status_code in (400, 422)
    assert "Location" not in response.headers
    assert_signed_out(client)
    assert account(app, email).last_login_at is None


def test_a_sign_in_page_posted_without_its_token_is_shown_again_with_a_note(app, client):
    """The page's own answer to an expired or missing token (templates/staff/login.html), not a bare 400."""
    email = staff_user(app, "admin")
    client.get("/login")
    response = client.post("/login", data={"email": email, "password": STAFF_PASSWORD})
    assert response.status_code in (400, 422)
    assert "The page had expired. Please sign in again." in response.text
    assert 'name="csrf_token"' in response.text  # a fresh form to sign in with
    assert_signed_out(client)


def test_session_cookie_is_http_only_same_site_lax_and_ends_the_configured_hours_after_sign_in(app, client):
    email = staff_user(app, "manager")
    response = sign_in(client, email)
    attributes = cookie_attributes(session_cookie(response))
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "lax"
    assert "secure" not in attributes  # FEEDBACK_BASE_URL is http:// in these tests
    # A browser session (so that Flask-Login's strong protection holds), bounded from sign-in.
    assert "expires" not in attributes
    assert client.get("/dashboard").status_code == 200
    hours = app.config["FEEDBACK_STAFF_SESSION_HOURS"]
    with client.session_transaction() as session:
        session["staff_signed_in_at"] -= hours * 3600 - 60  # a minute before the end: still in
    assert client.get("/dashboard").status_code == 200
    with client.session_transaction() as session:
        session["staff_signed_in_at"] -= 120  # a minute past it
    assert_sent_to_sign_in(client.get("/dashboard"), "/dashboard")


def test_a_session_cookie_copied_to_another_browser_is_refused(app, client):
    """auth.py promises it (Flask-Login's "strong" session protection): a stolen cookie is no way in."""
    email = staff_user(app, "admin")
    browser = {"User-Agent": "Mozilla/5.0 (ward 4 workstation)"}
    page = client.get("/login", headers=browser)
    client.post("/login", headers=browser,
                data={"csrf_token": csrf_of(page.text), "email": email, "password": STAFF_PASSWORD})
    assert client.get("/admin/users", headers=browser).status_code == 200

    elsewhere = app.test_client()
    elsewhere.set_cookie("session", client.get_cookie("session").value)
    response = elsewhere.get("/admin/users", headers={"User-Agent": "curl/8.5"},
                             environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert_sent_to_sign_in(response, "/admin/users")


@pytest.fixture(scope="module")
def https_app(app, settings):
    """The service behind an https:// public URL, on the session's database."""
    secure = create_app({"TESTING": True, **settings, "FEEDBACK_BASE_URL": "https://feedback.hospital.test"})
    yield secure
    with secure.app_context():
        db.engine.dispose()


def test_session_cookie_is_secure_when_the_service_is_served_over_https(app, https_app):
    email = staff_user(app, "admin")
    client = https_app.test_client()
    base = "https://feedback.hospital.test"
    page = client.get("/login", base_url=base)
    # Over https Flask-WTF also wants a same-site Referer, as a browser sends.
    response = client.post("/login", base_url=base, headers={"Referer": f"{base}/login"},
                           data={"csrf_token": csrf_of(page.text), "email": email, "password": STAFF_PASSWORD})
    assert response.status_code == 302
    attributes = cookie_attributes(session_cookie(response))
    assert {"secure", "httponly"} <= set(attributes)
    assert attributes["samesite"].lower() == "lax"


# ---------------------------------------------------------------------------------------------- signing out

def test_sign_out_is_a_post_with_the_csrf_token(staff):
    admin = staff("admin")
    assert admin.get("/logout").status_code == 405
    assert admin.post("/logout").status_code == 400  # no token: nothing happens
    assert admin.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    assert admin.get("/admin/users").status_code == 200

    response = post_form(admin, "/logout", {}, page="/admin/users")
    assert_sent_to_sign_in(response)
    assert_signed_out(admin)
    for path in ("/admin/users", "/admin/api-keys", "/dashboard"):
        assert_sent_to_sign_in(admin.get(path), path)


def test_signing_out_ends_copies_of_the_session_too(app, staff):
    """A shared workstation: a cookie copied before sign-out must not outlive it."""
    manager = staff("manager")
    copy = app.test_client()
    copy.set_cookie("session", manager.get_cookie("session").value)
    assert copy.get("/dashboard").status_code == 200
    assert_sent_to_sign_in(post_form(manager, "/logout", {}, page="/dashboard"))
    assert_sent_to_sign_in(copy.get("/dashboard"), "/dashboard")


# ---------------------------------------------------------------------------------------------- who may open what

def staff_rules(app) -> list:
    return [r for r in app.url_map.iter_rules() if r.rule.startswith(("/admin", "/workspace", "/dashboard"))]


def test_every_staff_route_has_an_access_decision(app):
    endpoints = {rule.endpoint for rule in staff_rules(app)}
    assert endpoints - set(ACCESS) == set(), "routes nobody decided the roles of"
    assert set(ACCESS) - endpoints == set(), "decisions for routes that are gone"


@pytest.fixture
def url_values(app, new_journey) -> dict:
    """A value of a real row of this test for every URL parameter a staff route takes."""
    slug = new_journey()
    target = staff_user(app, "manager")
    with app.app_context():
        key, _ = create_api_key(uid("matrix"))
        journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
        stage = sorted(journey.stages, key=lambda s: s.position)[0]
        rule = next(r for r in journey.rules if r.event_type == "booking")
        save_rule(journey, None, low_satisfaction=True, high_friction=True, terms=[], active=True)
        db.session.commit()
        values = {"slug": slug, "event": "booking", "user_id": find_user(target).id, "key_id": key.id,
                  "kind": "stage", "thing_id": stage.id, "verb": "down", "stage_id": stage.id,
                  "qs_id": rule.question_set_id, "stage": stage.slug, "action": "acknowledge"}
    values["alert_id"] = worst_answer(app, slug)
    return values


@pytest.mark.parametrize("role", ["anonymous", "admin", "designer", "manager"])
def test_each_role_reaches_only_its_own_pages(app, url_values, role):
    client = app.test_client()
    if role == "anonymous":
        csrf = token(client, "/login")
    else:
        client.email = staff_user(app, role)
        assert sign_in(client, client.email).status_code == 302
        csrf = token(client, HOME[role])
    adapter = app.url_map.bind("survey.test")
    checked = 0
    for rule in staff_rules(app):
        missing = rule.arguments - set(url_values)
        assert not missing, f"{rule.rule}: no test value for {missing}"
        path = adapter.build(rule.endpoint, {name: url_values[name] for name in rule.arguments})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = (client.get(path) if method == "GET" else client.post(path, data={"csrf_token": csrf}))
            what = f"{role} {method} {path}: {response.status_code}"
            if role == "anonymous":
                assert response.status_code == 302, what
                assert_sent_to_sign_in(response, path)
            elif role in ACCESS[rule.endpoint]:
                assert response.status_code != 403, what
                assert not response.headers.get("Location", "").startswith("/login"), what
                if method == "GET":
                    assert response.status_code == 200, what
            else:
                assert response.status_code == 403, what
            checked += 1
    assert checked >= len(ACCESS)
    # A refused request changed nothing: only an admin's revoke took, only a designer's edits did.
    with app.app_context():
        assert (db.session.get(ApiKey, url_values["key_id"]).revoked_at is not None) == (role == "admin")
        journey_changes = db.session.scalars(select(AuditEntry.actor).where(
            AuditEntry.target.contains(url_values["slug"]))).all()
    assert set(journey_changes) == ({client.email} if role == "designer" else set())


@pytest.mark.parametrize("role, shown, hidden", [
    ("admin", ["/admin/users", "/admin/api-keys", "/admin/settings", "/admin/audit", "/dashboard"],
     ["/workspace/journeys", "/workspace/library"]),
    ("designer", ["/workspace/journeys", "/workspace/library"],
     ["/admin/users", "/admin/api-keys", "/admin/settings", "/admin/audit", "/dashboard"]),
    ("manager", ["/dashboard"],
     ["/admin/users", "/admin/api-keys", "/admin/settings", "/admin/audit", "/workspace/journeys",
      "/workspace/library"]),
])
def test_the_menu_shows_each_role_only_its_own_pages(staff, role, shown, hidden):
    client = staff(role)
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', client.get(HOME[role]).text, re.S).group(1)
    links = set(re.findall(r'href="([^"]+)"', nav))
    assert set(shown) <= links
    assert not links & set(hidden)


def test_the_dashboard_answers_any_period_without_an_error(staff):
    manager = staff("manager")
    for start, end in (("2026-01-01", ""), ("bad", "worse"), ("0001-01-01", "9999-12-31"), ("9999-12-31", ""),
                       ("2026-02-30", "2026-01-01")):
        response = manager.get("/dashboard", query_string={"from": start, "to": end})
        assert response.status_code == 200, (start, end)


# ---------------------------------------------------------------------------------------------- admin: accounts

def test_admin_creates_an_account_that_can_sign_in(app, staff):
    admin = staff("admin")
    email = new_email("New")
    response = post_form(admin, "/admin/users", {"email": email, "role": "designer", "password": STAFF_PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/users"
    listing = admin.get("/admin/users").text
    assert f"Account {email.lower()} created as designer." in listing
    assert f"<td>{email.lower()}</td><td>designer</td><td>active</td>" in listing
    user = account(app, email)
    assert user.role == "designer" and user.password_hash.startswith("scrypt:")
    assert sign_in(app.test_client(), email).headers["Location"] == HOME["designer"]


@pytest.mark.parametrize("form, field_error", [
    ({"email": "not-an-email", "role": "manager", "password": STAFF_PASSWORD}, "Invalid email address."),
    ({"email": "{email}", "role": "manager", "password": "too short"}, "between 12 and 200 characters"),
    ({"email": "{email}", "role": "root", "password": STAFF_PASSWORD}, "Not a valid choice"),
    ({"email": "{existing}", "role": "manager", "password": STAFF_PASSWORD}, "an account with this email exists"),
], ids=["invalid-email", "short-password", "unknown-role", "duplicate-email"])
def test_admin_create_refuses_a_bad_account_with_the_fields_error(app, staff, form, field_error):
    admin = staff("admin")
    existing = new_email("dup")
    assert cli(app, "user", "create", existing, "--role", "designer", "--password", STAFF_PASSWORD).exit_code == 0
    data = {k: v.format(email=new_email("ui"), existing=existing.upper()) for k, v in form.items()}
    audit_before = len(audit_rows(app, actor=admin.email))
    response = post_form(admin, "/admin/users", data)
    assert response.status_code == 422
    errors = field_errors(response.text)
    assert len(errors) == 1 and field_error in errors[0], errors
    assert accounts_named(app, data["email"]) == (1 if "existing" in form["email"] else 0)
    assert len(audit_rows(app, actor=admin.email)) == audit_before


def test_a_role_change_applies_at_once_and_ends_the_accounts_sessions(app, staff):
    admin, designer = staff("admin"), staff("designer")
    assert designer.get("/workspace/journeys").status_code == 200
    user_id = account(app, designer.email).id
    edit = admin.get(f"/admin/users/{user_id}").text
    assert 'value="designer" selected' in edit or 'selected value="designer"' in edit

    response = post_form(admin, f"/admin/users/{user_id}", {"role": "manager", "active": "y"})
    assert response.status_code == 302
    assert account(app, designer.email).role == "manager"
    assert_sent_to_sign_in(designer.get("/workspace/journeys"), "/workspace/journeys")
    assert sign_in(designer, designer.email).headers["Location"] == HOME["manager"]
    assert designer.get("/workspace/journeys").status_code == 403


def test_disabling_an_account_ends_its_session_on_the_next_request(app, staff):
    admin, manager = staff("admin"), staff("manager")
    assert manager.get("/dashboard").status_code == 200
    user_id = account(app, manager.email).id
    response = post_form(admin, f"/admin/users/{user_id}", {"role": "manager"})  # "active" unticked
    assert response.status_code == 302
    assert account(app, manager.email).active is False
    assert "<td>manager</td><td>disabled</td>" in admin.get("/admin/users").text

    assert_sent_to_sign_in(manager.get("/dashboard"), "/dashboard")
    refused = sign_in(manager, manager.email)
    assert refused.status_code == 422 and field_errors(refused.text) == [REFUSED]

    # Enabled again, it signs in with its old password.
    assert post_form(admin, f"/admin/users/{user_id}", {"role": "manager", "active": "y"}).status_code == 302
    assert sign_in(manager, manager.email).headers["Location"] == HOME["manager"]


def test_a_password_reset_ends_old_sessions_and_only_the_new_password_works(app, staff):
    admin, designer = staff("admin"), staff("designer")
    user_id = account(app, designer.email).id
    response = post_form(admin, f"/admin/users/{user_id}", {"role": "designer", "active": "y",
                                                            "password": NEW_PASSWORD})
    assert response.status_code == 302
    assert check_password_hash(account(app, designer.email).password_hash, NEW_PASSWORD)
    assert_sent_to_sign_in(designer.get("/workspace/journeys"), "/workspace/journeys")
    assert sign_in(designer, designer.email, STAFF_PASSWORD).status_code == 422
    assert sign_in(designer, designer.email, NEW_PASSWORD).headers["Location"] == HOME["designer"]


def test_a_short_new_password_is_refused_and_nothing_changes(app, staff):
    admin, designer = staff("admin"), staff("designer")
    user_id = account(app, designer.email).id
    response = post_form(admin, f"/admin/users/{user_id}", {"role": "designer", "active": "y", "password": "short"})
    assert response.status_code == 422
    assert field_errors(response.text) == ["Field must be between 12 and 200 characters long."]
    assert check_password_hash(account(app, designer.email).password_hash, STAFF_PASSWORD)
    assert designer.get("/workspace/journeys").status_code == 200


def test_saving_an_account_unchanged_keeps_its_sessions_and_writes_no_audit_entry(app, staff):
    admin, manager = staff("admin"), staff("manager")
    user_id = account(app, manager.email).id
    assert post_form(admin, f"/admin/users/{user_id}", {"role": "manager", "active": "y"}).status_code == 302
    assert manager.get("/dashboard").status_code == 200
    assert audit_rows(app, actor=admin.email) == []


@pytest.mark.parametrize("form", [{"role": "designer", "active": "y"}, {"role": "admin"}],
                         ids=["demote", "disable"])
def test_an_admin_cannot_demote_or_disable_themself(app, staff, form):
    admin = staff("admin")
    user_id = account(app, admin.email).id
    response = post_form(admin, f"/admin/users/{user_id}", form)
    assert response.status_code == 422
    assert SELF_CHANGE in field_errors(response.text)
    me = account(app, admin.email)
    assert me.role == "admin" and me.active
    assert admin.get("/admin/users").status_code == 200
    assert audit_rows(app, actor=admin.email) == []


def test_editing_an_account_that_does_not_exist_is_404(staff):
    admin = staff("admin")
    assert admin.get("/admin/users/987654321").status_code == 404


# ---------------------------------------------------------------------------------------------- admin: API keys

def test_an_api_key_is_shown_once_then_only_by_prefix_and_stops_working_when_revoked(app, staff, client):
    admin = staff("admin")
    name = uid("hospital")
    created = post_form(admin, "/admin/api-keys", {"name": name, "source": "", "scope_events": "y"})
    assert created.status_code == 200
    key = re.search(r'<code class="key">([^<]+)</code>', created.text).group(1)
    assert key.startswith("fbk_") and len(key) > 30

    with app.app_context():
        row = db.session.scalar(select(ApiKey).where(ApiKey.name == name))
        key_id, prefix = row.id, row.prefix
        assert row.source == name and row.key_hash == hash_secret(key) and row.revoked_at is None
        assert key not in (row.key_hash, row.prefix)
    listing = admin.get("/admin/api-keys").text
    assert key not in listing
    assert f"<code>{prefix}…</code>" in listing and key.startswith(prefix)

    assert api_status(client, key) == 202
    revoked = post_form(admin, f"/admin/api-keys/{key_id}/revoke", {}, page="/admin/api-keys")
    assert revoked.status_code == 302 and revoked.headers["Location"] == "/admin/api-keys"
    assert f"Key {name} revoked." in admin.get("/admin/api-keys").text
    assert api_status(client, key) == 401

    # Revoking twice changes nothing and records nothing more.
    post_form(admin, f"/admin/api-keys/{key_id}/revoke", {}, page="/admin/api-keys")
    assert [e.action for e in audit_rows(app, target=f"api_key:{name}")] == ["api_key.create", "api_key.revoke"]


def test_a_second_api_key_with_the_same_name_is_refused(app, staff):
    admin = staff("admin")
    name = uid("hospital")
    assert post_form(admin, "/admin/api-keys", {"name": name, "scope_events": "y"}).status_code == 200
    again = post_form(admin, "/admin/api-keys", {"name": name, "source": "other", "scope_events": "y"})
    assert again.status_code == 422
    assert field_errors(again.text) == ["a key with this name exists"]
    assert 'class="key"' not in again.text
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.name == name)) == 1
    assert len(audit_rows(app, target=f"api_key:{name}")) == 1


def test_revoking_an_unknown_api_key_is_404(staff):
    admin = staff("admin")
    assert post_form(admin, "/admin/api-keys/987654321/revoke", {}, page="/admin/api-keys").status_code == 404


def test_api_keys_made_and_revoked_from_the_command_line_are_audited_too(app):
    """Like `user create`, a key change made at the command line is in the log, by "command line"."""
    name = uid("cli-key")
    assert cli(app, "api-key", "create", name).exit_code == 0
    assert cli(app, "api-key", "revoke", name).exit_code == 0
    entries = audit_rows(app, target=f"api_key:{name}")
    assert [(e.actor, e.action) for e in entries] == [("command line", "api_key.create"),
                                                       ("command line", "api_key.revoke")]


# ---------------------------------------------------------------------------------------------- admin: settings

def test_the_settings_page_names_secrets_but_never_shows_them(app, staff):
    admin = staff("admin")
    page = admin.get("/admin/settings")
    assert page.status_code == 200
    secret = app.config["FEEDBACK_SECRET_KEY"]
    assert secret and secret not in page.text
    assert app.config["FEEDBACK_DATABASE_URL"] not in page.text
    assert re.search(r"<code>FEEDBACK_SECRET_KEY</code></th><td><em>set \(secret\)</em>", page.text)
    # Ordinary settings are shown as they are.
    assert re.search(r"<code>FEEDBACK_BASE_URL</code></th><td>http://survey.test</td>", page.text)


def test_the_settings_page_never_shows_provider_credentials(provider_app, provider_settings):
    client = signed_in_client(provider_app, "admin")
    page = client.get("/admin/settings")
    assert page.status_code == 200
    for name in ("TWILIO_AUTH_TOKEN", "SENDGRID_API_KEY", "FEEDBACK_SECRET_KEY"):
        assert provider_settings[name] not in page.text, name
        assert re.search(rf"<code>{name}</code></th><td><em>set \(secret\)</em>", page.text), name


# ---------------------------------------------------------------------------------------------- the audit log

def test_the_audit_log_records_each_account_change_with_who_what_before_and_after(app, staff):
    admin = staff("admin")
    email = new_email("audited")
    first_password = "first password of this account"
    post_form(admin, "/admin/users", {"email": email, "role": "designer", "password": first_password})
    user_id = account(app, email).id
    post_form(admin, f"/admin/users/{user_id}", {"role": "manager", "active": "y"})
    post_form(admin, f"/admin/users/{user_id}", {"role": "manager"})
    post_form(admin, f"/admin/users/{user_id}", {"role": "manager", "password": NEW_PASSWORD})

    rows, html = audit_page(admin, actor=admin.email)
    target = f"user:{email}"
    assert [(r["actor"], r["action"], r["target"], r["before"], r["after"]) for r in rows] == [
        (admin.email, "user.update", target, {"email": email, "role": "manager", "active": False},
         {"email": email, "role": "manager", "active": False, "password": "changed"}),
        (admin.email, "user.update", target, {"email": email, "role": "manager", "active": True},
         {"email": email, "role": "manager", "active": False}),
        (admin.email, "user.update", target, {"email": email, "role": "designer", "active": True},
         {"email": email, "role": "manager", "active": True}),
        (admin.email, "user.create", target, None, {"email": email, "role": "designer", "active": True}),
    ]
    for row in rows:
        assert abs(datetime.strptime(row["at"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
                   - datetime.now(timezone.utc)) < timedelta(minutes=2)
    assert "4 changes, newest first." in html
    # No password, clear or hashed, is ever written to the log.
    hashes = account(app, email).password_hash
    for entry in audit_rows(app, target=target):
        stored = json.dumps([entry.before, entry.after])
        assert first_password not in stored and NEW_PASSWORD not in stored and "scrypt" not in stored
        assert entry.actor_id == account(app, admin.email).id
    assert first_password not in html and NEW_PASSWORD not in html and hashes not in html


def test_the_audit_log_records_api_key_changes_without_the_key(app, staff):
    admin = staff("admin")
    name = uid("hospital")
    created = post_form(admin, "/admin/api-keys", {"name": name, "source": "ward-feed", "scope_events": "y"})
    key = re.search(r'<code class="key">([^<]+)</code>', created.text).group(1)
    with app.app_context():
        key_id = db.session.scalar(select(ApiKey.id).where(ApiKey.name == name))
    post_form(admin, f"/admin/api-keys/{key_id}/revoke", {}, page="/admin/api-keys")

    rows, html = audit_page(admin, actor=admin.email, action="api_key")
    assert [(r["actor"], r["action"], r["target"], r["before"], r["after"]) for r in rows] == [
        (admin.email, "api_key.revoke", f"api_key:{name}", {"revoked": False}, {"revoked": True}),
        (admin.email, "api_key.create", f"api_key:{name}", None,
         {"name": name, "source": "ward-feed", "prefix": key[:8], "scopes": "events"}),
    ]
    assert key not in html
    assert all(key not in json.dumps([e.before, e.after]) for e in audit_rows(app, target=f"api_key:{name}"))


def test_a_designers_change_is_in_the_audit_log_for_admins(app, staff):
    designer, admin = staff("designer"), staff("admin")
    slug = uid("audit")
    response = post_form(designer, "/workspace/journeys", {"slug": slug, "name": "Audited journey", "locales": "en"})
    assert response.status_code == 302
    rows, _ = audit_page(admin, actor=designer.email)
    assert [(r["action"], r["target"], r["before"]) for r in rows] == [("journey.create", f"journey:{slug}", None)]
    assert rows[0]["after"]["name"] == "Audited journey"


def test_the_audit_log_filters_by_action_and_by_actor(app, staff):
    first, second = staff("admin"), staff("admin")
    a, b = new_email("fa"), new_email("fb")
    post_form(first, "/admin/users", {"email": a, "role": "manager", "password": STAFF_PASSWORD})
    post_form(first, f"/admin/users/{account(app, a).id}", {"role": "designer", "active": "y"})
    post_form(second, "/admin/users", {"email": b, "role": "manager", "password": STAFF_PASSWORD})

    mine, _ = audit_page(first, actor=first.email.upper())
    assert [(r["action"], r["target"]) for r in mine] == [("user.update", f"user:{a}"), ("user.create", f"user:{a}")]
    updates, _ = audit_page(first, actor=first.email, action="user.update")
    assert [(r["action"], r["target"]) for r in updates] == [("user.update", f"user:{a}")]
    theirs, html = audit_page(first, actor=second.email, action="user")
    assert [(r["actor"], r["action"], r["target"]) for r in theirs] == [(second.email, "user.create", f"user:{b}")]
    assert f'name="actor" value="{second.email}"' in html and 'name="action" value="user"' in html
    nobody, html = audit_page(first, actor=new_email("nobody"))
    assert nobody == [] and "0 changes, newest first." in html
    # Everyone's entries, unfiltered, include both admins' changes.
    everyone, _ = audit_page(first, action="user.create")
    assert {f"user:{a}", f"user:{b}"} <= {r["target"] for r in everyone}


def test_the_audit_action_filter_matches_the_text_typed_not_sql_wildcards(app, staff):
    admin = staff("admin")
    post_form(admin, "/admin/users", {"email": new_email("w"), "role": "manager", "password": STAFF_PASSWORD})
    assert len(audit_page(admin, actor=admin.email, action="user.")[0]) == 1
    # "Action starts with" these: no action does, so nothing may be listed.
    for typed in ("%", "user_", "_ser"):
        rows, html = audit_page(admin, actor=admin.email, action=typed)
        assert rows == [] and "0 changes" in html, typed


def test_the_audit_log_pages_fifty_at_a_time_newest_first(app, staff):
    admin = staff("admin")
    action = f"test.{uid('paging')}"
    with app.app_context():
        me = find_user(admin.email)
        for n in range(55):
            record(me, action, f"thing:{n}", {"n": n}, {"n": n + 1})
        db.session.commit()

    rows, html = audit_page(admin, action=action, actor=admin.email)
    assert "55 changes, newest first." in html
    assert [r["target"] for r in rows] == [f"thing:{n}" for n in range(54, 4, -1)]
    links = pager_links(html)
    assert set(links) == {"Older"}
    older = parse_qs(urlsplit(links["Older"]).query)
    assert older == {"page": ["2"], "action": [action], "actor": [admin.email]}

    rows, html = audit_page(admin, page=2, action=action, actor=admin.email)
    assert [r["target"] for r in rows] == [f"thing:{n}" for n in range(4, -1, -1)]
    assert rows[0]["before"] == {"n": 4} and rows[0]["after"] == {"n": 5}
    assert set(pager_links(html)) == {"Newer"}

    # Past the end, or nonsense: a page, never an error.
    assert audit_page(admin, page=3, action=action, actor=admin.email)[0] == []
    assert len(audit_page(admin, page="zero", action=action, actor=admin.email)[0]) == 50
    assert len(audit_page(admin, page=-4, action=action, actor=admin.email)[0]) == 50


def test_an_audit_page_number_too_large_for_the_database_is_an_empty_page(staff):
    admin = staff("admin")
    rows, html = audit_page(admin, page=10 ** 20, actor=admin.email)
    assert rows == [] and "0 changes" in html
