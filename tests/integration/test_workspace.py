"""The issue's "Done when", through the Flask test client: a designer builds a discharge set in
English and Spanish, previews, publishes, attaches it to the discharge rule with a 48-hour delay and
the next discharge event schedules it; a manager can do none of it; the audit log shows it all."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from feedback_service.extensions import db
from feedback_service.journeys.models import Journey, QuestionSet
from feedback_service.staff.models import AuditEntry
from tests.conftest import csrf_of, event_body, uid

EN_ES = {
    "title-en": "Going home", "title-es": "Volver a casa",
    "q0-key": "going_home", "q0-type": "rating", "q0-measure": "satisfaction", "q0-better": "high",
    "q0-required": "1", "q0-text-en": "How well did we get you ready to go home?",
    "q0-text-es": "¿Qué tan bien lo preparamos para volver a casa?",
    "q0-low-en": "Not at all", "q0-high-en": "Very well", "q0-low-es": "Nada", "q0-high-es": "Muy bien",
}


def _post(client, url: str, data: dict):
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    return client.post(url, data={"csrf_token": csrf_of(page.text), **data})


def _journey_row(app, slug) -> Journey:
    with app.app_context():
        return db.session.scalar(select(Journey).where(Journey.slug == slug))


def test_designer_builds_publishes_and_attaches_a_discharge_set(app, staff, new_journey, client, auth):
    slug = new_journey()
    designer, manager = staff("designer"), staff("manager")
    with app.app_context():
        stage_id = db.session.scalar(select(Journey).where(Journey.slug == slug)).stage("discharge").id

    # Create the set on the discharge stage: it opens the editor on a blank draft.
    made = _post(designer, f"/workspace/journeys/{slug}", {"form": "question-set", "qs-key": "going-home",
                                                           "qs-stage": str(stage_id)})
    assert made.status_code == 302, made.text
    editor = made.location
    qs_id = int(editor.rsplit("/", 1)[-1])

    # Only English filled in: the Spanish gaps are flagged and publishing is refused.
    english_only = {k: v for k, v in EN_ES.items() if not k.endswith("-es")}
    refused = _post(designer, editor, {**english_only, "action": "publish"})
    assert refused.status_code == 422
    assert "Missing translations" in refused.text and "missing translation for es" in refused.text
    with app.app_context():
        qs = db.session.get(QuestionSet, qs_id)
        assert qs.versions == [] and qs.draft["title"]["en"] == "Going home"  # the draft is kept

    # Both languages, and a second question (free text) added with the editor's button.
    assert _post(designer, editor, {**EN_ES, "action": "add-question", "new_type": "text"}).status_code == 302
    both = {**EN_ES, "q1-key": "comment", "q1-type": "text", "q1-text-en": "Anything we could do better?",
            "q1-text-es": "¿Algo que podríamos hacer mejor?"}
    assert _post(designer, editor, {**both, "action": "save"}).status_code == 302

    # The preview is the patient's page, in each language, inside a phone frame.
    for locale, text in (("en", "How well did we get you ready"), ("es", "¿Qué tan bien lo preparamos")):
        frame_page = designer.get(f"{editor}/preview?locale={locale}")
        assert 'class="phone-screen"' in frame_page.text
        page = designer.get(f"{editor}/preview/page?locale={locale}")
        assert page.status_code == 200 and text in page.text and f'<html lang="{locale}">' in page.text
        assert 'name="going_home"' in page.text and 'name="comment"' in page.text

    published = _post(designer, editor, {**both, "action": "publish"})
    assert published.status_code == 302
    with app.app_context():
        qs = db.session.get(QuestionSet, qs_id)
        assert [v.version for v in qs.versions] == [1] and qs.draft is None
        assert qs.current.content["title"] == {"en": "Going home", "es": "Volver a casa"}
        assert [q["key"] for q in qs.current.questions] == ["going_home", "comment"]

    # Attach it to the discharge rule with a 48-hour delay.
    saved = _post(designer, f"/workspace/journeys/{slug}/rules/discharge", {
        "form": "rule", "rule-question_set": "going-home", "rule-touchpoint": "discharge-desk",
        "rule-delay_hours": "48", "rule-first_channel": "sms", "rule-second_channel": "email",
        "rule-hcahps": "skip", "rule-active": "y"})
    assert saved.status_code == 302, re.findall(r'class="error"[^>]*>([^<]+)', saved.text)

    # The next discharge event schedules it, 48 hours on, asking version 1 of the new set.
    occurred = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    posted = client.post("/api/v1/events", json=event_body("discharge", journey=slug, occurred_at=occurred),
                         headers=auth)
    assert posted.status_code == 202, posted.json
    invitation = posted.json["invitations"][0]
    assert invitation["status"] == "scheduled"
    assert (invitation["question_set"], invitation["question_set_version"]) == ("going-home", 1)
    assert datetime.fromisoformat(invitation["send_at"]) >= occurred + timedelta(hours=48)

    # A manager can do none of it.
    for url in (f"/workspace/journeys/{slug}", editor, f"{editor}/preview",
                f"/workspace/journeys/{slug}/rules/discharge", "/workspace/journeys"):
        assert manager.get(url).status_code == 403, url
    page = designer.get(editor)
    forged = manager.post(editor, data={"csrf_token": csrf_of(manager.get("/dashboard").text),
                                        **both, "q0-text-en": "Hijacked?", "action": "publish"})
    assert forged.status_code == 403 and page.status_code == 200
    with app.app_context():
        assert [v.version for v in db.session.get(QuestionSet, qs_id).versions] == [1]

    # The audit log shows it all, by the designer, readable by an admin.
    with app.app_context():
        actions = [e.action for e in db.session.scalars(
            select(AuditEntry).where(AuditEntry.actor == designer.email).order_by(AuditEntry.id))]
    assert actions[0] == "question_set.create"
    assert {"question_set.edit", "question_set.publish", "rule.save"} <= set(actions)
    admin = staff("admin")
    log = admin.get(f"/admin/audit?actor={designer.email}")
    assert log.status_code == 200
    for action in ("question_set.create", "question_set.publish", "rule.save"):
        assert action in log.text
    assert manager.get("/admin/audit").status_code == 403 and designer.get("/admin/audit").status_code == 403


def test_editing_a_published_set_makes_a_draft_and_versions_stay_as_asked(app, staff, new_journey, client, auth):
    slug = new_journey()
    designer = staff("designer")
    with app.app_context():
        qs = db.session.scalar(select(QuestionSet).join(QuestionSet.stage)
                               .where(QuestionSet.key == "booking").join(Journey).where(Journey.slug == slug))
        qs_id, v1 = qs.id, qs.current.content
    before = client.post("/api/v1/events", json=event_body("booking", journey=slug), headers=auth).json

    editor = f"/workspace/question-sets/{qs_id}"
    page = designer.get(editor)
    assert "Version 1 is live" in page.text and "You are editing a draft" not in page.text
    form = {"csrf_token": csrf_of(page.text), "action": "save", "title-en": "Booking", "title-es": "Reserva"}
    for i, q in enumerate(v1["questions"]):
        form.update({f"q{i}-key": q["key"], f"q{i}-type": q["type"], f"q{i}-measure": q.get("measure", ""),
                     f"q{i}-better": q.get("better", ""), **({f"q{i}-required": "1"} if q["required"] else {}),
                     **{f"q{i}-text-{loc}": t for loc, t in q["text"].items()},
                     **{f"q{i}-{end}-{loc}": pair[j] for loc, pair in q.get("anchors", {}).items()
                        for j, end in enumerate(("low", "high"))}})
    form["q0-text-en"] = "Booking was easy."
    assert designer.post(editor, data=form).status_code == 302
    with app.app_context():
        qs = db.session.get(QuestionSet, qs_id)
        assert qs.draft["questions"][0]["text"]["en"] == "Booking was easy."
        assert qs.current.version == 1 and qs.current.content == v1  # live version untouched
    assert "You are editing a draft" in designer.get(editor).text
    # Until published, new invitations still ask version 1.
    mid = client.post("/api/v1/events", json=event_body("booking", journey=slug), headers=auth).json
    assert mid["invitations"][0]["question_set_version"] == 1

    assert designer.post(editor, data={**form, "action": "publish"}).status_code == 302
    after = client.post("/api/v1/events", json=event_body("booking", journey=slug), headers=auth).json
    assert after["invitations"][0]["question_set_version"] == 2
    with app.app_context():
        qs = db.session.get(QuestionSet, qs_id)
        assert qs.versions[0].content == v1  # the earlier invitation's version is as it was asked
        assert qs.versions[1].questions[0]["text"]["en"] == "Booking was easy."
        # Published versions refuse to change, whoever tries.
        qs.versions[0].content = {**v1, "title": {"en": "x", "es": "x"}}
        try:
            db.session.flush()
            raise AssertionError("a published version was changed")
        except ValueError as exc:
            assert "cannot change" in str(exc)
        db.session.rollback()
    assert before["invitations"][0]["question_set_version"] == 1


def test_the_manager_reads_scores_and_designers_do_not(staff, new_journey):
    slug = new_journey()
    manager, designer = staff("manager"), staff("designer")
    page = manager.get(f"/dashboard?journey={slug}")
    assert page.status_code == 200 and "Journey map" in page.text and "Discharge" in page.text
    assert designer.get("/dashboard").status_code == 403


def test_journey_created_in_the_workspace_is_audited(app, staff):
    designer = staff("designer")
    slug = uid("maternity").lower()
    made = _post(designer, "/workspace/journeys", {"name": "Maternity", "slug": slug, "locales": "en es"})
    assert made.status_code == 302
    bad = _post(designer, "/workspace/journeys", {"name": "Again", "slug": slug, "locales": "en"})
    assert bad.status_code == 422 and "is taken" in bad.text
    with app.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.target == f"journey:{slug}"))
        assert entry.action == "journey.create" and entry.actor == designer.email and entry.before is None
        assert entry.after["locales"] == ["en", "es"]
