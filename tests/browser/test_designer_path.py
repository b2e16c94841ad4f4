"""The issue's "Done when", clicked through in a real browser: a designer who has never seen the
tool signs in, builds a discharge question set in English and Spanish, previews it on a phone frame,
publishes it, attaches it to the discharge rule with a 48-hour delay, and sees the next discharge
event schedule it; a manager cannot do any of that; the audit log shows it all. Every page on the
way, and the patient's survey page, passes axe (no serious or critical WCAG 2 A/AA violation)."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import requests

from tests.browser.conftest import PASSWORD, TIMEOUT_MS, assert_accessible, axe, expect, sign_in
from tests.conftest import event_body, outbox_lines
from tests.e2e.test_newcomer import wait_for

EN_TITLE, ES_TITLE = "Going home from hospital", "Volver a casa desde el hospital"
# The first draft of question 1 asks two things at once, so the editor shows a writing tip.
EN_Q1_DRAFT, ES_Q1_DRAFT = "Were the nurses kind and helpful?", "¿Las enfermeras fueron amables y atentas?"
EN_Q1, ES_Q1 = "How well did we prepare you to go home?", "¿Cómo le preparamos para volver a casa?"
EN_Q2, ES_Q2 = "Do you know who to call with a question?", "¿Sabe a quién llamar si tiene una pregunta?"


def test_a_new_designer_builds_publishes_and_schedules_a_bilingual_discharge_survey(site, cli, new_page, api_key):
    base, outbox = site
    run = uuid.uuid4().hex[:8]
    designer, manager, admin = (f"{role}-{run}@staff.test" for role in ("designer", "manager", "admin"))
    for email, role in ((designer, "designer"), (manager, "manager"), (admin, "admin")):
        cli("user", "create", email, "--role", role, "--password", PASSWORD)
    slug, key = f"home-{run}", "discharge-home"

    # Sign in: the designer lands on the journeys page.
    page = new_page()
    page.goto(f"{base}/login")
    assert_accessible(page, "the sign-in page")
    sign_in(page, base, designer)
    expect(page.get_by_role("heading", name="Journeys", exact=True)).to_be_visible()

    # A journey of the test's own, in English and Spanish, with a Discharge stage and touchpoint.
    page.get_by_label("Name", exact=True).fill(f"Home from hospital {run}")
    page.get_by_label("Short name (in URLs and files)").fill(slug)
    page.get_by_label("Languages (codes, the fallback first)").fill("en es")
    page.get_by_role("button", name="Create journey").click()
    expect(page).to_have_url(f"{base}/workspace/journeys/{slug}")
    add_stage = page.locator("form", has=page.get_by_role("button", name="Add stage"))
    add_stage.get_by_label("Stage name").fill("Discharge")
    add_stage.get_by_label("Short name").fill("discharge")
    add_stage.get_by_role("button", name="Add stage").click()
    expect(page.get_by_role("heading", name="Discharge discharge", level=3)).to_be_visible()
    page.get_by_text("Add a touchpoint to Discharge").click()
    add_touchpoint = page.locator("form", has=page.get_by_role("button", name="Add touchpoint"))
    add_touchpoint.get_by_label("Touchpoint name").fill("Going home")
    add_touchpoint.get_by_label("Short name").fill("going-home")
    add_touchpoint.get_by_role("button", name="Add touchpoint").click()
    expect(page.get_by_text("Going home (")).to_be_visible()
    assert_accessible(page, "the journey page")

    # A new question set for the Discharge stage opens in the editor.
    new_set = page.locator("section", has=page.get_by_role("heading", name="New question set"))
    new_set.get_by_label("Stage").select_option(label="Discharge")
    new_set.get_by_label("Short name of the question set").fill(key)
    new_set.get_by_role("button", name="Create and edit").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(base)}/workspace/question-sets/\d+(#.*)?$"))
    editor_url = page.url.split("#")[0]

    # Publishing the blank set straight away is refused, and the editor says what is missing.
    page.get_by_role("button", name="Publish as version 1").click()
    expect(page.get_by_role("alert")).to_contain_text("Not published")
    expect(page.locator("section.problems")).to_contain_text("missing translation for en, es")
    assert_accessible(page, "the question-set editor refusing to publish")

    # Titles and the first question side by side, in English and Spanish.
    page.get_by_label("Title (en)").fill(EN_TITLE)
    page.get_by_label("Title (es)").fill(ES_TITLE)
    q1 = page.get_by_role("group", name="Question 1")
    q1.get_by_label("Question (en)").fill(EN_Q1_DRAFT)
    q1.get_by_label("Question (es)").fill(ES_Q1_DRAFT)
    for label, text in (("Lowest label (en)", "Not at all"), ("Highest label (en)", "Very well"),
                        ("Lowest label (es)", "Nada"), ("Highest label (es)", "Muy bien")):
        q1.get_by_label(label).fill(text)
    page.get_by_role("button", name="Save draft").first.click()
    guidance = page.locator("section.guidance")
    expect(guidance).to_contain_text("may ask two things at once")
    assert_accessible(page, "the question-set editor, two languages and writing tips showing")

    # The tip taken; a second question, yes or no, added and translated.
    q1.get_by_label("Question (en)").fill(EN_Q1)
    q1.get_by_label("Question (es)").fill(ES_Q1)
    page.get_by_label("Type of the new question").select_option(label="Yes or no")
    page.get_by_role("button", name="Add question").click()
    q2 = page.get_by_role("group", name="Question 2")
    q2.get_by_label("Question (en)").fill(EN_Q2)
    q2.get_by_label("Question (es)").fill(ES_Q2)
    page.get_by_role("button", name="Save draft").first.click()
    expect(page.locator("section.problems")).to_have_count(0)
    expect(guidance).to_have_count(0)

    # The preview: the patient's page on a phone frame, in Spanish.
    page.get_by_role("link", name="Preview in es").click()
    phone = page.frame_locator("iframe.phone-screen")
    expect(phone.get_by_role("heading", level=1)).to_have_text(ES_TITLE)
    expect(phone.get_by_text(ES_Q1)).to_be_visible()
    expect(phone.get_by_text(ES_Q2)).to_be_visible()
    expect(phone.locator("html")).to_have_attribute("lang", "es")
    assert_accessible(page, "the phone preview (es)")
    page.get_by_role("link", name="en", exact=True).click()
    expect(page.frame_locator("iframe.phone-screen").get_by_role("heading", level=1)).to_have_text(EN_TITLE)

    # Published as version 1.
    page.get_by_role("link", name="Back to the editor").click()
    page.get_by_role("button", name="Publish as version 1").click()
    expect(page.get_by_role("status").filter(has_text="Published as version 1.")).to_be_visible()

    # The discharge rule: this set, 48 hours after discharge, by text message.
    page.get_by_role("link", name=f"← Home from hospital {run}").click()
    page.get_by_role("link", name="Create Discharge rule").click()
    expect(page).to_have_url(f"{base}/workspace/journeys/{slug}/rules/discharge")
    page.get_by_label("Question set (its stage is surveyed)").select_option(key)
    page.get_by_label("Touchpoint, when the event names none").select_option("going-home")
    page.get_by_label("Wait after the event (hours)").fill("48")
    page.get_by_label("Send by").select_option(label="Text message (SMS)")
    page.get_by_role("button", name="Save rule").click()
    expect(page.get_by_role("status").filter(has_text="Discharge rule saved.")).to_be_visible()
    page.get_by_role("button", name="Try the rule").click()
    expect(page.locator(".outcome")).to_contain_text("Would be sent by text message")
    assert_accessible(page, "the discharge rule page, with a dry run's result")

    # The next discharge event is scheduled with the new set, 48 hours on.
    auth = {"Authorization": f"Bearer {api_key}"}
    occurred = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    r = requests.post(f"{base}/api/v1/events", headers=auth, timeout=10,
                      json=event_body("discharge", journey=slug, occurred_at=occurred))
    assert r.status_code == 202, r.text
    [invitation] = r.json()["invitations"]
    assert invitation["status"] == "scheduled", invitation
    assert (invitation["question_set"], invitation["question_set_version"]) == (key, 1)
    assert invitation["touchpoint"] == "going-home" and invitation["channel"] == "sms"
    assert datetime.fromisoformat(invitation["send_at"]) >= occurred + timedelta(hours=48)

    # A patient discharged three days ago gets it now, in Spanish; their page passes axe too.
    r = requests.post(f"{base}/api/v1/events", headers=auth, timeout=10,
                      json=event_body("discharge", journey=slug, locale="es"))
    assert r.status_code == 202, r.text
    [due] = r.json()["invitations"]
    assert due["status"] == "scheduled", due
    assert wait_for(lambda: any(m["invitation_id"] == due["id"] for m in outbox_lines(outbox)), timeout=20), \
        "the worker sent nothing"
    [message] = [m for m in outbox_lines(outbox) if m["invitation_id"] == due["id"]]
    patient = new_page()
    patient.goto(message["survey_url"])
    expect(patient.get_by_role("heading", level=1)).to_have_text(ES_TITLE)
    expect(patient.locator("html")).to_have_attribute("lang", "es")
    assert_accessible(patient, "the patient's survey page (es)")
    patient.get_by_role("group", name=re.compile(re.escape(ES_Q1))).get_by_role("radio").last.check()
    patient.get_by_role("group", name=re.compile(re.escape(ES_Q2))).get_by_role("radio", name="Sí").check()
    patient.get_by_role("button").last.click()
    expect(patient).to_have_url(re.compile(r"/thanks$"))

    # A manager can do none of it: every page and every change is refused.
    boss = new_page()
    sign_in(boss, base, manager)
    for path in (f"/workspace/journeys/{slug}", editor_url.removeprefix(base), editor_url.removeprefix(base) + "/preview",
                 f"/workspace/journeys/{slug}/rules/discharge"):
        assert boss.goto(base + path).status == 403, path
    expect(boss.get_by_role("heading", level=1)).to_have_text("This page is not for your role")
    assert_accessible(boss, "the page a manager gets instead")
    token = boss.locator("form.signout input[name=csrf_token]").get_attribute("value")
    for path, form in ((editor_url.removeprefix(base), {"action": "publish"}),
                       (f"/workspace/journeys/{slug}/rules/discharge",
                        {"form": "rule", "rule-question_set": key, "rule-touchpoint": "going-home",
                         "rule-delay_hours": "1", "rule-first_channel": "sms"})):
        refused = boss.request.post(base + path, form={"csrf_token": token, **form}, max_redirects=0,
                                    timeout=TIMEOUT_MS)
        assert refused.status == 403, (path, refused.status)

    # The audit log shows the designer's work, each change once.
    auditor = new_page()
    sign_in(auditor, base, admin)
    auditor.goto(f"{base}/admin/audit")
    auditor.get_by_label("By (email)").fill(designer)
    auditor.get_by_role("button", name="Filter").click()
    expect(auditor.get_by_label("By (email)")).to_have_value(designer)
    assert_accessible(auditor, "the audit log")
    actions = auditor.locator("table.audit tbody tr td:nth-child(3)").all_inner_texts()
    assert {"journey.create", "stage.create", "touchpoint.create", "question_set.create", "question_set.edit",
            "question_set.publish", "rule.save"} <= set(actions), actions
    assert actions.count("question_set.publish") == 1 and actions.count("rule.save") == 1
    assert set(auditor.locator("table.audit tbody tr td:nth-child(2)").all_inner_texts()) == {designer}
    assert not any(manager in row for row in auditor.locator("table.audit tbody tr").all_inner_texts())


def test_axe_reports_violations_in_the_page_and_in_its_frames(new_page):
    """The harness itself: known violations, one of them inside an iframe (as in the phone preview), fail.
    Served from an http origin of its own (intercepted, never fetched): axe reaches into frames by
    postMessage, which an about:blank page's opaque origin cannot do."""
    pages = {"http://axe.test/": '<html><head><title>Broken</title></head><body><main><img src="data:,">'
                                 '<iframe title="inner" src="/inner"></iframe></main></body></html>',
             "http://axe.test/inner": "<html lang=en><title>Inner</title><body><input></body></html>"}
    page = new_page()
    page.route("http://axe.test/**", lambda route: route.fulfill(body=pages[route.request.url],
                                                                 content_type="text/html"))
    page.goto("http://axe.test/")
    violations = {v["id"]: v for v in axe(page)}
    assert {"html-has-lang", "image-alt", "label"} <= set(violations), sorted(violations)
    assert [node["target"] for node in violations["label"]["nodes"]] == [["iframe", "input"]]
