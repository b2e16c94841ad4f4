"""The designers' workspace through its forms, as a browser posts them (CSRF token and all):
journeys, stages and touchpoints; the question-set editor, its drafts, versions, guidance and
preview; trigger rules and their trial; who may use which page. Every refusal is checked for
what it shows and for what it leaves in the database: nothing."""
from __future__ import annotations

import io
import re
import zipfile
from datetime import date, datetime, time, timedelta, timezone
from html import unescape
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from feedback_service.events.models import Event
from feedback_service.extensions import db
from feedback_service.journeys import editing
from feedback_service.journeys.models import Journey, QuestionSet, QuestionSetVersion, Stage, Touchpoint
from feedback_service.patients.models import Patient
from feedback_service.responses.models import Answer, Response
from feedback_service.scheduling.models import Invitation
from feedback_service.staff.models import AuditEntry
from feedback_service.insights.questions import question_scores
from tests.conftest import csrf_of, event_body, message_for, new_phone, post_event, token_of, uid
from tests.hospital import SIU_S12, ack_code, fresh_hl7

NOW = lambda: datetime.now(timezone.utc)  # noqa: E731


# ------------------------------------------------------------------------------------------------------------ helpers

class _Forms(HTMLParser):
    """Every <form> of a page with the fields a browser would submit from it as rendered."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._form = self._textarea = self._select = self._first = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._form = {"attrs": a, "fields": {}}
            self.forms.append(self._form)
            return
        if self._form is None:
            return
        fields = self._form["fields"]
        if tag == "input" and a.get("name") and a.get("type", "text") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio"):
                if "checked" in a:
                    fields[a["name"]] = a.get("value") or "on"
            else:
                fields[a["name"]] = a.get("value") or ""
        elif tag == "textarea":
            self._textarea = a["name"]
            fields[self._textarea] = ""
        elif tag == "select":
            self._select, self._first = a["name"], None
        elif tag == "option" and self._select:
            if self._first is None:
                self._first = a.get("value", "")
            if "selected" in a:
                fields[self._select] = a.get("value", "")

    def handle_data(self, data):
        if self._textarea:
            self._form["fields"][self._textarea] += data

    def handle_endtag(self, tag):
        if tag == "textarea" and self._textarea:
            value = self._form["fields"][self._textarea]
            # A browser drops one newline right after <textarea> (WTForms writes one).
            self._form["fields"][self._textarea] = value[2:] if value.startswith("\r\n") else (
                value[1:] if value.startswith("\n") else value)
            self._textarea = None
        elif tag == "select" and self._select:
            self._form["fields"].setdefault(self._select, self._first or "")
            self._select = None
        elif tag == "form":
            self._form = None


def forms_of(html: str) -> list[dict]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def form_fields(html: str, *, cls: str | None = None, hidden_form: str | None = None,
                having: str = "name") -> dict:
    """The fields of one form on the page: by its class, by its hidden `form` input, or else the
    first form with a field of this name."""
    for f in forms_of(html):
        if cls is not None:
            if cls in (f["attrs"].get("class") or "").split():
                return dict(f["fields"])
        elif hidden_form is not None:
            if f["fields"].get("form") == hidden_form:
                return dict(f["fields"])
        elif having in f["fields"]:
            return dict(f["fields"])
    raise AssertionError(f"no such form on the page ({cls or hidden_form or having})")


def field_error(html: str, field_id: str) -> str | None:
    """The errors shown under a form field (the staff macro's <p class="error" id="<id>-error">)."""
    found = re.findall(rf'<p class="error" id="{re.escape(field_id)}-error">([^<]*)</p>', html)
    return " | ".join(unescape(m) for m in found) if found else None


def token(client) -> str:
    """The session's CSRF token, from a page every signed-in member of staff can open."""
    page = client.get("/workspace/journeys")
    if page.status_code != 200:
        page = client.get("/dashboard")
    if page.status_code != 200:
        page = client.get("/login")
    return csrf_of(page.text)


def submit(client, url: str, data: dict, **kw):
    return client.post(url, data={"csrf_token": token(client), **data}, **kw)


def last_audit_id(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.max(AuditEntry.id))) or 0


def audits_since(app, since: int) -> list[tuple]:
    with app.app_context():
        return [(a.actor, a.action, a.target, a.before, a.after)
                for a in db.session.scalars(select(AuditEntry).where(AuditEntry.id > since).order_by(AuditEntry.id))]


def shape(app, slug: str) -> dict | None:
    """A journey as stored: name, locales, retired, and its stages and touchpoints with positions."""
    with app.app_context():
        j = db.session.scalar(select(Journey).where(Journey.slug == slug))
        if j is None:
            return None
        return {"name": j.name, "locales": list(j.locales), "hcahps": j.hcahps_sampled,
                "retired": j.retired_at is not None,
                "stages": sorted((s.position, s.slug, s.name, s.retired_at is not None,
                                  tuple(sorted((t.position, t.slug, t.name, t.kind, t.retired_at is not None)
                                               for t in s.touchpoints))) for s in j.stages)}


def order(app, slug: str) -> list[str]:
    return [s[1] for s in shape(app, slug)["stages"]]


def tp_order(app, slug: str, stage: str) -> list[str]:
    return [t[1] for s in shape(app, slug)["stages"] if s[1] == stage for t in s[4]]


def ids(app, slug: str, stage: str | None = None, touchpoint: str | None = None) -> int:
    """The id of a journey, one of its stages, or a touchpoint of that stage."""
    with app.app_context():
        j = db.session.scalar(select(Journey).where(Journey.slug == slug))
        if stage is None:
            return j.id
        s = j.stage(stage)
        return s.id if touchpoint is None else s.touchpoint(touchpoint).id


def retired_at(app, model, thing_id):
    with app.app_context():
        return db.session.get(model, thing_id).retired_at


def qs_id(app, slug: str, key: str) -> int:
    with app.app_context():
        return db.session.scalar(select(QuestionSet.id).join(Stage).join(Journey)
                                 .where(Journey.slug == slug, QuestionSet.key == key))


def qs_state(app, set_id: int) -> dict:
    with app.app_context():
        qs = db.session.get(QuestionSet, set_id)
        return {"draft": qs.draft, "versions": [(v.version, v.content) for v in qs.versions]}


def rule_of(app, slug: str, event: str) -> dict | None:
    with app.app_context():
        j = db.session.scalar(select(Journey).where(Journey.slug == slug))
        rule = next((r for r in j.rules if r.event_type == event), None)
        return editing.describe_rule(rule) if rule else None


def counts(app) -> dict:
    with app.app_context():
        return {m.__name__: db.session.scalar(select(func.count()).select_from(m))
                for m in (Patient, Event, Invitation, Response, Answer, QuestionSetVersion)}


def post_events(client, auth, body) -> dict:
    r = client.post("/api/v1/events", json=body, headers=auth)
    assert r.status_code == 202, r.get_json()
    return r.get_json()


def answer(client, outbox, inv_id: int, answers: dict) -> None:
    """Open the invitation's link as the patient and submit these answers."""
    tok = token_of(message_for(outbox, inv_id))
    page = client.get(f"/s/{tok}")
    assert page.status_code == 200, page.text
    r = client.post(f"/s/{tok}", data={"csrf_token": csrf_of(page.text), **answers})
    assert r.status_code == 302, r.text


def editor(client, set_id: int) -> tuple[str, dict]:
    page = client.get(f"/workspace/question-sets/{set_id}")
    assert page.status_code == 200, page.text
    return page.text, form_fields(page.text, cls="editor")


def press(client, set_id: int, fields: dict, action: str, **extra):
    """Press one of the editor's buttons with these field values."""
    return client.post(f"/workspace/question-sets/{set_id}", data={**fields, "action": action, **extra})


def new_set(app, client, slug: str, stage: str, key: str | None = None) -> int:
    key = key or uid("qs")
    r = submit(client, f"/workspace/journeys/{slug}",
               {"form": "question-set", "qs-stage": str(ids(app, slug, stage)), "qs-key": key})
    assert r.status_code == 302, r.text
    return qs_id(app, slug, key)


@pytest.fixture
def designer(staff):
    return staff("designer")


# --------------------------------------------------------------------------------------------- who may use which page

DESIGNER_PAGES = [
    ("GET", "/workspace/journeys"),
    ("POST", "/workspace/journeys"),
    ("GET", "/workspace/journeys/{slug}"),
    ("POST", "/workspace/journeys/{slug}"),
    ("POST", "/workspace/journey/{journey}/retire"),
    ("POST", "/workspace/stage/{stage}/up"),
    ("POST", "/workspace/touchpoint/{tp}/retire"),
    ("GET", "/workspace/stage/{stage}/edit"),
    ("POST", "/workspace/touchpoint/{tp}/edit"),
    ("POST", "/workspace/stage/{stage}/touchpoints"),
    ("GET", "/workspace/question-sets/{qs}"),
    ("POST", "/workspace/question-sets/{qs}"),
    ("GET", "/workspace/question-sets/{qs}/preview?locale=es"),
    ("GET", "/workspace/question-sets/{qs}/preview/page"),
    ("POST", "/workspace/question-sets/{qs}/preview/page"),
    ("GET", "/workspace/journeys/{slug}/rules/booking"),
    ("POST", "/workspace/journeys/{slug}/rules/booking"),
    ("GET", "/workspace/library"),
    ("POST", "/workspace/library"),
    ("GET", "/workspace/library/export.zip"),
]


def _url(app, slug, template: str) -> str:
    return template.format(slug=slug, journey=ids(app, slug), stage=ids(app, slug, "visit"),
                           tp=ids(app, slug, "visit", "reception"), qs=qs_id(app, slug, "booking"))


# What each POST would change if it were let through.
_HARMFUL = {"form": "settings", "settings-name": "Taken over", "settings-locales": "en es", "name": "Taken over",
            "kind": "digital", "tp-slug": "intruder", "tp-name": "Intruder", "tp-kind": "digital", "action": "discard",
            "rule-question_set": "booking", "rule-touchpoint": "phone-booking", "rule-delay_hours": "5",
            "rule-first_channel": "email", "rule-hcahps": "skip", "slug": "intruder", "locales": "en"}


@pytest.mark.parametrize("role", ["manager", "admin"])
@pytest.mark.parametrize("method, template", DESIGNER_PAGES, ids=[f"{m} {u}" for m, u in DESIGNER_PAGES])
def test_managers_and_admins_get_403_on_designer_pages_and_change_nothing(app, staff, new_journey, role, method,
                                                                          template):
    slug = new_journey()
    client = staff(role)
    url = _url(app, slug, template)
    before, rule, audit = shape(app, slug), rule_of(app, slug, "booking"), last_audit_id(app)
    if method == "GET":
        r = client.get(url)
    else:
        r = client.post(url, data={"csrf_token": token(client), **_HARMFUL})
    assert r.status_code == 403
    assert shape(app, slug) == before and rule_of(app, slug, "booking") == rule
    assert audits_since(app, audit) == []


@pytest.mark.parametrize("method, template", DESIGNER_PAGES, ids=[f"{m} {u}" for m, u in DESIGNER_PAGES])
def test_anonymous_visitors_are_sent_to_sign_in_and_change_nothing(app, client, new_journey, method, template):
    slug = new_journey()
    url = _url(app, slug, template)
    before, audit = shape(app, slug), last_audit_id(app)
    if method == "GET":
        r = client.get(url)
    else:
        r = client.post(url, data={"csrf_token": csrf_of(client.get("/login").text), **_HARMFUL})
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/login?next=")
    assert shape(app, slug) == before and audits_since(app, audit) == []


@pytest.mark.parametrize("role, status", [("manager", 200), ("admin", 200), ("designer", 403)])
def test_scores_are_for_managers_and_admins(staff, role, status):
    assert staff(role).get("/dashboard").status_code == status


def test_scores_page_sends_anonymous_visitors_to_sign_in(client):
    r = client.get("/dashboard")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=")


def test_a_post_without_the_csrf_token_changes_nothing(app, designer, new_journey):
    slug = new_journey()
    before, audit = shape(app, slug), last_audit_id(app)
    designer.post(f"/workspace/journey/{ids(app, slug)}/retire")
    designer.post(f"/workspace/journeys/{slug}", data={"form": "settings", "settings-name": "X",
                                                       "settings-locales": "en es"})
    designer.post(f"/workspace/stage/{ids(app, slug, 'visit')}/edit", data={"name": "X"})
    assert shape(app, slug) == before and audits_since(app, audit) == []


# ----------------------------------------------------------------------------------------------------------- journeys

def test_a_designer_creates_a_journey(app, designer):
    slug = uid("maternity")
    audit = last_audit_id(app)
    r = submit(designer, "/workspace/journeys", {"name": "  Maternity care ", "slug": slug, "locales": "EN, es"})
    assert r.status_code == 302 and r.headers["Location"] == f"/workspace/journeys/{slug}"
    assert shape(app, slug) == {"name": "Maternity care", "locales": ["en", "es"], "hcahps": False,
                                "retired": False, "stages": []}
    [(actor, action, target, before, after)] = audits_since(app, audit)
    assert (actor, action, target, before) == (designer.email, "journey.create", f"journey:{slug}", None)
    assert after == {"slug": slug, "name": "Maternity care", "locales": ["en", "es"], "hcahps_sampled": False,
                     "retired": False, "stages": []}
    page = designer.get("/workspace/journeys")
    assert "Maternity care" in page.text and f'href="/workspace/journeys/{slug}"' in page.text


@pytest.mark.parametrize("fields, field, message", [
    ({"slug": "Bad Slug"}, "slug", "lower-case letters, digits and dashes"),
    ({"slug": "9lives"}, "slug", "starting with a letter"),
    ({"slug": ""}, "slug", "This field is required."),
    ({"name": ""}, "name", "This field is required."),
    ({"name": "x" * 201}, "name", "200"),
    ({"locales": ""}, "locales", "This field is required."),
    ({"locales": "   "}, "locales", "This field is required."),
    ({"locales": "en en"}, "locales", "distinct locale codes"),
    ({"locales": "en es_MX"}, "locales", "locale codes"),
], ids=["spaces-in-slug", "digit-first", "no-slug", "no-name", "long-name", "no-locales", "blank-locales",
        "locale-twice", "bad-locale"])
def test_an_invalid_journey_is_refused_with_the_field_error_and_nothing_stored(app, designer, fields, field, message):
    slug = uid("j")
    audit = last_audit_id(app)
    r = submit(designer, "/workspace/journeys", {"name": "Maternity", "slug": slug, "locales": "en es", **fields})
    assert r.status_code == 422
    assert message in (field_error(r.text, field) or ""), r.text
    assert shape(app, fields.get("slug", slug)) is None
    assert audits_since(app, audit) == []


def test_a_journey_slug_that_is_taken_is_refused(app, designer, new_journey):
    slug = new_journey()
    before, audit = shape(app, slug), last_audit_id(app)
    r = submit(designer, "/workspace/journeys", {"name": "Another", "slug": slug, "locales": "en"})
    assert r.status_code == 422
    assert field_error(r.text, "slug") == f"'{slug}' is taken"
    assert shape(app, slug) == before and audits_since(app, audit) == []
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Journey.slug == slug)) == 1


def test_journey_settings_rename_and_add_a_language(app, designer, new_journey):
    slug = new_journey()
    audit = last_audit_id(app)
    r = submit(designer, f"/workspace/journeys/{slug}", {"form": "settings", "settings-name": "General care 2",
                                                         "settings-locales": "en es fr",
                                                         "settings-hcahps_sampled": "y"})
    assert r.status_code == 302
    after = shape(app, slug)
    assert (after["name"], after["locales"], after["hcahps"]) == ("General care 2", ["en", "es", "fr"], True)
    [(actor, action, target, old, new)] = audits_since(app, audit)
    assert (actor, action, target) == (designer.email, "journey.update", f"journey:{slug}")
    assert (old["name"], old["locales"], old["hcahps_sampled"]) == ("General care", ["en", "es"], False)
    assert (new["name"], new["locales"], new["hcahps_sampled"]) == ("General care 2", ["en", "es", "fr"], True)
    # The new language is flagged on every published set before its next publish.
    editor_page = designer.get(f"/workspace/question-sets/{qs_id(app, slug, 'booking')}").text
    assert "Missing translations:" in editor_page and "missing translation for fr" in editor_page


def test_journey_settings_saved_as_shown_keep_the_languages(app, designer, new_journey):
    """The settings form shows the journey's languages as typed ("en es"); saving it unchanged
    (or after renaming only) must keep them."""
    slug = new_journey()
    fields = form_fields(designer.get(f"/workspace/journeys/{slug}").text, hidden_form="settings")
    assert fields["settings-locales"] == "en es", f"the form shows the languages as {fields['settings-locales']!r}"
    r = designer.post(f"/workspace/journeys/{slug}", data={**fields, "settings-name": "General care 2"})
    assert r.status_code == 302, field_error(r.text, "settings-locales")
    assert shape(app, slug)["locales"] == ["en", "es"]


@pytest.mark.parametrize("fields, field, message", [
    ({"settings-locales": "en"}, "settings-locales", "es cannot be removed: published question sets use it"),
    ({"settings-locales": ""}, "settings-locales", "This field is required."),
    ({"settings-locales": "en es es"}, "settings-locales", "distinct"),
    ({"settings-name": ""}, "settings-name", "This field is required."),
], ids=["drop-a-used-language", "no-languages", "language-twice", "no-name"])
def test_invalid_journey_settings_are_refused_and_nothing_changes(app, designer, new_journey, fields, field, message):
    slug = new_journey()
    before, audit = shape(app, slug), last_audit_id(app)
    r = submit(designer, f"/workspace/journeys/{slug}", {"form": "settings", "settings-name": "Renamed",
                                                         "settings-locales": "en es", **fields})
    assert r.status_code == 422
    assert message in (field_error(r.text, field) or ""), r.text
    assert shape(app, slug) == before and audits_since(app, audit) == []


def test_an_unknown_journey_is_404(designer):
    assert designer.get(f"/workspace/journeys/{uid('nope')}").status_code == 404
    assert designer.get(f"/workspace/journeys/{uid('nope')}/rules/booking").status_code == 404


# --------------------------------------------------------------------------------------------- stages and touchpoints

def test_a_stage_is_added_at_the_end(app, designer, new_journey):
    slug = new_journey()
    audit = last_audit_id(app)
    r = submit(designer, f"/workspace/journeys/{slug}", {"form": "stage", "stage-slug": "aftercare",
                                                         "stage-name": "Aftercare"})
    assert r.status_code == 302
    assert order(app, slug) == ["awareness", "booking", "pre-visit", "visit", "discharge", "follow-up", "aftercare"]
    assert [s[0] for s in shape(app, slug)["stages"]] == list(range(7))
    assert audits_since(app, audit) == [(designer.email, "stage.create", f"journey:{slug}/stage:aftercare", None,
                                         {"slug": "aftercare", "name": "Aftercare"})]


@pytest.mark.parametrize("fields, field, message", [
    ({"stage-slug": "booking"}, "stage-slug", "'booking' is taken"),
    ({"stage-slug": "After Care"}, "stage-slug", "lower-case letters"),
    ({"stage-name": ""}, "stage-name", "This field is required."),
], ids=["taken", "bad-slug", "no-name"])
def test_an_invalid_stage_is_refused(app, designer, new_journey, fields, field, message):
    slug = new_journey()
    before, audit = shape(app, slug), last_audit_id(app)
    r = submit(designer, f"/workspace/journeys/{slug}", {"form": "stage", "stage-slug": "aftercare",
                                                         "stage-name": "Aftercare", **fields})
    assert r.status_code == 422
    assert message in (field_error(r.text, field) or ""), r.text
    assert shape(app, slug) == before and audits_since(app, audit) == []


def test_a_stage_is_renamed_with_an_audit_entry(app, designer, new_journey):
    slug = new_journey()
    stage = ids(app, slug, "booking")
    page = designer.get(f"/workspace/stage/{stage}/edit")
    assert page.status_code == 200 and form_fields(page.text)["name"] == "Booking"
    assert 'name="kind"' not in page.text  # stages have no kind
    audit = last_audit_id(app)
    r = designer.post(f"/workspace/stage/{stage}/edit", data={**form_fields(page.text), "name": "Booking & scheduling"})
    assert r.status_code == 302 and r.headers["Location"] == f"/workspace/journeys/{slug}"
    assert ("booking", "Booking & scheduling") in [(s[1], s[2]) for s in shape(app, slug)["stages"]]
    assert audits_since(app, audit) == [(designer.email, "stage.rename", f"journey:{slug}/stage:booking",
                                         {"name": "Booking"}, {"name": "Booking & scheduling"})]
    # The same name again is no change, and no audit entry.
    audit = last_audit_id(app)
    submit(designer, f"/workspace/stage/{stage}/edit", {"name": "Booking & scheduling"})
    assert audits_since(app, audit) == []


def test_a_touchpoint_is_renamed_and_its_kind_changed(app, designer, new_journey):
    slug = new_journey()
    tp = ids(app, slug, "booking", "phone-booking")
    audit = last_audit_id(app)
    r = submit(designer, f"/workspace/touchpoint/{tp}/edit", {"name": "Booking by phone or chat", "kind": "digital"})
    assert r.status_code == 302
    [stage] = [s for s in shape(app, slug)["stages"] if s[1] == "booking"]
    assert (0, "phone-booking", "Booking by phone or chat", "digital", False) in stage[4]
    assert audits_since(app, audit) == [
        (designer.email, "touchpoint.rename", f"journey:{slug}/stage:booking/touchpoint:phone-booking",
         {"name": "Booking by phone", "kind": "human"}, {"name": "Booking by phone or chat", "kind": "digital"})]


@pytest.mark.parametrize("kind, fields, field, message", [
    ("stage", {"name": ""}, "name", "This field is required."),
    ("stage", {"name": "   "}, "name", "This field is required."),
    ("stage", {"name": "x" * 201}, "name", "200"),
    ("touchpoint", {"name": ""}, "name", "This field is required."),
    ("touchpoint", {"name": "Fine", "kind": "robotic"}, "kind", "Not a valid choice"),
], ids=["stage-empty", "stage-blank", "stage-long", "touchpoint-empty", "touchpoint-bad-kind"])
def test_an_invalid_rename_is_refused(app, designer, new_journey, kind, fields, field, message):
    slug = new_journey()
    thing = ids(app, slug, "booking") if kind == "stage" else ids(app, slug, "booking", "phone-booking")
    before, audit = shape(app, slug), last_audit_id(app)
    r = submit(designer, f"/workspace/{kind}/{thing}/edit", fields)
    assert r.status_code == 422
    assert message in (field_error(r.text, field) or ""), r.text
    assert shape(app, slug) == before and audits_since(app, audit) == []


def test_stages_move_up_and_down_with_audit_entries(app, designer, new_journey):
    slug = new_journey()
    six = ["awareness", "booking", "pre-visit", "visit", "discharge", "follow-up"]
    audit = last_audit_id(app)
    r = submit(designer, f"/workspace/stage/{ids(app, slug, 'booking')}/up", {})
    assert r.status_code == 302 and r.headers["Location"].startswith(f"/workspace/journeys/{slug}#stage-")
    moved = ["booking", "awareness", "pre-visit", "visit", "discharge", "follow-up"]
    assert order(app, slug) == moved
    assert [s[0] for s in shape(app, slug)["stages"]] == list(range(6))
    assert audits_since(app, audit) == [(designer.email, "stage.move", f"journey:{slug}/stage:booking",
                                         {"order": six}, {"order": moved})]
    submit(designer, f"/workspace/stage/{ids(app, slug, 'booking')}/down", {})
    assert order(app, slug) == six
    # The page lists the stages in the new order.
    page = designer.get(f"/workspace/journeys/{slug}").text
    positions = [page.index(f"<code>{stage}</code>") for stage in six]
    assert positions == sorted(positions)


def test_moving_past_either_end_changes_nothing(app, designer, new_journey):
    slug = new_journey()
    before, audit = shape(app, slug), last_audit_id(app)
    submit(designer, f"/workspace/stage/{ids(app, slug, 'awareness')}/up", {})
    submit(designer, f"/workspace/stage/{ids(app, slug, 'follow-up')}/down", {})
    submit(designer, f"/workspace/touchpoint/{ids(app, slug, 'visit', 'reception')}/up", {})
    submit(designer, f"/workspace/touchpoint/{ids(app, slug, 'visit', 'facilities')}/down", {})
    submit(designer, f"/workspace/journey/{ids(app, slug)}/up", {})  # journeys have no order
    assert shape(app, slug) == before and audits_since(app, audit) == []


def test_touchpoints_move_within_their_stage(app, designer, new_journey):
    slug = new_journey()
    audit = last_audit_id(app)
    submit(designer, f"/workspace/touchpoint/{ids(app, slug, 'visit', 'facilities')}/up", {})
    assert tp_order(app, slug, "visit") == ["reception", "facilities", "care-team"]
    assert audits_since(app, audit) == [
        (designer.email, "touchpoint.move", f"journey:{slug}/stage:visit/touchpoint:facilities",
         {"order": ["reception", "care-team", "facilities"]}, {"order": ["reception", "facilities", "care-team"]})]
    assert order(app, slug)[3] == "visit"  # the stages did not move


def test_a_touchpoint_is_added_at_the_end_of_its_stage(app, designer, new_journey):
    slug = new_journey()
    audit = last_audit_id(app)
    r = submit(designer, f"/workspace/stage/{ids(app, slug, 'visit')}/touchpoints",
               {"tp-slug": "pharmacy", "tp-name": "Pharmacy", "tp-kind": "physical"})
    assert r.status_code == 302
    assert tp_order(app, slug, "visit") == ["reception", "care-team", "facilities", "pharmacy"]
    assert audits_since(app, audit) == [(designer.email, "touchpoint.create",
                                         f"journey:{slug}/stage:visit/touchpoint:pharmacy", None,
                                         {"slug": "pharmacy", "name": "Pharmacy", "kind": "physical"})]


@pytest.mark.parametrize("fields, field, message", [
    ({"tp-slug": "reception"}, "tp-slug", "'reception' is taken"),
    ({"tp-slug": "Front Desk"}, "tp-slug", "lower-case letters"),
    ({"tp-name": ""}, "tp-name", "This field is required."),
    ({"tp-kind": "robotic"}, "tp-kind", "Not a valid choice"),
], ids=["taken", "bad-slug", "no-name", "bad-kind"])
def test_an_invalid_touchpoint_is_refused(app, designer, new_journey, fields, field, message):
    slug = new_journey()
    before, audit = shape(app, slug), last_audit_id(app)
    r = submit(designer, f"/workspace/stage/{ids(app, slug, 'visit')}/touchpoints",
               {"tp-slug": "pharmacy", "tp-name": "Pharmacy", "tp-kind": "physical", **fields})
    assert r.status_code == 422
    assert message in (field_error(r.text, field) or ""), r.text
    assert shape(app, slug) == before and audits_since(app, audit) == []


@pytest.mark.parametrize("kind, model", [("journey", Journey), ("stage", Stage), ("touchpoint", Touchpoint)])
def test_retire_and_restore_set_retired_at_with_audit_entries(app, designer, new_journey, kind, model):
    slug = new_journey()
    thing = {"journey": ids(app, slug), "stage": ids(app, slug, "visit"),
             "touchpoint": ids(app, slug, "visit", "reception")}[kind]
    target = {"journey": f"journey:{slug}", "stage": f"journey:{slug}/stage:visit",
              "touchpoint": f"journey:{slug}/stage:visit/touchpoint:reception"}[kind]
    audit = last_audit_id(app)
    r = submit(designer, f"/workspace/{kind}/{thing}/retire", {})
    assert r.status_code == 302
    assert retired_at(app, model, thing) is not None
    submit(designer, f"/workspace/{kind}/{thing}/retire", {})  # again: no second entry
    assert audits_since(app, audit) == [(designer.email, f"{kind}.retire", target, {"retired": False},
                                         {"retired": True})]
    audit = last_audit_id(app)
    submit(designer, f"/workspace/{kind}/{thing}/restore", {})
    assert retired_at(app, model, thing) is None
    assert audits_since(app, audit) == [(designer.email, f"{kind}.restore", target, {"retired": True},
                                         {"retired": False})]


def test_retired_things_are_marked_on_the_pages(app, designer, new_journey):
    slug = new_journey()
    submit(designer, f"/workspace/stage/{ids(app, slug, 'visit')}/retire", {})
    page = designer.get(f"/workspace/journeys/{slug}").text
    assert re.search(r'class="stage retired">\s*<h3>Visit <code>visit</code> <span class="badge">retired', page)
    # No new question set can be made for a retired stage.
    qs_form = form_fields(page, hidden_form="question-set")
    assert qs_form["qs-stage"] != str(ids(app, slug, "visit"))
    assert f'<option value="{ids(app, slug, "visit")}"' not in page
    submit(designer, f"/workspace/journey/{ids(app, slug)}/retire", {})
    listing = designer.get("/workspace/journeys").text
    assert re.search(rf'href="/workspace/journeys/{slug}">General care</a> <span class="badge">retired', listing)


def test_an_unknown_thing_is_404(designer):
    assert submit(designer, "/workspace/stage/999999999/retire", {}).status_code == 404
    assert submit(designer, "/workspace/widget/1/retire", {}).status_code == 404
    assert designer.get("/workspace/touchpoint/999999999/edit").status_code == 404
    assert designer.get("/workspace/question-sets/999999999").status_code == 404


# ------------------------------------------------------------------------------------------- retiring and invitations

def test_a_retired_journey_schedules_nothing_new_and_keeps_its_responses(app, client, auth, outbox, run_jobs, designer,
                                                                         new_journey):
    slug = new_journey()
    inv = post_event(client, auth, event_body(journey=slug))
    run_jobs()
    answer(client, outbox, inv["id"], {"booking_ease": "6", "booking_satisfaction": "4", "comment": "Fine"})

    submit(designer, f"/workspace/journey/{ids(app, slug)}/retire", {})
    recorded = post_events(client, auth, event_body(journey=slug))
    assert (recorded["invitations"], recorded["reason"]) == ([], "retired")
    with app.app_context():
        [response] = db.session.scalars(select(Response).where(Response.journey_id == ids(app, slug)))
        assert response.invitation_id == inv["id"] and len(response.answers) == 3
        assert db.session.get(Invitation, inv["id"]).status == "answered"
    assert client.get(f"/api/v1/journeys/{slug}/scores", headers=auth).status_code == 200

    submit(designer, f"/workspace/journey/{ids(app, slug)}/restore", {})
    assert post_event(client, auth, event_body(journey=slug))["status"] == "scheduled"


def test_a_retired_stage_schedules_nothing_and_other_stages_go_on(app, client, auth, designer, new_journey):
    slug = new_journey()
    submit(designer, f"/workspace/stage/{ids(app, slug, 'booking')}/retire", {})
    recorded = post_events(client, auth, event_body("booking", journey=slug))
    assert (recorded["invitations"], recorded["reason"]) == ([], "retired")
    assert post_event(client, auth, event_body("follow_up", journey=slug))["status"] == "scheduled"
    with app.app_context():
        event = db.session.scalar(select(Event).where(Event.external_id == recorded["external_id"]))
        assert event.skip_reason == "retired"


def test_a_retired_touchpoint_takes_no_new_invitations(app, client, auth, designer, new_journey):
    """set_retired: "Retired ones take no new invitations"; an event naming a retired touchpoint
    must not be surveyed about it."""
    slug = new_journey()
    submit(designer, f"/workspace/touchpoint/{ids(app, slug, 'booking', 'online-booking')}/retire", {})
    recorded = post_events(client, auth, event_body("booking", journey=slug, touchpoint="online-booking"))
    assert recorded["invitations"] == [] and recorded["reason"] == "retired", recorded


# -------------------------------------------------------------------------------------------- question sets: creating

def test_a_question_set_is_created_as_a_blank_draft(app, designer, new_journey):
    slug = new_journey()
    key = uid("visit")
    audit = last_audit_id(app)
    r = submit(designer, f"/workspace/journeys/{slug}", {"form": "question-set", "qs-key": key,
                                                         "qs-stage": str(ids(app, slug, "visit"))})
    set_id = qs_id(app, slug, key)
    assert r.status_code == 302 and r.headers["Location"] == f"/workspace/question-sets/{set_id}"
    state = qs_state(app, set_id)
    assert state["versions"] == []
    assert state["draft"]["key"] == key and state["draft"]["stage"] == "visit"
    assert state["draft"]["title"] == {"en": "", "es": ""} and len(state["draft"]["questions"]) == 1
    assert audits_since(app, audit) == [(designer.email, "question_set.create", f"question_set:{slug}/{key}", None,
                                         {"key": key, "stage": "visit"})]
    html, fields = editor(designer, set_id)
    assert "Never published" in html and "Publish as version 1" in html
    # Side by side: a column per language of the journey, for the title and each question.
    assert {"title-en", "title-es", "q0-text-en", "q0-text-es", "q0-low-es", "q0-high-en"} <= set(fields)


@pytest.mark.parametrize("fields, field, message", [
    ({"qs-key": "booking"}, "qs-key", "'booking' is taken"),
    ({"qs-key": "Visit Set"}, "qs-key", "lower-case letters"),
    ({"qs-stage": "999999999"}, "qs-stage", "Not a valid choice"),
], ids=["taken-in-another-stage", "bad-key", "unknown-stage"])
def test_an_invalid_question_set_is_refused(app, designer, new_journey, fields, field, message):
    slug = new_journey()
    audit = last_audit_id(app)
    r = submit(designer, f"/workspace/journeys/{slug}", {"form": "question-set", "qs-key": "visit-set",
                                                         "qs-stage": str(ids(app, slug, "visit")), **fields})
    assert r.status_code == 422
    assert message in (field_error(r.text, field) or ""), r.text
    assert qs_id(app, slug, "visit-set") is None and audits_since(app, audit) == []


def test_no_question_set_for_a_retired_stage(app, designer, new_journey):
    slug = new_journey()
    submit(designer, f"/workspace/stage/{ids(app, slug, 'visit')}/retire", {})
    r = submit(designer, f"/workspace/journeys/{slug}", {"form": "question-set", "qs-key": "visit-set",
                                                         "qs-stage": str(ids(app, slug, "visit"))})
    assert r.status_code == 422 and "Not a valid choice" in field_error(r.text, "qs-stage")
    assert qs_id(app, slug, "visit-set") is None


# ------------------------------------------------------------------------------------------ question sets: every type

ALL_TYPES = ["effort", "nps", "yes_no", "single_choice", "text"]


def _fill_every_type(fields: dict) -> dict:
    """The editor's fields for six questions, one of every type, in English and Spanish."""
    f = dict(fields)
    f.update({"title-en": "Your visit", "title-es": "Su visita", "intro-en": "Two minutes, no more.",
              "intro-es": "Dos minutos, no más."})
    f.update({"q0-key": "overall", "q0-type": "rating", "q0-measure": "satisfaction", "q0-better": "high",
              "q0-required": "1", "q0-text-en": "How was your visit?", "q0-text-es": "¿Cómo fue su visita?",
              "q0-low-en": "Very poor", "q0-high-en": "Excellent", "q0-low-es": "Muy mala", "q0-high-es": "Excelente"})
    f.update({"q1-key": "waiting", "q1-type": "effort", "q1-measure": "friction", "q1-better": "low",
              "q1-required": "1", "q1-text-en": "I waited a long time.", "q1-text-es": "Esperé mucho tiempo.",
              "q1-low-en": "Strongly disagree", "q1-high-en": "Strongly agree", "q1-low-es": "Muy en desacuerdo",
              "q1-high-es": "Muy de acuerdo"})
    f.update({"q2-key": "recommend", "q2-type": "nps", "q2-measure": "satisfaction", "q2-better": "high",
              "q2-required": "1", "q2-text-en": "Would you recommend us?", "q2-text-es": "¿Nos recomendaría?",
              "q2-low-en": "Not likely", "q2-high-en": "Very likely", "q2-low-es": "Poco probable",
              "q2-high-es": "Muy probable"})
    f.update({"q3-key": "on_time", "q3-type": "yes_no", "q3-measure": "friction", "q3-better": "no",
              "q3-required": "1", "q3-text-en": "Did you have to wait past your time?",
              "q3-text-es": "¿Tuvo que esperar después de su hora?"})
    f.update({"q4-key": "how_booked", "q4-type": "single_choice", "q4-measure": "satisfaction",
              "q4-required": "1", "q4-text-en": "How did you book?", "q4-text-es": "¿Cómo reservó?",
              "q4-opt0-value": "phone", "q4-opt0-score": "100", "q4-opt0-label-en": "By phone",
              "q4-opt0-label-es": "Por teléfono",
              "q4-opt1-value": "web", "q4-opt1-score": "50", "q4-opt1-label-en": "Online",
              "q4-opt1-label-es": "En línea",
              "q4-opt2-value": "letter", "q4-opt2-score": "0", "q4-opt2-label-en": "By letter",
              "q4-opt2-label-es": "Por carta"})
    f.update({"q5-key": "comment", "q5-type": "text", "q5-text-en": "Anything else?",
              "q5-text-es": "¿Algo más?"})
    f.pop("q5-required", None)
    return f


EVERY_TYPE_CONTENT = {
    "title": {"en": "Your visit", "es": "Su visita"},
    "intro": {"en": "Two minutes, no more.", "es": "Dos minutos, no más."},
    "questions": [
        {"key": "overall", "type": "rating", "required": True, "measure": "satisfaction", "better": "high",
         "text": {"en": "How was your visit?", "es": "¿Cómo fue su visita?"},
         "anchors": {"en": ["Very poor", "Excellent"], "es": ["Muy mala", "Excelente"]}},
        {"key": "waiting", "type": "effort", "required": True, "measure": "friction", "better": "low",
         "text": {"en": "I waited a long time.", "es": "Esperé mucho tiempo."},
         "anchors": {"en": ["Strongly disagree", "Strongly agree"], "es": ["Muy en desacuerdo", "Muy de acuerdo"]}},
        {"key": "recommend", "type": "nps", "required": True, "measure": "satisfaction", "better": "high",
         "text": {"en": "Would you recommend us?", "es": "¿Nos recomendaría?"},
         "anchors": {"en": ["Not likely", "Very likely"], "es": ["Poco probable", "Muy probable"]}},
        {"key": "on_time", "type": "yes_no", "required": True, "measure": "friction", "better": "no",
         "text": {"en": "Did you have to wait past your time?", "es": "¿Tuvo que esperar después de su hora?"}},
        {"key": "how_booked", "type": "single_choice", "required": True, "measure": "satisfaction",
         "text": {"en": "How did you book?", "es": "¿Cómo reservó?"},
         "options": [{"value": "phone", "label": {"en": "By phone", "es": "Por teléfono"}, "score": 100},
                     {"value": "web", "label": {"en": "Online", "es": "En línea"}, "score": 50},
                     {"value": "letter", "label": {"en": "By letter", "es": "Por carta"}, "score": 0}]},
        {"key": "comment", "type": "text", "required": False,
         "text": {"en": "Anything else?", "es": "¿Algo más?"}},
    ],
}


def _build_every_type(app, designer, slug: str) -> int:
    """A new set in the visit stage, grown through the editor's buttons to six questions of every type."""
    set_id = new_set(app, designer, slug, "visit")
    for qtype in ALL_TYPES:
        _, fields = editor(designer, set_id)
        assert press(designer, set_id, fields, "add-question", new_type=qtype).status_code == 302
    _, fields = editor(designer, set_id)
    assert press(designer, set_id, fields, "add-option:4").status_code == 302
    _, fields = editor(designer, set_id)
    assert {"q4-opt2-value", "q4-opt2-label-es"} <= set(fields)
    assert press(designer, set_id, _fill_every_type(fields), "save").status_code == 302
    return set_id


def test_every_question_type_is_written_in_both_languages_and_published_exactly(app, designer, new_journey):
    slug = new_journey()
    set_id = _build_every_type(app, designer, slug)
    draft = qs_state(app, set_id)["draft"]
    assert [q["type"] for q in draft["questions"]] == ["rating", *ALL_TYPES]

    html, fields = editor(designer, set_id)
    assert "Before this can be published" not in html
    audit = last_audit_id(app)
    r = press(designer, set_id, fields, "publish")
    assert r.status_code == 302
    assert "Published as version 1." in designer.get(r.headers["Location"]).text
    state = qs_state(app, set_id)
    key = state["versions"][0][1]["key"]
    assert state["draft"] is None
    assert state["versions"] == [(1, {"key": key, **EVERY_TYPE_CONTENT})]
    assert [a[1] for a in audits_since(app, audit)] == ["question_set.publish"]
    [(actor, _, target, before, after)] = audits_since(app, audit)
    assert (actor, target, before) == (designer.email, f"question_set:{slug}/{key}", {"version": None})
    assert after == {"version": 1, "content": {"key": key, **EVERY_TYPE_CONTENT}}


def test_a_published_set_of_every_type_is_what_the_patient_answers(app, client, auth, outbox, run_jobs, designer,
                                                                   new_journey):
    slug = new_journey()
    set_id = _build_every_type(app, designer, slug)
    _, fields = editor(designer, set_id)
    press(designer, set_id, fields, "publish")
    key = qs_state(app, set_id)["versions"][0][1]["key"]
    rule = _rule_fields(question_set=key, touchpoint="care-team")
    assert submit(designer, f"/workspace/journeys/{slug}/rules/follow_up", rule).status_code == 302

    inv = post_event(client, auth, event_body("follow_up", journey=slug, locale="es"))
    assert (inv["question_set"], inv["question_set_version"], inv["stage"]) == (key, 1, "visit")
    run_jobs()
    tok = token_of(message_for(outbox, inv["id"]))
    page = client.get(f"/s/{tok}").text
    for text in ("¿Cómo fue su visita?", "Esperé mucho tiempo.", "¿Nos recomendaría?", "Por carta", "¿Algo más?",
                 "Muy en desacuerdo", "Dos minutos, no más."):
        assert text in unescape(page)
    answer(client, outbox, inv["id"], {"overall": "5", "waiting": "2", "recommend": "9", "on_time": "no",
                                       "how_booked": "web"})
    with app.app_context():
        response = db.session.scalar(select(Response).where(Response.invitation_id == inv["id"]))
        scores = {a.question_key: (a.measure, a.score) for a in response.answers}
    assert scores == {"overall": ("satisfaction", 100.0), "waiting": ("friction", round(100 - 100 * 5 / 6, 4)),
                      "recommend": ("satisfaction", 90.0), "on_time": ("friction", 0.0),
                      "how_booked": ("satisfaction", 50.0)}


def test_missing_translations_are_flagged_and_publishing_is_refused(app, designer, new_journey):
    slug = new_journey()
    set_id = _build_every_type(app, designer, slug)
    _, fields = editor(designer, set_id)
    fields.update({"q2-text-es": "", "q4-opt1-label-es": "", "title-es": ""})
    before, audit = counts(app)["QuestionSetVersion"], last_audit_id(app)
    r = press(designer, set_id, fields, "publish")
    assert r.status_code == 422
    html = unescape(r.text)
    assert "Not published: 3 problem(s) below." in html
    assert "Missing translations:</strong> 3 texts still need a translation" in html
    assert "questions[2].text: missing translation for es" in html
    assert "questions[4].options[1].label: missing translation for es" in html
    assert "title: missing translation for es" in html
    assert 'id="q2-text-es" name="q2-text-es" rows="2" lang="es" maxlength="500" class="missing"' in html
    # Nothing published, and the draft keeps what was typed.
    state = qs_state(app, set_id)
    assert state["versions"] == [] and counts(app)["QuestionSetVersion"] == before
    assert state["draft"]["questions"][2]["text"] == {"en": "Would you recommend us?", "es": ""}
    assert state["draft"]["questions"][3]["text"]["es"] == "¿Tuvo que esperar después de su hora?"
    assert "question_set.publish" not in [a[1] for a in audits_since(app, audit)]
    # The editor, opened again, still lists them before any publish is tried.
    again = unescape(designer.get(f"/workspace/question-sets/{set_id}").text)
    assert "Before this can be published (3)" in again and "questions[2].text: missing translation for es" in again


def test_a_missing_scale_label_translation_is_flagged_before_publishing(app, designer, new_journey):
    """The scale's end labels are shown to patients in their language like the question itself; a
    label given in English and left empty in Spanish is a missing translation."""
    slug = new_journey()
    set_id = _build_every_type(app, designer, slug)
    _, fields = editor(designer, set_id)
    fields.update({"q0-low-es": "", "q0-high-es": ""})
    r = press(designer, set_id, fields, "publish")
    assert r.status_code == 422, "published with the Spanish scale labels empty"
    assert qs_state(app, set_id)["versions"] == []


def test_editing_a_published_set_is_a_draft_until_published_as_the_next_version(app, client, auth, designer,
                                                                                new_journey):
    slug = new_journey()
    set_id = qs_id(app, slug, "booking")
    [(number, v1)] = qs_state(app, set_id)["versions"]
    assert number == 1
    html, fields = editor(designer, set_id)
    assert "Version 1 is live" in html and "You are editing a draft" not in html and "Publish as version 2" in html
    assert fields["q1-text-en"] == "Overall, how satisfied are you with how your appointment was booked?"

    fields["q1-text-en"] = "Overall, how happy are you with booking?"
    assert press(designer, set_id, fields, "save").status_code == 302
    html, fields = editor(designer, set_id)
    assert "You are editing a draft" in html and "Version 1 is live" in html
    assert fields["q1-text-en"] == "Overall, how happy are you with booking?"
    state = qs_state(app, set_id)
    assert state["versions"] == [(1, v1)]  # the live version is untouched
    assert state["draft"]["questions"][1]["text"]["en"] == "Overall, how happy are you with booking?"
    # New invitations still ask version 1 while the draft is open.
    assert post_event(client, auth, event_body(journey=slug))["question_set_version"] == 1

    r = press(designer, set_id, fields, "publish")
    assert r.status_code == 302
    state = qs_state(app, set_id)
    assert [v for v, _ in state["versions"]] == [1, 2] and state["versions"][0] == (1, v1)
    assert state["versions"][1][1]["questions"][1]["text"]["en"] == "Overall, how happy are you with booking?"
    assert state["draft"] is None
    assert post_event(client, auth, event_body(journey=slug))["question_set_version"] == 2


@pytest.mark.parametrize("key", ["booking", "booking-pulse", "discharge", "follow-up"])
def test_publishing_an_unchanged_set_creates_no_version(app, designer, new_journey, key):
    """The editor's form, posted back exactly as rendered, is the published version itself."""
    slug = new_journey()
    set_id = qs_id(app, slug, key)
    before = qs_state(app, set_id)["versions"]
    _, fields = editor(designer, set_id)
    r = press(designer, set_id, fields, "publish")
    assert r.status_code == 302
    assert "Nothing changed since the published version" in designer.get(r.headers["Location"]).text
    assert qs_state(app, set_id) == {"draft": None, "versions": before}


def test_a_draft_saved_without_changes_is_published_as_nothing_new(app, designer, new_journey):
    slug = new_journey()
    set_id = qs_id(app, slug, "discharge")
    _, fields = editor(designer, set_id)
    press(designer, set_id, fields, "save")
    assert qs_state(app, set_id)["draft"] is not None
    _, fields = editor(designer, set_id)
    press(designer, set_id, fields, "publish")
    state = qs_state(app, set_id)
    assert [v for v, _ in state["versions"]] == [1] and state["draft"] is None


def test_discarding_a_draft_brings_back_the_live_version(app, designer, new_journey):
    slug = new_journey()
    set_id = qs_id(app, slug, "booking")
    _, fields = editor(designer, set_id)
    press(designer, set_id, {**fields, "title-en": "Changed title"}, "save")
    draft = qs_state(app, set_id)["draft"]
    audit = last_audit_id(app)
    _, fields = editor(designer, set_id)  # the page as it is now (a stale one is refused)
    r = press(designer, set_id, fields, "discard")
    assert r.status_code == 302
    assert "Draft discarded." in designer.get(r.headers["Location"]).text
    assert qs_state(app, set_id)["draft"] is None
    assert audits_since(app, audit) == [(designer.email, "question_set.discard_draft",
                                         f"question_set:{slug}/booking", draft, None)]
    html, fields = editor(designer, set_id)
    assert fields["title-en"] == "Booking your appointment" and "You are editing a draft" not in html
    assert "Discard draft" not in html


def test_an_editor_post_without_the_csrf_token_is_refused(app, designer, new_journey):
    slug = new_journey()
    set_id = qs_id(app, slug, "booking")
    _, fields = editor(designer, set_id)
    fields.pop("csrf_token")
    r = press(designer, set_id, {**fields, "title-en": "Hijacked"}, "publish")
    assert r.status_code == 400
    assert qs_state(app, set_id)["draft"] is None and len(qs_state(app, set_id)["versions"]) == 1


# ----------------------------------------------------------------------------------------- question sets: the buttons

def test_questions_are_added_moved_and_deleted(app, designer, new_journey):
    slug = new_journey()
    set_id = qs_id(app, slug, "booking")
    _, fields = editor(designer, set_id)
    r = press(designer, set_id, fields, "add-question", new_type="yes_no")
    assert r.status_code == 302
    draft = qs_state(app, set_id)["draft"]
    assert [q["key"] for q in draft["questions"]] == ["booking_ease", "booking_satisfaction", "comment", "question_4"]
    assert draft["questions"][3]["type"] == "yes_no"

    _, fields = editor(designer, set_id)
    r = press(designer, set_id, fields, "up:3")
    assert r.status_code == 302 and r.headers["Location"].endswith("#q3")
    assert [q["key"] for q in qs_state(app, set_id)["draft"]["questions"]] == [
        "booking_ease", "booking_satisfaction", "question_4", "comment"]
    _, fields = editor(designer, set_id)
    press(designer, set_id, fields, "down:0")
    assert [q["key"] for q in qs_state(app, set_id)["draft"]["questions"]] == [
        "booking_satisfaction", "booking_ease", "question_4", "comment"]
    _, fields = editor(designer, set_id)
    press(designer, set_id, fields, "delete:2")
    draft = qs_state(app, set_id)["draft"]
    assert [q["key"] for q in draft["questions"]] == ["booking_satisfaction", "booking_ease", "comment"]
    # What was typed survives every button.
    assert draft["questions"][1]["text"]["es"] == "Fue fácil reservar mi cita."
    assert draft["questions"][1]["anchors"]["en"] == ["Strongly disagree", "Strongly agree"]
    assert qs_state(app, set_id)["versions"][0][1]["questions"][0]["key"] == "booking_ease"  # live: untouched


def test_a_new_question_of_an_unknown_type_is_a_rating(app, designer, new_journey):
    slug = new_journey()
    set_id = qs_id(app, slug, "booking")
    _, fields = editor(designer, set_id)
    press(designer, set_id, fields, "add-question", new_type="essay")
    assert qs_state(app, set_id)["draft"]["questions"][-1]["type"] == "rating"


@pytest.mark.parametrize("action", ["up:0", "down:2", "up:7", "down:-1", "delete:9", "up:x", "add-option:0",
                                    "delete-option:0:0", "bogus", ""])
def test_buttons_that_do_not_apply_change_nothing_but_keep_the_typing(app, designer, new_journey, action):
    slug = new_journey()
    set_id = qs_id(app, slug, "booking")
    _, fields = editor(designer, set_id)
    r = press(designer, set_id, {**fields, "title-en": "Typed"}, action)
    assert r.status_code == 302
    draft = qs_state(app, set_id)["draft"]
    assert [q["key"] for q in draft["questions"]] == ["booking_ease", "booking_satisfaction", "comment"]
    assert draft["title"]["en"] == "Typed"


def test_the_last_question_cannot_be_deleted(app, designer, new_journey):
    slug = new_journey()
    set_id = new_set(app, designer, slug, "visit")
    html, fields = editor(designer, set_id)
    assert 'value="delete:0"' not in html  # no button for it
    press(designer, set_id, fields, "delete:0")
    assert len(qs_state(app, set_id)["draft"]["questions"]) == 1


def test_choices_are_added_and_removed_down_to_two(app, designer, new_journey):
    slug = new_journey()
    set_id = new_set(app, designer, slug, "visit")
    _, fields = editor(designer, set_id)
    press(designer, set_id, {**fields, "q0-type": "single_choice"}, "save")  # a switch brings two blank choices
    _, fields = editor(designer, set_id)
    assert {"q0-opt0-value", "q0-opt1-value"} <= set(fields) and "q0-opt2-value" not in fields
    press(designer, set_id, {**fields, "q0-opt0-value": "a", "q0-opt1-value": "b"}, "add-option:0")
    options = qs_state(app, set_id)["draft"]["questions"][0]["options"]
    assert [o["value"] for o in options] == ["a", "b", "option_3"]
    _, fields = editor(designer, set_id)
    press(designer, set_id, fields, "delete-option:0:0")
    assert [o["value"] for o in qs_state(app, set_id)["draft"]["questions"][0]["options"]] == ["b", "option_3"]
    _, fields = editor(designer, set_id)
    press(designer, set_id, fields, "delete-option:0:1")  # two is the fewest
    assert [o["value"] for o in qs_state(app, set_id)["draft"]["questions"][0]["options"]] == ["b", "option_3"]


def test_removing_a_choice_that_is_not_there_changes_nothing(app, designer, new_journey):
    slug = new_journey()
    set_id = new_set(app, designer, slug, "visit")
    _, fields = editor(designer, set_id)
    press(designer, set_id, {**fields, "q0-type": "single_choice"}, "save")
    _, fields = editor(designer, set_id)
    press(designer, set_id, fields, "add-option:0")
    _, fields = editor(designer, set_id)
    r = press(designer, set_id, fields, "delete-option:0:7")  # a stale page, or a crafted post
    assert r.status_code == 302, f"{r.status_code}: a choice out of range should change nothing"
    assert len(qs_state(app, set_id)["draft"]["questions"][0]["options"]) == 3


def test_an_unreadable_option_score_is_kept_and_named_when_publishing(app, designer, new_journey):
    slug = new_journey()
    set_id = _build_every_type(app, designer, slug)
    _, fields = editor(designer, set_id)
    r = press(designer, set_id, {**fields, "q4-opt1-score": "lots"}, "publish")
    assert r.status_code == 422 and "questions[4].options[1].score: must be 0-100" in r.text
    assert qs_state(app, set_id)["draft"]["questions"][4]["options"][1]["score"] == "lots"
    _, fields = editor(designer, set_id)
    assert fields["q4-opt1-score"] == "lots"


# ----------------------------------------------------------------------------------------------------------- guidance

def _one_question_set(app, designer, slug, text_en: str, text_es: str = "¿Cómo fue su visita?") -> tuple[int, str]:
    set_id = new_set(app, designer, slug, "visit")
    _, fields = editor(designer, set_id)
    press(designer, set_id, {**fields, "q0-text-en": text_en, "q0-text-es": text_es}, "save")
    html, _ = editor(designer, set_id)
    return set_id, unescape(html)


def test_guidance_warns_of_more_than_five_questions(app, designer, new_journey):
    slug = new_journey()
    set_id = _build_every_type(app, designer, slug)
    html = unescape(editor(designer, set_id)[0])
    assert "6 questions: surveys of 5 or fewer get many more answers" in html
    _, fields = editor(designer, set_id)
    press(designer, set_id, fields, "delete:5")
    assert "surveys of 5 or fewer" not in editor(designer, set_id)[0]


def test_guidance_warns_of_hard_reading(app, designer, new_journey):
    slug = new_journey()
    _, html = _one_question_set(app, designer, slug,
                                "Considering the comprehensive multidisciplinary coordination of your postoperative "
                                "rehabilitation, how would you characterise the communication effectiveness?")
    assert re.search(r"questions\[0\]\.text\.en</a>: reads at about grade \d+; aim for grade 8 or below", html)
    assert 'Tip: reads at about grade' in html


def test_guidance_warns_of_a_double_barrelled_question(app, designer, new_journey):
    slug = new_journey()
    _, html = _one_question_set(app, designer, slug, "Were the nurses kind and helpful?",
                                "¿Las enfermeras fueron amables y atentas?")
    assert "questions[0].text.en</a>: may ask two things at once" in html
    assert "questions[0].text.es</a>: may ask two things at once" in html
    assert "reads at about grade" not in html


def test_guidance_leaves_a_plain_question_alone(app, designer, new_journey):
    slug = new_journey()
    _, html = _one_question_set(app, designer, slug, "Would you tell friends and family about us?",
                                "¿Hablaría de nosotros a familiares y amigos?")
    assert "Writing tips" not in html


def test_guidance_is_advice_not_a_refusal(app, designer, new_journey):
    slug = new_journey()
    set_id, _ = _one_question_set(app, designer, slug, "Were the nurses kind and helpful?",
                                  "¿Las enfermeras fueron amables y atentas?")
    _, fields = editor(designer, set_id)
    fields.update({"title-en": "Nurses", "title-es": "Enfermeras", "q0-measure": "satisfaction"})
    assert press(designer, set_id, fields, "publish").status_code == 302
    assert [v for v, _ in qs_state(app, set_id)["versions"]] == [1]


# ------------------------------------------------------------------------------------------------------------ preview

def _names_and_labels(html: str) -> tuple[list[str], list[str]]:
    form = re.search(r'<form method="post".*?</form>', html, re.S).group(0)
    names = [n for n in re.findall(r'name="([^"]+)"', form) if n != "csrf_token"]
    labels = [re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", t))).strip()
              for t in re.findall(r'<(?:legend|label)[^>]*>(.*?)</(?:legend|label)>', form, re.S)]
    return names, labels


@pytest.mark.parametrize("locale", ["en", "es"])
def test_the_preview_is_the_patients_page_itself(app, client, auth, outbox, run_jobs, designer, new_journey, locale):
    slug = new_journey()
    inv = post_event(client, auth, event_body(journey=slug, locale=locale))
    run_jobs()
    patient_page = client.get(f"/s/{token_of(message_for(outbox, inv['id']))}")
    set_id = qs_id(app, slug, "booking")

    outer = designer.get(f"/workspace/question-sets/{set_id}/preview?locale={locale}")
    assert outer.status_code == 200
    frame = re.search(r'<div class="phone">\s*<iframe class="phone-screen" title="[^"]*" src="([^"]+)"', outer.text)
    assert frame and unescape(frame.group(1)) == f"/workspace/question-sets/{set_id}/preview/page?locale={locale}"
    with designer.get("/static/staff.css") as css:
        assert ".phone-screen { width: 375px;" in css.text  # a phone's width
    inner = designer.get(unescape(frame.group(1)))
    assert inner.status_code == 200
    assert _names_and_labels(inner.text) == _names_and_labels(patient_page.text)
    assert f'<html lang="{locale}"' in inner.text or f"lang=\"{locale}\"" in inner.text
    title = {"en": "Booking your appointment", "es": "La reserva de su cita"}[locale]
    assert f"<h1>{title}</h1>" in inner.text


def test_the_preview_offers_every_language_and_falls_back_to_the_first(app, designer, new_journey):
    slug = new_journey()
    set_id = qs_id(app, slug, "booking")
    outer = designer.get(f"/workspace/question-sets/{set_id}/preview?locale=fr").text
    assert f"/workspace/question-sets/{set_id}/preview/page?locale=en" in outer
    for loc in ("en", "es"):
        assert f'href="/workspace/question-sets/{set_id}/preview?locale={loc}"' in outer
    editor_page = designer.get(f"/workspace/question-sets/{set_id}").text
    assert "Preview in en" in editor_page and "Preview in es" in editor_page


def test_the_preview_shows_the_draft_not_the_live_version(app, designer, new_journey):
    slug = new_journey()
    set_id = qs_id(app, slug, "booking")
    _, fields = editor(designer, set_id)
    press(designer, set_id, {**fields, "q1-text-es": "¿Le gustó reservar?"}, "save")
    inner = unescape(designer.get(f"/workspace/question-sets/{set_id}/preview/page?locale=es").text)
    assert "¿Le gustó reservar?" in inner


def test_a_new_set_can_be_previewed_before_anything_is_typed(app, designer, new_journey):
    slug = new_journey()
    set_id = new_set(app, designer, slug, "visit")
    r = designer.get(f"/workspace/question-sets/{set_id}/preview/page?locale=en")
    assert r.status_code == 200, f"the preview of a brand-new set answers {r.status_code}"
    assert "(no title yet)" in r.text


def test_a_question_just_added_can_be_previewed(app, designer, new_journey):
    slug = new_journey()
    set_id = qs_id(app, slug, "booking")
    _, fields = editor(designer, set_id)
    press(designer, set_id, fields, "add-question", new_type="nps")
    r = designer.get(f"/workspace/question-sets/{set_id}/preview/page?locale=en")
    assert r.status_code == 200, f"the preview after 'Add question' answers {r.status_code}"


def test_a_draft_with_a_reserved_question_key_can_still_be_previewed(app, designer, new_journey):
    """Drafts may be incomplete or wrong until publishing; the preview must not break on one."""
    slug = new_journey()
    set_id = qs_id(app, slug, "booking")
    _, fields = editor(designer, set_id)
    press(designer, set_id, {**fields, "q0-key": "data"}, "save")
    assert "is used twice or reserved" in designer.get(f"/workspace/question-sets/{set_id}").text
    r = designer.get(f"/workspace/question-sets/{set_id}/preview/page?locale=en")
    assert r.status_code == 200, f"the preview of a draft with key 'data' answers {r.status_code}"


def test_a_submitted_preview_is_checked_and_nothing_is_stored(app, designer, new_journey):
    slug = new_journey()
    set_id = qs_id(app, slug, "booking")
    url = f"/workspace/question-sets/{set_id}/preview/page?locale=en"
    csrf = csrf_of(designer.get(url).text)
    before = counts(app)
    ok = designer.post(url, data={"csrf_token": csrf, "booking_ease": "6", "booking_satisfaction": "5",
                                  "comment": "Nice"})
    assert ok.status_code == 200 and "this answer was checked like a patient's and not saved" in unescape(ok.text)
    missing = designer.post(url, data={"csrf_token": csrf, "booking_ease": "6"})
    assert 'class="error-summary"' in missing.text and 'id="booking_satisfaction-error"' in missing.text
    assert counts(app) == before


# ------------------------------------------------------------------------------------------------------ trigger rules

def _rule_fields(**overrides) -> dict:
    fields = {"form": "rule", "rule-question_set": "booking", "rule-touchpoint": "online-booking",
              "rule-delay_hours": "1.5", "rule-first_channel": "email", "rule-second_channel": "sms",
              "rule-reminder_hours": "24", "rule-link_ttl_days": "5", "rule-fatigue_days": "10",
              "rule-window_start": "09:00", "rule-window_end": "17:30",
              "rule-exclude_codes": "ONC, psy-7\n\n  HIV  \n", "rule-hcahps": "delay", "rule-active": "y"}
    fields.update({f"rule-{k}" if not k.startswith(("rule-", "form")) else k: v for k, v in overrides.items()})
    return {k: v for k, v in fields.items() if v is not None}


def test_a_rule_is_saved_with_every_field(app, designer, new_journey):
    slug = new_journey()
    audit = last_audit_id(app)
    before = rule_of(app, slug, "booking")
    r = submit(designer, f"/workspace/journeys/{slug}/rules/booking", _rule_fields())
    assert r.status_code == 302 and r.headers["Location"] == f"/workspace/journeys/{slug}/rules/booking"
    saved = {"event": "booking", "question_set": "booking", "touchpoint": "online-booking", "delay_minutes": 90,
             "channels": ["email", "sms"], "reminder_hours": 24, "link_ttl_days": 5, "fatigue_days": 10,
             "window_start": "09:00", "window_end": "17:30", "exclude_codes": ["ONC", "psy-7", "HIV"],
             "hcahps": "delay", "active": True}
    assert rule_of(app, slug, "booking") == saved
    assert audits_since(app, audit) == [(designer.email, "rule.save", f"journey:{slug}/rule:booking", before, saved)]
    page = designer.get(r.headers["Location"])
    assert "Booking rule saved." in page.text
    # The form shows what was saved.
    shown = form_fields(page.text, hidden_form="rule")
    assert {k: shown[k] for k in ("rule-question_set", "rule-touchpoint", "rule-delay_hours", "rule-first_channel",
                                   "rule-second_channel", "rule-reminder_hours", "rule-link_ttl_days",
                                   "rule-fatigue_days", "rule-window_start", "rule-window_end",
                                   "rule-exclude_codes", "rule-hcahps", "rule-active")} == {
        "rule-question_set": "booking", "rule-touchpoint": "online-booking", "rule-delay_hours": "1.5",
        "rule-first_channel": "email", "rule-second_channel": "sms", "rule-reminder_hours": "24",
        "rule-link_ttl_days": "5", "rule-fatigue_days": "10", "rule-window_start": "09:00",
        "rule-window_end": "17:30", "rule-exclude_codes": "ONC\npsy-7\nHIV", "rule-hcahps": "delay",
        "rule-active": "y"}
    journey_page = designer.get(f"/workspace/journeys/{slug}").text
    assert "<td>1.5 h</td><td>email then sms</td><td>24 h</td>" in journey_page


def test_a_rule_with_only_what_is_needed_takes_the_service_defaults(app, designer, new_journey):
    slug = new_journey()
    r = submit(designer, f"/workspace/journeys/{slug}/rules/follow_up", _rule_fields(
        question_set="follow-up", touchpoint="telehealth", delay_hours="48", first_channel="sms", second_channel="",
        reminder_hours="", link_ttl_days="", fatigue_days="", window_start="", window_end="", exclude_codes="",
        hcahps="skip", active=None))
    assert r.status_code == 302, r.text
    assert rule_of(app, slug, "follow_up") == {
        "event": "follow_up", "question_set": "follow-up", "touchpoint": "telehealth", "delay_minutes": 2880,
        "channels": ["sms"], "reminder_hours": None, "link_ttl_days": None, "fatigue_days": None,
        "window_start": None, "window_end": None, "exclude_codes": [], "hcahps": "skip", "active": False}


def test_a_rule_is_created_for_an_event_type_without_one(app, designer, new_journey):
    slug = new_journey(journey={"rules": []})
    page = designer.get(f"/workspace/journeys/{slug}")
    assert "No rule: these events send nothing." in page.text
    rule_page = designer.get(f"/workspace/journeys/{slug}/rules/discharge")
    assert rule_page.status_code == 200 and "Try it against a sample event" not in rule_page.text
    r = submit(designer, f"/workspace/journeys/{slug}/rules/discharge",
               _rule_fields(question_set="discharge", touchpoint="discharge-desk", delay_hours="48"))
    assert r.status_code == 302
    assert rule_of(app, slug, "discharge")["delay_minutes"] == 2880


def test_a_rule_offers_no_question_set_or_touchpoint_of_a_retired_stage(app, designer, new_journey):
    slug = new_journey()
    submit(designer, f"/workspace/stage/{ids(app, slug, 'visit')}/retire", {})
    submit(designer, f"/workspace/touchpoint/{ids(app, slug, 'booking', 'online-booking')}/retire", {})
    page = designer.get(f"/workspace/journeys/{slug}/rules/booking").text
    assert 'value="booking"' in page and 'value="reception"' not in page and 'value="online-booking"' not in page
    before = rule_of(app, slug, "booking")
    r = submit(designer, f"/workspace/journeys/{slug}/rules/booking", _rule_fields(touchpoint="online-booking"))
    assert r.status_code == 422 and "Not a valid choice" in field_error(r.text, "rule-touchpoint")
    assert rule_of(app, slug, "booking") == before


def test_a_rule_sends_at_once_when_the_wait_is_zero_hours(app, designer, new_journey):
    """The form's own range starts at 0 hours and the rule allows 0 minutes: "send right away"."""
    slug = new_journey()
    r = submit(designer, f"/workspace/journeys/{slug}/rules/booking", _rule_fields(delay_hours="0"))
    assert r.status_code == 302, field_error(r.text, "rule-delay_hours")
    assert rule_of(app, slug, "booking")["delay_minutes"] == 0


@pytest.mark.parametrize("overrides, field, message", [
    ({"window_start": "07:00", "window_end": "12:00"}, "rule-window_start",
     "must lie within the service's sending hours, 08:00 to 20:00"),
    ({"window_start": "09:00", "window_end": "20:30"}, "rule-window_start", "08:00 to 20:00"),
    ({"window_start": "18:00", "window_end": "09:00"}, "rule-window_start", "the start must come before the end"),
    ({"window_start": "10:00", "window_end": "10:00"}, "rule-window_start", "the start must come before the end"),
    ({"window_start": "10:00", "window_end": ""}, "rule-window_start", "give both ends"),
    ({"window_start": "", "window_end": "18:00"}, "rule-window_start", "give both ends"),
    ({"window_start": "9am", "window_end": "18:00"}, "rule-window_start", "a time as HH:MM"),
    ({"window_start": "09:00", "window_end": "24:00"}, "rule-window_end", "a time as HH:MM"),
    ({"reminder_hours": "120", "link_ttl_days": "5"}, "rule-reminder_hours", "before the link expires"),
    ({"reminder_hours": "0"}, "rule-reminder_hours", "Number must be between 1 and 720"),
    ({"reminder_hours": "1.5"}, "rule-reminder_hours", "Not a valid integer value"),
    ({"link_ttl_days": "91"}, "rule-link_ttl_days", "Number must be between 1 and 90"),
    ({"fatigue_days": "0"}, "rule-fatigue_days", "Number must be between 1 and 365"),
    ({"delay_hours": "-1"}, "rule-delay_hours", "Number must be between 0 and 8760"),
    ({"delay_hours": "soon"}, "rule-delay_hours", "Not a valid float value"),
    ({"delay_hours": ""}, "rule-delay_hours", "required"),
    ({"question_set": "no-such-set"}, "rule-question_set", "Not a valid choice"),
    ({"touchpoint": "discharge-desk"}, "rule-touchpoint", "a touchpoint of stage Booking"),
    ({"first_channel": "fax"}, "rule-first_channel", "Not a valid choice"),
    ({"hcahps": "maybe"}, "rule-hcahps", "Not a valid choice"),
    ({"exclude_codes": "X" * 65}, "rule-exclude_codes", "a list of codes"),
], ids=["window-before-8", "window-after-20", "end-before-start", "empty-window", "start-only", "end-only",
        "start-not-hhmm", "end-24", "reminder-after-expiry", "reminder-0", "reminder-fraction", "ttl-91",
        "fatigue-0", "negative-delay", "delay-words", "no-delay", "unknown-set", "touchpoint-of-another-stage",
        "unknown-channel", "unknown-hcahps", "code-too-long"])
def test_an_invalid_rule_is_refused_and_the_saved_rule_kept(app, designer, new_journey, overrides, field, message):
    slug = new_journey()
    before, audit = rule_of(app, slug, "booking"), last_audit_id(app)
    r = submit(designer, f"/workspace/journeys/{slug}/rules/booking", _rule_fields(**overrides))
    assert r.status_code == 422
    assert message in (field_error(r.text, field) or ""), (field_error(r.text, field), r.text)
    assert rule_of(app, slug, "booking") == before and audits_since(app, audit) == []


def test_the_same_channel_twice_is_refused_on_the_channel_fields(app, designer, new_journey):
    slug = new_journey()
    before = rule_of(app, slug, "booking")
    r = submit(designer, f"/workspace/journeys/{slug}/rules/booking",
               _rule_fields(first_channel="sms", second_channel="sms"))
    assert r.status_code == 422 and "each once" in r.text
    assert rule_of(app, slug, "booking") == before
    shown_on = [f for f in ("rule-first_channel", "rule-second_channel", "rule-question_set")
                if field_error(r.text, f) and "each once" in field_error(r.text, f)]
    assert shown_on and shown_on[0] != "rule-question_set", f"the channel error is shown under {shown_on}"


def test_a_reminder_after_the_default_link_lifetime_is_refused(app, designer, new_journey):
    """With the link's lifetime left empty the service's 14 days apply: a reminder 400 hours
    (16.7 days) after sending would carry a dead link."""
    slug = new_journey()
    assert app.config["FEEDBACK_LINK_TTL_DAYS"] * 24 < 400
    before = rule_of(app, slug, "booking")
    r = submit(designer, f"/workspace/journeys/{slug}/rules/booking",
               _rule_fields(reminder_hours="400", link_ttl_days=""))
    assert r.status_code == 422, "a reminder after the default link lifetime was saved"
    assert rule_of(app, slug, "booking") == before


def test_an_unknown_event_type_has_no_rule_page(designer, new_journey):
    assert designer.get(f"/workspace/journeys/{new_journey()}/rules/checkout").status_code == 404


def _tz_where_due_is_at(due: datetime, hour: int) -> str:
    """A fixed-offset zone in which `due` falls in this local hour."""
    offset = (hour - due.hour + 12) % 24 - 12
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


def test_a_saved_rule_schedules_events_by_its_wait_window_channels_and_link(app, client, auth, designer, new_journey):
    slug = new_journey()
    submit(designer, f"/workspace/journeys/{slug}/rules/booking", _rule_fields(
        delay_hours="2", window_start="09:00", window_end="10:00", first_channel="email", second_channel="sms",
        link_ttl_days="3", exclude_codes="ONC"))
    occurred = NOW().replace(microsecond=0) - timedelta(hours=1)
    due = occurred + timedelta(hours=2)
    tz = _tz_where_due_is_at(due, 11)  # after the rule's window: the next morning at 09:00
    # An address of the test's own: earlier tests opt the shared default address out.
    inv = post_event(client, auth, event_body(journey=slug, occurred_at=occurred, timezone=tz,
                                              email=f"{uid('due')}@example.org"))
    local_due = due.astimezone(ZoneInfo(tz))
    expected = datetime.combine(local_due.date() + timedelta(days=1), time(9), tzinfo=ZoneInfo(tz))
    assert (inv["status"], inv["channel"], inv["touchpoint"]) == ("scheduled", "email", "online-booking")
    assert datetime.fromisoformat(inv["send_at"]) == expected
    with app.app_context():
        row = db.session.get(Invitation, inv["id"])
        assert (row.link_ttl_days, row.channels) == (3, "email,sms")

    # Due inside the window: sent when due, exactly the rule's wait after the event.
    tz = _tz_where_due_is_at(due, 9)
    inv = post_event(client, auth, event_body(journey=slug, occurred_at=occurred, timezone=tz,
                                              email=f"{uid('due')}@example.org"))
    assert datetime.fromisoformat(inv["send_at"]) == due
    # JSON events carry no codes, so the rule's exclusions cannot apply to them.
    assert inv["status"] == "scheduled"


def test_a_rule_turned_off_sends_nothing(app, client, auth, designer, new_journey):
    slug = new_journey()
    submit(designer, f"/workspace/journeys/{slug}/rules/booking", _rule_fields(active=None))
    recorded = post_events(client, auth, event_body(journey=slug))
    assert (recorded["invitations"], recorded["reason"]) == ([], "no-rule")


def test_a_rule_fatigue_window_of_its_own_is_honoured(app, client, auth, designer, new_journey):
    slug = new_journey()
    submit(designer, f"/workspace/journeys/{slug}/rules/follow_up", _rule_fields(
        question_set="follow-up", touchpoint="follow-up-visit", delay_hours="1", window_start="", window_end="",
        fatigue_days="2"))
    first = event_body("booking", journey=slug, occurred_at=NOW() - timedelta(days=4),
                       email=f"{uid('tired')}@example.org")
    assert post_event(client, auth, first)["status"] == "scheduled"
    later = event_body("follow_up", journey=slug, occurred_at=NOW() - timedelta(days=1), id=first["patient"]["id"],
                       email=first["patient"]["email"], phone=first["patient"]["phone"])
    # 30 days by default; this rule says 2 days, and the booking survey went out about 3 days before.
    assert post_event(client, auth, later)["status"] == "scheduled"


# ------------------------------------------------------------------------------------------- rules and hospital codes

@pytest.fixture
def hl7_feed(app):
    """An API key of the test's own: its source, and its header."""
    name = uid("hl7ws")
    result = app.test_cli_runner().invoke(args=["api-key", "create", name])
    assert result.exit_code == 0, result.output
    return name, {"Authorization": f"Bearer {result.stdout.strip().splitlines()[0]}"}


def _hl7_booking(client, headers, location: str, department: str) -> None:
    text = fresh_hl7(SIU_S12, control_id=uid("ctl"), PV1_3=location, PV1_10=department,
                     PID_3=f"{uid('mrn')}^^^HOSP^MR", SCH_2=uid("appt"), PID_7="19800101",
                     PID_13=f"{new_phone()}^PRN^CP")
    r = client.post("/api/v1/hl7v2", data=text.encode(),
                    headers={**headers, "Content-Type": "x-application/hl7-v2+er7"})
    assert r.status_code == 200 and ack_code(r.get_data(as_text=True)) == "AA", r.get_data(as_text=True)


def _events_of(app, source: str) -> list[tuple]:
    with app.app_context():
        return [(e.journey.slug if e.journey else None, e.skip_reason, [i.status for i in e.invitations])
                for e in db.session.scalars(select(Event).where(Event.source == source).order_by(Event.id))]


def test_a_hospital_event_with_an_excluded_code_is_not_surveyed(app, client, designer, new_journey, routes, hl7_feed):
    slug = new_journey()
    location = uid("LOC").upper()
    routes({"match": {"location": [location]}, "journey": slug})
    submit(designer, f"/workspace/journeys/{slug}/rules/booking", _rule_fields(exclude_codes="ONC\nPSY7",
                                                                              window_start="", window_end=""))
    source, headers = hl7_feed
    _hl7_booking(client, headers, location, "ONC")
    _hl7_booking(client, headers, location, "CARD")
    assert _events_of(app, source) == [(slug, "excluded-by-rule", []), (slug, None, ["scheduled"])]


def test_excluded_codes_match_whatever_their_case(app, client, designer, new_journey, routes, hl7_feed):
    """Routes and sensitive service lines match codes case-insensitively (config/mapping.yaml); a
    rule's exclusions typed in lower case must catch the same code sent in upper case."""
    slug = new_journey()
    location = uid("LOC").upper()
    routes({"match": {"location": [location]}, "journey": slug})
    submit(designer, f"/workspace/journeys/{slug}/rules/booking", _rule_fields(exclude_codes="onc",
                                                                              window_start="", window_end=""))
    source, headers = hl7_feed
    _hl7_booking(client, headers, location, "ONC")
    assert _events_of(app, source) == [(slug, "excluded-by-rule", [])]


# ------------------------------------------------------------------------------------------------------ trying a rule

def _trial(occurred_local: datetime, **overrides) -> dict:
    fields = {"form": "trial", "trial-occurred_at": occurred_local.strftime("%Y-%m-%dT%H:%M"),
              "trial-timezone": "America/Chicago", "trial-phone": new_phone(), "trial-email": "pat@example.org",
              "trial-consent_sms": "y", "trial-consent_email": "y", "trial-locale": "en", "trial-codes": ""}
    fields.update({f"trial-{k}": v for k, v in overrides.items()})
    return {k: v for k, v in fields.items() if v is not None}


def _outcome(html: str) -> str:
    m = re.search(r'<div class="outcome".*?</div>', html, re.S)
    assert m, "no outcome on the page"
    return unescape(m.group(0))


def test_trying_a_rule_says_when_and_how_and_stores_nothing(app, designer, new_journey):
    slug = new_journey(journey={"name": "Oncology day unit"})
    submit(designer, f"/workspace/journeys/{slug}/rules/booking", _rule_fields(
        delay_hours="2", first_channel="sms", second_channel="email", window_start="09:00", window_end="17:00",
        reminder_hours="24", exclude_codes="ONC"))
    chicago = ZoneInfo("America/Chicago")
    occurred = datetime.combine(NOW().astimezone(chicago).date() - timedelta(days=1), time(16, 30))
    before, audit = counts(app), last_audit_id(app)
    r = submit(designer, f"/workspace/journeys/{slug}/rules/booking", _trial(occurred))
    assert r.status_code == 200
    out = _outcome(r.text)
    send = datetime.combine(occurred.date() + timedelta(days=1), time(9), tzinfo=chicago)  # 18:30 is after 17:00
    assert f"Would be sent by text message on {send:%A %d %B %Y at %H:%M %Z}." in out
    assert f"Reminder, if unanswered: about {send + timedelta(hours=24):%A %d %B %H:%M %Z}" in out
    assert "The rule waits 2 h 00 min" in out and "between 09:00 and 17:00" in out
    assert "never surveyed: ONC" in out
    body = re.search(r'<pre class="message">(.*?)</pre>', out, re.S).group(1)
    assert "Hi Alex, Riverside Health would like to hear about your recent experience" in body
    assert "Reply STOP to opt out." in body
    for clinical in ("Oncology", "Booking", "booking", "Online booking", "ONC"):
        assert clinical not in body
    assert counts(app) == before and audits_since(app, audit) == []


def test_a_trial_reminder_is_shown_when_the_sending_hours_allow_it(app, designer, new_journey):
    """The page says the reminder comes "within sending hours", and the reminder job waits for
    them (reminders._remind: next_send_time in the rule's window): 13 hours after a 09:00 send is
    22:00, so the reminder goes the next morning at 09:00."""
    slug = new_journey()
    submit(designer, f"/workspace/journeys/{slug}/rules/booking", _rule_fields(
        delay_hours="2", first_channel="sms", second_channel="", window_start="09:00", window_end="17:00",
        reminder_hours="13", link_ttl_days="5"))
    chicago = ZoneInfo("America/Chicago")
    occurred = datetime.combine(NOW().astimezone(chicago).date() - timedelta(days=1), time(16, 30))
    out = _outcome(submit(designer, f"/workspace/journeys/{slug}/rules/booking", _trial(occurred)).text)
    send = datetime.combine(occurred.date() + timedelta(days=1), time(9), tzinfo=chicago)
    assert f"on {send:%A %d %B %Y at %H:%M %Z}." in out
    reminder = re.search(r"Reminder, if unanswered: about (.*?) \(within sending hours\)", out).group(1)
    expected = datetime.combine(send.date() + timedelta(days=1), time(9), tzinfo=chicago)
    assert reminder == f"{expected:%A %d %B %H:%M %Z}", f"the trial shows the reminder at {reminder}"


@pytest.mark.parametrize("overrides, reason", [
    ({"consent_sms": None, "consent_email": None}, "no-consent"),
    ({"phone": "", "email": ""}, "no-contact"),
    ({"codes": "CARD, ONC"}, "excluded-by-rule"),
], ids=["no-consent", "no-contact", "excluded"])
def test_trying_a_rule_says_why_it_would_not_send(app, designer, new_journey, overrides, reason):
    slug = new_journey()
    submit(designer, f"/workspace/journeys/{slug}/rules/booking", _rule_fields(exclude_codes="ONC"))
    before = counts(app)
    r = submit(designer, f"/workspace/journeys/{slug}/rules/booking", _trial(datetime.now() - timedelta(hours=3),
                                                                             **overrides))
    assert r.status_code == 200
    out = _outcome(r.text)
    assert f"Would not be sent: {reason}." in out and "What the patient would get" not in out
    assert counts(app) == before


def test_trying_a_rule_by_email_shows_the_subject_and_body(app, designer, new_journey):
    slug = new_journey()
    submit(designer, f"/workspace/journeys/{slug}/rules/booking", _rule_fields(first_channel="email",
                                                                              second_channel=""))
    r = submit(designer, f"/workspace/journeys/{slug}/rules/booking",
               _trial(datetime.now() - timedelta(days=1), locale="es", phone=""))
    out = _outcome(r.text)
    assert "Would be sent by email" in out
    assert "Subject:</strong> ¿Cómo fue su experiencia" in out


@pytest.mark.parametrize("overrides, field, message", [
    ({"occurred_at": ""}, "trial-occurred_at", "This field is required."),
    ({"occurred_at": "yesterday"}, "trial-occurred_at", "This field is required."),
    ({"timezone": "Mars/Olympus"}, "trial-timezone", "an IANA time zone"),
    ({"locale": ""}, "trial-locale", "This field is required."),
], ids=["no-time", "bad-time", "bad-zone", "no-locale"])
def test_an_invalid_trial_shows_the_field_error(app, designer, new_journey, overrides, field, message):
    slug = new_journey()
    before = counts(app)
    r = submit(designer, f"/workspace/journeys/{slug}/rules/booking", _trial(datetime.now(), **overrides))
    assert r.status_code == 422
    assert message in (field_error(r.text, field) or ""), r.text
    assert '<div class="outcome"' not in r.text and counts(app) == before


def test_no_trial_without_a_saved_rule(designer, new_journey):
    slug = new_journey(journey={"rules": []})
    r = submit(designer, f"/workspace/journeys/{slug}/rules/booking", _trial(datetime.now()))
    assert r.status_code == 404


# ------------------------------------------------------------------------------------------------ versions and scores

def test_responses_keep_their_version_and_scores_read_across_versions(app, client, auth, outbox, run_jobs, staff,
                                                                     designer, new_journey, monkeypatch):
    slug = new_journey()
    set_id = qs_id(app, slug, "booking")
    first = post_event(client, auth, event_body(journey=slug))
    # v2 keeps booking_satisfaction (reworded), drops booking_ease.
    _, fields = editor(designer, set_id)
    press(designer, set_id, {**fields, "q1-text-en": "How happy are you with booking?"}, "save")
    _, fields = editor(designer, set_id)
    press(designer, set_id, fields, "delete:0")
    _, fields = editor(designer, set_id)
    assert press(designer, set_id, fields, "publish").status_code == 302
    second = post_event(client, auth, event_body(journey=slug))
    assert (first["question_set_version"], second["question_set_version"]) == (1, 2)
    run_jobs()

    # The first patient still answers version 1, as it was sent.
    page = unescape(client.get(f"/s/{token_of(message_for(outbox, first['id']))}").text)
    assert "Booking my appointment was easy." in page and "How happy are you" not in page
    answer(client, outbox, first["id"], {"booking_ease": "7", "booking_satisfaction": "5"})
    answer(client, outbox, second["id"], {"booking_satisfaction": "3"})
    with app.app_context():
        versions = {r.invitation_id: r.question_set_version_id for r in db.session.scalars(
            select(Response).where(Response.invitation_id.in_([first["id"], second["id"]])))}
        v = {x.version: x.id for x in db.session.get(QuestionSet, set_id).versions}
        assert versions == {first["id"]: v[1], second["id"]: v[2]}
        journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
        rows = {r["question"]: (r["versions"], r["n"], r["score"])
                for r in question_scores(journey, date.today() - timedelta(days=1), 1)}
    assert rows == {"booking_satisfaction": ("v1-v2", 2, 75.0), "booking_ease": ("v1", 1, 0.0)}

    monkeypatch.setitem(app.config, "FEEDBACK_MIN_REPORTING_N", 1)
    scores = staff("manager").get(f"/dashboard/trends?journey={slug}").text
    assert re.search(r"<code>booking_satisfaction</code></td><td>satisfaction</td><td>v1-v2</td><td>2</td>"
                     r"<td>75.0</td>", scores)


# ------------------------------------------------------------------------------------------------------------ library

def _export_of(designer, *slugs: str) -> bytes:
    """The library as downloaded, cut down to these journeys' folders (the session's database
    holds every other test's journeys too)."""
    export = designer.get("/workspace/library/export.zip")
    assert export.status_code == 200 and export.mimetype == "application/zip"
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(export.data)) as full, zipfile.ZipFile(out, "w") as mine:
        for name in full.namelist():
            if name.split("/")[0] in slugs:
                mine.writestr(name, full.read(name))
    return out.getvalue()


def _import(designer, data: bytes, filename: str = "library.zip"):
    return designer.post("/workspace/library", data={"csrf_token": token(designer),
                                                     "archive": (io.BytesIO(data), filename)},
                         content_type="multipart/form-data")


def test_the_library_round_trips_through_a_zip(app, designer, new_journey):
    pytest.importorskip("feedback_service.journeys.yaml_io")
    slug = new_journey()
    data = _export_of(designer, slug)
    assert {f"{slug}/journey.yaml", f"{slug}/booking.yaml"} <= set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    before, audit = qs_state(app, qs_id(app, slug, "booking")), last_audit_id(app)
    r = _import(designer, data)
    assert r.status_code == 302, r.text
    assert "0 question-set versions published" in designer.get(r.headers["Location"]).text
    assert qs_state(app, qs_id(app, slug, "booking")) == before
    assert [a[:2] for a in audits_since(app, audit)] == [(designer.email, "library.import")]


def test_a_journey_made_in_the_workspace_can_be_exported_and_imported_again(app, designer):
    """A journey just created (no stages yet) is in the download; the download must import."""
    pytest.importorskip("feedback_service.journeys.yaml_io")
    slug = uid("new")
    assert submit(designer, "/workspace/journeys", {"name": "New", "slug": slug, "locales": "en"}).status_code == 302
    data = _export_of(designer, slug)
    assert f"{slug}/journey.yaml" in zipfile.ZipFile(io.BytesIO(data)).namelist()
    r = _import(designer, data)
    assert r.status_code == 302, re.findall(r"<li><code>(.*?)</code></li>", r.text)


def test_an_import_that_is_not_a_zip_is_refused(app, designer):
    pytest.importorskip("feedback_service.journeys.yaml_io")
    audit = last_audit_id(app)
    r = _import(designer, b"not a zip")
    assert r.status_code == 422 and "the file is not a zip archive" in r.text
    r = _import(designer, b"PK", filename="library.tar")
    assert r.status_code == 422 and field_error(r.text, "archive") == "a .zip file"
    assert audits_since(app, audit) == []
