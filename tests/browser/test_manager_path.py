"""The managers' "Done when", clicked through in a real browser: with a journey's answers in, a
manager opens the journey map and sees at a glance which stage and touchpoint has the most
friction, clicks through to its trend and its comments, and exports the CSV; a low score raises an
alert that is acknowledged and resolved. A designer is turned away. Every dashboard page on the way
is checked by axe (WCAG 2 A and AA), and any violation, whatever its impact, fails the test.

The data is a journey of the test's own (the demo refuses a database holding other events): three
touchpoints of 12 answers each, over the reporting threshold of 11, phone booking clearly the worst.
Everything goes through the real intake, dispatcher and response service on the session's database,
the one the dev server serves."""
from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET

from sqlalchemy import select

from feedback_service.alerts.models import Alert
from feedback_service.alerts.services import save_rule
from feedback_service.extensions import db
from feedback_service.insights.feed import CSV_COLUMNS
from feedback_service.journeys.models import Journey
from feedback_service.responses.services import record_response
from feedback_service.scheduling.models import Invitation
from tests.browser.conftest import axe, describe, expect, sign_in
from tests.conftest import event_body, run_jobs_of, staff_user, uid, worst_answer
from tests.e2e.test_newcomer import wait_for

PER_TOUCHPOINT = 12  # one over FEEDBACK_MIN_REPORTING_N (11): every answered cell is shown
# booking_ease is effort 1-7, better high: 2 is friction 83.3, 6 is 16.7; discharge_smooth 5 is 33.3.
# None of these is at the bad end of a scale, so no alert is raised before the test asks for one.
HOLD = ["I was on hold for forty minutes before anyone answered.", "On hold again, then the line dropped.",
        "Kept on hold, nobody picked up the phone."]
GROUPS = [  # (event type, touchpoint, answers, comments taken in turn)
    ("booking", "phone-booking", {"booking_ease": "2", "booking_satisfaction": "2"}, HOLD),
    ("booking", "online-booking", {"booking_ease": "6", "booking_satisfaction": "5"},
     ["Quick and easy online.", ""]),
    ("discharge", "discharge-desk", {"discharge_smooth": "5", "home_information": "4", "recommend": "8"},
     ["The paperwork was slow but the nurse was kind.", "Paperwork took a while.", ""]),
]
WORST = ("Booking", "Booking by phone", "booking", "phone-booking", 83.3)  # stage, touchpoint, slugs, friction


def answer_groups(app, auth, slug: str) -> None:
    """PER_TOUCHPOINT events on each of GROUPS' touchpoints, posted, sent and answered."""
    bodies, values = [], []
    for kind, touchpoint, answers, comments in GROUPS:
        for i in range(PER_TOUCHPOINT):
            bodies.append(event_body(kind, journey=slug, touchpoint=touchpoint, email=f"{uid('mgr')}@example.org"))
            comment = comments[i % len(comments)]
            values.append({**answers, "comment": comment} if comment else dict(answers))
    client = app.test_client()
    r = client.post("/api/v1/events", json=bodies, headers=auth)
    assert r.status_code == 202, r.get_json()
    ids = [e["invitations"][0]["id"] for e in r.get_json()["events"]]
    run_jobs_of(app)

    def statuses():
        with app.app_context():
            return set(db.session.scalars(select(Invitation.status).where(Invitation.id.in_(ids))))
    # The dev server's worker shares the database and may be sending some of them itself.
    assert wait_for(lambda: statuses() == {"sent"}, timeout=20), statuses()
    with app.app_context():
        for inv_id, answers in zip(ids, values):
            record_response(db.session.get(Invitation, inv_id), answers)


def heat_level(classes: str) -> int | None:
    found = re.search(r"\bheat-(\d)\b", classes)
    return int(found.group(1)) if found else None


def test_a_manager_finds_the_worst_touchpoint_follows_it_exports_and_closes_an_alert(site, app, auth, new_journey,
                                                                                     new_page):
    base, _outbox = site
    slug = new_journey(journey={"name": "Manager path " + uid("j")})
    answer_groups(app, auth, slug)
    stage_name, tp_name, stage_slug, tp_slug, friction = WORST
    violations: list[str] = []

    def audit(page, what: str) -> None:
        """axe on the page; every violation, minor ones included, is kept for the end of the test."""
        found = axe(page)
        if found:
            violations.append(f"{what} ({page.url}):\n{describe(found)}")

    manager = staff_user(app, "manager")
    page = new_page()
    sign_in(page, base, manager)

    # The journey map: the headline names the worst touchpoint and stage, and its cell is the darkest.
    page.goto(f"{base}/dashboard?journey={slug}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Journey map")
    headline = page.locator("p.headline")
    expect(headline).to_have_text(f"Most friction: {tp_name} ({stage_name}), friction {friction} of 100.")
    expect(page.locator("p.hint").first).to_contain_text("fewer than 11 responses")
    table = page.locator("table.journey-map")
    row = table.locator("tbody tr").filter(has=page.get_by_role("rowheader", name=re.compile(f"^{tp_name} ")))
    worst = row.locator("td.cell")
    expect(worst.locator(".metric").first).to_have_text(f"Friction {friction}")
    shown_friction = worst.locator(".metric strong").first.inner_text()
    expect(worst.locator(".meta")).to_have_text(f"n = {PER_TOUCHPOINT} · 100% answered")
    cells = table.locator("td.cell").evaluate_all("cells => cells.map(c => c.className)")
    shown = [heat_level(c) for c in cells if heat_level(c) is not None]
    assert len(shown) == 5, cells  # Booking and Discharge, and their 3 touchpoints; the rest suppressed
    assert heat_level(worst.get_attribute("class")) == 4 and shown.count(4) == 1, cells
    assert sum("suppressed" in c for c in cells) == len(cells) - 5, cells
    expect(row.locator("td.cell", has_text="Suppressed")).to_have_count(0)
    expect(table.locator("td.cell.suppressed").first).to_contain_text("Suppressed")
    audit(page, "the journey map")

    # Its cell leads to the stage's trend, filtered to the touchpoint: a chart and its data table.
    worst.get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"/dashboard/trends\?.*stage={stage_slug}.*touchpoint={tp_slug}"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Trends")
    section = page.locator("section.trend").filter(has=page.get_by_role("heading", name=stage_name, exact=True))
    chart = section.locator("img.chart")
    expect(chart).to_have_attribute("alt", re.compile(r"\w{3,}"))
    expect(chart).to_have_js_property("complete", True)
    assert chart.evaluate("img => img.naturalWidth") > 0, "the chart did not load"
    svg = page.request.get(chart.evaluate("img => img.src"))
    assert svg.status == 200 and svg.headers["content-type"].startswith("image/svg+xml"), svg.headers
    assert ET.fromstring(svg.body()).tag == "{http://www.w3.org/2000/svg}svg"
    section.get_by_text(f"Data table for {stage_name}").click()
    data = section.get_by_role("table")
    expect(data).to_be_visible()
    expect(data.locator("tbody tr").filter(has_text=f"{friction} (")).to_have_count(1)
    audit(page, "the trends page, data table open")

    # Its comments: the stage's and touchpoint's, searched for a word the patients used.
    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Comments").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Comments")
    page.get_by_label("Comments containing").fill("hold")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(rf"stage={stage_slug}.*q=hold"))
    found = page.locator("ul.comments > li")
    expect(found).to_have_count(PER_TOUCHPOINT)
    for text in found.locator("blockquote").all_inner_texts():
        assert text in HOLD, text
    expect(found.locator("p.hint").first).to_contain_text(f"{stage_name} · {tp_name}")
    expect(page.locator("ul.themes a", has_text="hold").first).to_be_visible()  # "on hold", in 12 comments
    audit(page, "the comments page, searched, with themes")

    # The whole map as CSV: the header of the feed, and the worst cell's friction as shown.
    page.goto(f"{base}/dashboard?journey={slug}")
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    download = info.value
    assert download.suggested_filename.startswith(f"{slug}-map-") and download.suggested_filename.endswith(".csv")
    with open(download.path(), newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    [cell] = [r for r in rows if (r["stage"], r["touchpoint"], r["level"], r["metric"]) == (
        stage_slug, tp_slug, "touchpoint", "friction")]
    assert cell["value"] == shown_friction and cell["n"] == str(PER_TOUCHPOINT) and cell["suppressed"] == "false"

    # The funnel, under the same filters.
    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Funnel").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Response funnel")
    booking = page.locator("table.funnel tbody tr").filter(has=page.get_by_role("rowheader", name=stage_name))
    expect(booking.locator("td").nth(6)).to_have_text(str(2 * PER_TOUCHPOINT))  # answered
    audit(page, "the funnel")

    # A low score with an alert rule on raises an alert: the map flags it on its stage.
    with app.app_context():
        journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
        save_rule(journey, None, low_satisfaction=True, high_friction=True, terms=[], active=True)
        db.session.commit()
    alert_id = worst_answer(app, slug)
    assert alert_id is not None
    page.goto(f"{base}/dashboard?journey={slug}")
    page.get_by_role("link", name="1 open alert").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Alerts")
    listed = page.locator("table").nth(1).locator("tbody tr")
    expect(listed).to_have_count(1)
    expect(listed).to_contain_text(f"{stage_name} · {tp_name}")
    audit(page, "the alerts list, one open")
    listed.get_by_role("link").click()
    expect(page).to_have_url(f"{base}/dashboard/alerts/{alert_id}")
    state = page.locator("dl.facts dt:text-is('State') + dd")
    expect(state).to_have_text("open")

    page.get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_role("status")).to_have_text("Alert acknowledged.")
    expect(state).to_have_text("acknowledged")
    expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)

    # Resolving needs a note: without one, the error is shown and nothing changes.
    page.get_by_role("button", name="Resolve").click()
    note = page.get_by_label("What was done")
    expect(note).to_have_attribute("aria-invalid", "true")
    expect(page.locator("p.error")).to_have_text("say what was done")
    expect(state).to_have_text("acknowledged")
    with app.app_context():
        alert = db.session.get(Alert, alert_id)
        assert (alert.state, alert.resolved_at, alert.note) == ("acknowledged", None, None)
    audit(page, "an alert, resolve refused for want of a note")

    note.fill("Called the patient back; the phone line gets a second person at 9am.")
    page.get_by_role("button", name="Resolve").click()
    expect(page.get_by_role("status")).to_have_text("Alert resolved.")
    expect(state).to_have_text("resolved")
    expect(page.get_by_role("button", name="Resolve")).to_have_count(0)
    with app.app_context():
        assert db.session.get(Alert, alert_id).state == "resolved"

    # The alerts page shows the hours from the journey moment (three days ago) to acknowledgement.
    page.get_by_role("link", name="All alerts").click()
    stages = page.locator("table").first.locator("tbody tr").filter(
        has=page.get_by_role("rowheader", name=stage_name, exact=True))
    expect(stages.locator("td").nth(3)).to_have_text("1")  # resolved
    hours = float(stages.locator("td").nth(4).inner_text())  # hours to acknowledge
    assert 71 <= hours <= 73, hours
    audit(page, "the alerts list, one resolved")

    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Alert rules").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Alert rules")
    expect(page.get_by_role("group", name=re.compile("^Whole journey")).get_by_label("On", exact=True)).to_be_checked()
    audit(page, "the alert rules")

    # A designer is turned away from the dashboard.
    designer = new_page()
    sign_in(designer, base, staff_user(app, "designer"))
    for path in ("/dashboard", f"/dashboard/alerts/{alert_id}", f"/dashboard/map.csv?journey={slug}"):
        assert designer.goto(base + path).status == 403, path
    expect(designer.get_by_role("heading", level=1)).to_have_text("This page is not for your role")

    assert not violations, "axe found violations:\n" + "\n".join(violations)
