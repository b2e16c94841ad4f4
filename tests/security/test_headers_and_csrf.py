"""Security headers, the content security policy, cookie flags and CSRF (feedback_service/protection.py).

Every route of the URL map, fetched as anonymous and as each staff role, answers with the headers
protection.py promises; no rendered page and no page template needs inline script or style; the
session cookie is Secure over https and HSTS is sent there; every staff POST refuses a request
without this session's CSRF token and changes nothing; and the routes exempt from CSRF are exactly
the ones that authenticate a POST some other way. (Who may open which page is
tests/integration/test_staff.py's walk; this one looks at what comes back.)"""
from __future__ import annotations

import io
import re
import zipfile
from html import unescape
from html.parser import HTMLParser

import pytest
import yaml
from sqlalchemy import select

from feedback_service import create_app
from feedback_service.alerts.services import save_rule
from feedback_service.api.keys import create_api_key
from feedback_service.config import PROJECT_ROOT
from feedback_service.extensions import db
from feedback_service.journeys.models import TOUCHPOINT_KINDS, Journey
from feedback_service.protection import CSP
from feedback_service.responses.texts import texts_for
from feedback_service.scheduling.models import Invitation
from feedback_service.security import new_token
from feedback_service.staff.models import AuditEntry
from feedback_service.staff.services import find_user
from tests.conftest import (STAFF_PASSWORD, csrf_of, event_body, load_journey_copy, message_for, post_event,
                            run_jobs_of, sign_in, staff_user, token_of, uid, worst_answer, worst_values)
from tests.integration.test_staff import ACCESS, HOME

ROLES = ["anonymous", "admin", "designer", "manager"]
HTTPS = "https://feedback.hospital.test"
# The designer's preview is the one page framed, and only by our own workspace page.
FRAMED = "workspace.preview_page"
EXPIRED = "This page had expired"  # templates/staff/expired.html, the CSRFError page
STAFF_POSTS = ("/admin", "/workspace", "/dashboard", "/logout")
# POST routes that prove who is asking some other way than the session's CSRF token: the sign-in
# form and the survey form check their own token (to show the page again), a survey or unsubscribe
# link is itself the secret (RFC 8058 one-click carries no cookie), and /s/<token>/stop only
# redirects there; a mangled link only gets the page any dead link gets. /api/* (bearer keys) and
# /webhooks/* (provider signatures) are added by prefix.
OWN_CHECKS = {"/login", "/s/<token>", "/s/<token>/stop", "/unsubscribe/<token>", "/s/<path:mangled>",
              "/unsubscribe/<path:mangled>"}
YEAR = 365 * 24 * 3600


# ---------------------------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def values(app, api_key, outbox, tmp_path_factory) -> dict:
    """A real row's value for every URL parameter of the URL map, and two patient links of a
    journey of this module's own: one sent (its survey opens) and one answered."""
    slug = load_journey_copy(app, tmp_path_factory.mktemp("walk"), "walk")
    target = staff_user(app, "manager")
    with app.app_context():
        key, _ = create_api_key(uid("walk"))
        journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
        stage = sorted(journey.stages, key=lambda s: s.position)[0]
        rule = next(r for r in journey.rules if r.event_type == "booking")
        save_rule(journey, None, low_satisfaction=True, high_friction=True, terms=[], active=True)
        db.session.commit()
        found = {"slug": slug, "event": "booking", "user_id": find_user(target).id, "key_id": key.id,
                 "kind": "stage", "thing_id": stage.id, "verb": "down", "stage_id": stage.id,
                 "qs_id": rule.question_set_id, "stage": stage.slug, "action": "acknowledge",
                 "filename": "survey.css", "rule_qs": rule.question_set.key,
                 "rule_touchpoint": rule.default_touchpoint.slug}
    found["alert_id"] = worst_answer(app, slug)
    auth = {"Authorization": f"Bearer {api_key}"}
    client = app.test_client()
    sent = post_event(client, auth, event_body(journey=slug))["id"]
    answered = post_event(client, auth, event_body(journey=slug))["id"]
    run_jobs_of(app)
    found["token"] = token_of(message_for(outbox, sent))
    found["answered"] = token_of(message_for(outbox, answered))
    found["mangled"] = found["token"] + "/"  # a link a mail client broke: the kind page too
    with app.app_context():
        questions = db.session.get(Invitation, answered).question_set_version.questions
    page = client.get(f"/s/{found['answered']}")
    done = client.post(f"/s/{found['answered']}", data={"csrf_token": csrf_of(page.text), **worst_values(questions)})
    assert done.status_code == 302, done.status_code
    return found


def client_as(app, role: str):
    """A test client signed in with a new account of `role` (.email set), or anonymous."""
    client = app.test_client()
    client.email = None
    if role != "anonymous":
        client.email = staff_user(app, role)
        assert sign_in(client, client.email).status_code == 302
    return client


def walk(app, values: dict):
    """(endpoint, method, path) for every route and method of the URL map, built with real rows."""
    adapter = app.url_map.bind("survey.test")
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        missing = rule.arguments - set(values)
        assert not missing, f"{rule.rule}: no test value for {missing}"
        path = adapter.build(rule.endpoint, {name: values[name] for name in rule.arguments})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, path


def csp_directives(header: str) -> dict[str, str]:
    directives = {}
    for part in header.split(";"):
        name, _, sources = part.strip().partition(" ")
        if name:
            directives[name] = sources.strip()
    return directives


class InlineCode(HTMLParser):
    """What a page carries that a CSP without 'unsafe-inline' would block, or that is not ours."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, value in attributes.items():
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=...> event handler")
            elif name == "style":
                self.found.append(f"<{tag} style=...> attribute")
            elif name in ("href", "src", "action", "formaction") and (value or "").strip().lower().startswith(
                    "javascript:"):
                self.found.append(f"<{tag} {name}=javascript:...>")
        if tag == "style":
            self.found.append("<style> element")
        if tag == "script":
            self._in_script = True
            if not attributes.get("src"):
                self.found.append("inline <script>")
        resource = attributes.get("src") if tag in ("script", "img", "iframe") else (
            attributes.get("href") if tag == "link" else None)
        if resource is not None and (not resource.startswith("/") or resource.startswith("//")):
            self.found.append(f"<{tag}> from elsewhere: {resource}")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append("inline <script> content")


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    parser.close()
    return parser.found


def header_problems(response, endpoint: str | None, what: str) -> list[str]:
    """Every way a response misses protection.py's headers (empty: none)."""
    headers, problems = response.headers, []
    framed = endpoint == FRAMED
    expected = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "SAMEORIGIN" if framed else "DENY"}
    for name, value in expected.items():
        if headers.get(name) != value:
            problems.append(f"{what}: {name} is {headers.get(name)!r}, not {value!r}")
    policy = headers.get("Content-Security-Policy", "")
    wanted = {**CSP, "frame-ancestors": "'self'"} if framed else CSP
    if csp_directives(policy) != wanted:
        problems.append(f"{what}: Content-Security-Policy is {policy!r}")
    if "unsafe-inline" in policy or "unsafe-eval" in policy or "nonce-" in policy:
        problems.append(f"{what}: the policy lets inline code run: {policy!r}")
    cache = {d.strip() for d in headers.get("Cache-Control", "").split(",")}
    if endpoint == "dashboard.trend_chart" and response.mimetype == "image/svg+xml":
        # The one deliberate exception (dashboard/routes.py): a chart of suppressed aggregates,
        # kept five minutes by the browser alone, never by a shared cache.
        ok = "private" in cache and "max-age=300" in cache
    elif endpoint == "workspace.library_export" and response.status_code == 200:
        ok = True  # a known gap, shown by test_the_library_export_is_not_kept_by_the_browser_cache
    else:
        ok = (endpoint == "static") != ("no-store" in cache)
    if not ok:
        problems.append(f"{what}: Cache-Control is {headers.get('Cache-Control')!r}")
    if "Strict-Transport-Security" in headers:
        problems.append(f"{what}: HSTS over plain http")
    if response.mimetype == "text/html":
        problems += [f"{what}: {found}" for found in inline_code(response.get_data(as_text=True))]
    return problems


def session_cookie(response) -> str:
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    return cookie


def cookie_attributes(cookie: str) -> dict[str, str]:
    attributes = {}
    for part in cookie.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value
    return attributes


def hsts_max_age(response) -> int:
    value = response.headers.get("Strict-Transport-Security")
    assert value, "no Strict-Transport-Security header"
    return int(re.search(r"max-age=(\d+)", value).group(1))


def audit_actions(app, actor: str) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEntry.action).where(AuditEntry.actor == actor)
                                       .order_by(AuditEntry.id)))


# ---------------------------------------------------------------------------------------------- headers

@pytest.mark.parametrize("role", ROLES)
def test_every_route_answers_with_the_security_headers(app, values, role):
    """GET and POST (no token, no key, no signature) on every route: pages, redirects, refusals,
    JSON, CSV, SVG, the zip export and static files alike; then the pages the walk cannot reach
    by its values: the thank-you page, a used link, an unknown page and a wrong method."""
    client = client_as(app, role)
    extra = [("survey.thanks", "GET", f"/s/{values['answered']}/thanks"),
             ("survey.survey", "GET", f"/s/{values['answered']}"),
             (None, "GET", f"/{uid('no-such-page')}"),
             ("staff.login", "DELETE", "/login")]
    problems, pages, statuses = [], 0, set()
    for endpoint, method, path in [*walk(app, values), *extra]:
        with client.open(path, method=method) as response:  # closed: static files are streamed
            problems += header_problems(response, endpoint, f"{role} {method} {path} ({response.status_code})")
            pages += response.mimetype == "text/html"
            statuses.add(response.status_code)
    assert problems == []
    assert pages > 40
    # Signed in or not, the walk met the error pages too, not only the happy ones.
    assert {200, 302, 400, 404, 405} <= statuses


def test_the_library_export_is_not_kept_by_the_browser_cache(app):
    designer = client_as(app, "designer")
    with designer.get("/workspace/library/export.zip") as response:
        assert response.status_code == 200 and response.mimetype == "application/zip"
        assert "no-store" in response.headers.get("Cache-Control", "")


def test_the_designers_preview_is_framed_by_our_own_preview_page_only(app, values):
    designer = client_as(app, "designer")
    outer = designer.get(f"/workspace/question-sets/{values['qs_id']}/preview")
    assert outer.status_code == 200
    frame = re.search(r'<iframe [^>]*src="([^"]+)"', outer.text).group(1)
    inner = designer.get(frame.replace("&amp;", "&"))
    assert inner.status_code == 200 and 'name="csrf_token"' in inner.text
    assert inner.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert csp_directives(inner.headers["Content-Security-Policy"])["frame-ancestors"] == "'self'"
    # The page that frames it may itself be framed by nobody.
    assert outer.headers["X-Frame-Options"] == "DENY"
    assert csp_directives(outer.headers["Content-Security-Policy"])["frame-ancestors"] == "'none'"


def test_no_page_template_carries_inline_script_style_or_event_handlers():
    """The templates as text, Jinja stripped: what the walk above renders, and what it may not
    reach. Email bodies (templates/messages) are read by mail clients, not under our CSP."""
    root = PROJECT_ROOT / "templates"
    pages = [p for p in sorted(root.rglob("*.html")) if p.relative_to(root).parts[0] != "messages"]
    assert len(pages) >= 25
    found = []
    for page in pages:
        text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", " ", page.read_text(), flags=re.S)
        for tag in re.findall(r"<[a-zA-Z][^<>]*>", text):
            name = tag[1:].split()[0].rstrip(">").lower()
            if re.search(r"\son[a-z]+\s*=", tag, re.I):
                found.append(f"{page.relative_to(root)}: event handler in {tag}")
            if re.search(r"\sstyle\s*=", tag, re.I):
                found.append(f"{page.relative_to(root)}: style attribute in {tag}")
            if name == "style":
                found.append(f"{page.relative_to(root)}: <style> element")
            if name == "script" and "src=" not in tag:
                found.append(f"{page.relative_to(root)}: inline <script>")
            if "javascript:" in tag.lower():
                found.append(f"{page.relative_to(root)}: javascript: URL in {tag}")
        for body in re.findall(r"<script\b[^>]*>(.*?)</script>", text, re.S | re.I):
            if body.strip():
                found.append(f"{page.relative_to(root)}: inline <script> content")
    assert found == []


@pytest.mark.parametrize("html, problem", [
    ('<p onclick="x()">', "<p onclick=...> event handler"),
    ('<div style="color: red">', "<div style=...> attribute"),
    ("<style>p { color: red }</style>", "<style> element"),
    ("<script>alert(1)</script>", "inline <script>"),
    ('<a href="javascript:alert(1)">', "<a href=javascript:...>"),
    ('<script src="https://cdn.example/x.js"></script>', "<script> from elsewhere: https://cdn.example/x.js"),
])
def test_the_page_check_finds_what_it_looks_for(html, problem):
    """The checker of rendered pages above, on pages that break the policy."""
    assert problem in inline_code(html)
    assert inline_code('<link rel="stylesheet" href="/static/staff.css"><script src="/static/x.js"></script>') == []


# ---------------------------------------------------------------------------------------------- cookies and https

def test_over_https_the_session_cookie_is_secure_http_only_same_site_lax_and_hsts_is_sent(app, settings):
    email = staff_user(app, "admin")
    secure = create_app({"TESTING": True, **settings, "FEEDBACK_BASE_URL": HTTPS})
    try:
        client = secure.test_client()
        page = client.get("/login", base_url=HTTPS)
        assert hsts_max_age(page) >= YEAR
        # Over https Flask-WTF also wants a same-site Referer, as a browser sends.
        response = client.post("/login", base_url=HTTPS, headers={"Referer": f"{HTTPS}/login"},
                               data={"csrf_token": csrf_of(page.text), "email": email, "password": STAFF_PASSWORD})
        assert response.status_code == 302
        attributes = cookie_attributes(session_cookie(response))
        assert {"secure", "httponly"} <= set(attributes)
        assert attributes["samesite"] == "Lax"
        assert hsts_max_age(response) >= YEAR
        home = client.get("/admin/users", base_url=HTTPS)
        assert home.status_code == 200 and hsts_max_age(home) >= YEAR
        assert hsts_max_age(client.get(f"/s/{new_token()}", base_url=HTTPS)) >= YEAR
        # HSTS means nothing over plain http, and is not sent there (RFC 6797 section 7.2).
        assert "Strict-Transport-Security" not in client.get("/healthz").headers

        # A form posted from another site is refused even with a good token: over https the
        # Referer must be our own.
        token = csrf_of(home.text)
        forged = client.post("/logout", base_url=HTTPS, headers={"Referer": "https://elsewhere.test/page"},
                             data={"csrf_token": token})
        assert forged.status_code == 400 and EXPIRED in forged.text
        assert client.get("/admin/users", base_url=HTTPS).status_code == 200
    finally:
        with secure.app_context():
            db.engine.dispose()


def test_over_plain_http_the_demo_session_cookie_is_not_secure_so_a_laptop_sign_in_works(app, settings):
    """FEEDBACK_BASE_URL http:// (the demo, `run` on a laptop): a Secure cookie would never come
    back over http, so it is HttpOnly and SameSite=Lax but not Secure, and there is no HSTS."""
    email = staff_user(app, "manager")
    plain = create_app({"TESTING": True, **settings, "FEEDBACK_BASE_URL": "http://127.0.0.1:5000"})
    try:
        client = plain.test_client()
        response = sign_in(client, email)
        assert response.status_code == 302
        attributes = cookie_attributes(session_cookie(response))
        assert "secure" not in attributes and "httponly" in attributes
        assert attributes["samesite"] == "Lax"
        assert "Strict-Transport-Security" not in response.headers
        assert client.get("/dashboard").status_code == 200
    finally:
        with plain.app_context():
            db.engine.dispose()


def test_an_https_service_keeps_hsts_and_secure_cookies_when_another_app_is_made_in_the_process(settings):
    secure = create_app({"TESTING": True, **settings, "FEEDBACK_BASE_URL": HTTPS})
    plain = create_app({"TESTING": True, **settings, "FEEDBACK_BASE_URL": "http://127.0.0.1:5000"})
    try:
        response = secure.test_client().get("/login", base_url=HTTPS)
        assert "Strict-Transport-Security" in response.headers
        assert "secure" in cookie_attributes(session_cookie(response))
    finally:
        for made in (secure, plain):
            with made.app_context():
                db.engine.dispose()


# ---------------------------------------------------------------------------------------------- CSRF

def refused_for_csrf(response) -> bool:
    return response.status_code == 400 and EXPIRED in response.get_data(as_text=True)


def post_rules(app) -> list:
    return [r for r in app.url_map.iter_rules() if "POST" in r.methods]


def test_only_routes_that_authenticate_otherwise_skip_the_csrf_check(app, values):
    """An anonymous POST without a token to every POST route of the URL map: the CSRF check
    refuses it (before any sign-in check) unless the route is exempt. A new exempt route, or a
    staff route that lost its check, fails here."""
    adapter = app.url_map.bind("survey.test")
    unknown = {**values, "token": new_token()}  # no link of a patient: nobody is opted out here
    client = app.test_client()
    exempt, protected = set(), set()
    for rule in post_rules(app):
        response = client.post(adapter.build(rule.endpoint, {n: unknown[n] for n in rule.arguments}))
        (protected if refused_for_csrf(response) else exempt).add(rule.rule)
    rules = {r.rule for r in post_rules(app)}
    assert exempt == {r for r in rules if r.startswith(("/api/", "/webhooks/"))} | OWN_CHECKS
    assert protected == {r for r in rules if r.startswith(STAFF_POSTS)}
    assert len(protected) >= 15


def test_a_survey_answer_without_its_csrf_token_is_shown_again_and_not_recorded(app, api_key, outbox, new_journey):
    """/s/<token> is exempt from the global check because it checks its own token: a stale page
    gets the form back with a note, and nothing is recorded until it is posted with one."""
    client = app.test_client()
    inv_id = post_event(client, {"Authorization": f"Bearer {api_key}"}, event_body(journey=new_journey()))["id"]
    run_jobs_of(app)
    token = token_of(message_for(outbox, inv_id))
    with app.app_context():
        answers = worst_values(db.session.get(Invitation, inv_id).question_set_version.questions)
    stale = client.post(f"/s/{token}", data=answers)
    assert stale.status_code == 422
    assert texts_for("en")["session_expired"] in unescape(stale.text)
    assert 'name="csrf_token"' in stale.text
    with app.app_context():
        assert db.session.get(Invitation, inv_id).status == "sent"
    done = client.post(f"/s/{token}", data={"csrf_token": csrf_of(stale.text), **answers})
    assert done.status_code == 302
    with app.app_context():
        assert db.session.get(Invitation, inv_id).status == "answered"


def library_zip(slug: str) -> bytes:
    """The general-care journey as a library archive, under a new slug."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for f in sorted((PROJECT_ROOT / "surveys" / "general-care").glob("*.yaml")):
            doc = yaml.safe_load(f.read_text())
            if f.name == "journey.yaml":
                doc["slug"], doc["default"] = slug, False
            archive.writestr(f"{slug}/{f.name}", yaml.safe_dump(doc, allow_unicode=True))
    return out.getvalue()


def staff_form(endpoint: str, v: dict) -> tuple[dict, dict, str | None]:
    """For a staff POST endpoint: (URL values and query, a form a browser would send, the audit
    action it makes once accepted; None where nothing is audited)."""
    return {
        "staff.users": ({}, {"email": f"{uid('forged')}@staff.example.org", "role": "manager",
                             "password": STAFF_PASSWORD}, "user.create"),
        "staff.user": ({"user_id": v["user_id"]}, {"role": "designer", "active": "y"}, "user.update"),
        "staff.api_keys": ({}, {"name": uid("forged"), "scope_events": "y", "scope_scores": "y"}, "api_key.create"),
        "staff.revoke_api_key": ({"key_id": v["key_id"]}, {}, "api_key.revoke"),
        "staff.logout": ({}, {}, None),
        "workspace.journeys": ({}, {"slug": uid("forged"), "name": "Forged", "locales": "en"}, "journey.create"),
        "workspace.journey": ({"slug": v["slug"]}, {"form": "stage", "stage-slug": uid("forged"),
                                                    "stage-name": "Forged"}, "stage.create"),
        "workspace.change": ({"kind": "stage", "thing_id": v["thing_id"], "verb": "down"}, {}, "stage.move"),
        "workspace.edit_thing": ({"kind": "stage", "thing_id": v["thing_id"]}, {"name": "Forged"}, "stage.rename"),
        "workspace.add_touchpoint": ({"stage_id": v["stage_id"]}, {
            "tp-slug": uid("forged"), "tp-name": "Forged", "tp-kind": TOUCHPOINT_KINDS[0]}, "touchpoint.create"),
        "workspace.question_set": ({"qs_id": v["qs_id"]}, {"action": "save", "title-en": "Forged"},
                                   "question_set.edit"),
        "workspace.preview_page": ({"qs_id": v["qs_id"]}, {}, None),  # checked, never stored
        "workspace.rule": ({"slug": v["slug"], "event": "booking"}, {
            "form": "rule", "rule-question_set": v["rule_qs"], "rule-touchpoint": v["rule_touchpoint"],
            "rule-delay_hours": "5", "rule-first_channel": "email", "rule-second_channel": "",
            "rule-hcahps": "skip", "rule-active": "y"}, "rule.save"),
        "workspace.library": ({}, {"archive": (io.BytesIO(library_zip(uid("forged"))), "library.zip")},
                              "library.import"),
        "dashboard.alert_action": ({"alert_id": v["alert_id"], "action": "acknowledge"}, {}, "alert.acknowledge"),
        "dashboard.alert_rules": ({"journey": v["slug"]}, {"scope": "journey", "journey-active": "y",
                                                           "journey-low_satisfaction": "y",
                                                           "journey-terms": "forged"}, "alert-rule.save"),
    }[endpoint]


STAFF_FORMS = ["dashboard.alert_action", "dashboard.alert_rules", "staff.api_keys", "staff.logout",
               "staff.revoke_api_key", "staff.user", "staff.users", "workspace.add_touchpoint", "workspace.change",
               "workspace.edit_thing", "workspace.journey", "workspace.journeys", "workspace.library",
               "workspace.preview_page", "workspace.question_set", "workspace.rule"]


def test_every_staff_post_route_is_tried_below(app):
    endpoints = {r.endpoint for r in post_rules(app) if r.rule.startswith(STAFF_POSTS)}
    assert endpoints == set(STAFF_FORMS)


@pytest.mark.parametrize("endpoint", STAFF_FORMS)
def test_a_staff_post_without_this_sessions_csrf_token_is_refused_and_changes_nothing(app, values, endpoint):
    """Signed in as a role that may use the form, posting what a browser would: without a token,
    with a made-up one and with another session's, the expired page (400) and no audit entry;
    the same post with this session's token then goes through."""
    role = "manager" if endpoint == "staff.logout" else sorted(ACCESS[endpoint])[0]
    client = client_as(app, role)
    params, _, action = staff_form(endpoint, values)
    path = app.url_map.bind("survey.test").build(endpoint, params)
    others = csrf_of(app.test_client().get("/login").text)
    for token in (None, "forged-" + new_token(), others):
        _, data, _ = staff_form(endpoint, values)  # fresh: a file in the form is read once
        response = client.post(path, data=data if token is None else {**data, "csrf_token": token})
        assert refused_for_csrf(response), (token, response.status_code)
    assert audit_actions(app, client.email) == []
    assert client.get(HOME[role]).status_code == 200  # still signed in: not even sign-out happened

    _, data, _ = staff_form(endpoint, values)
    accepted = client.post(path, data={**data, "csrf_token": csrf_of(client.get(HOME[role]).text)})
    assert not refused_for_csrf(accepted) and accepted.status_code < 500
    assert audit_actions(app, client.email) == ([action] if action else [])
    if endpoint == "staff.logout":
        assert accepted.status_code == 302 and client.get(HOME[role]).status_code == 302
    elif endpoint == "workspace.preview_page":
        assert accepted.status_code in (200, 422) and 'name="csrf_token"' in accepted.text
