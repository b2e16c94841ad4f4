"""Regression tests for what a review of the workspace found: hostile library files and archives,
a stale editor tab, reminders the job would never send, and values the database cannot hold."""
from __future__ import annotations

import io
import re
import zipfile


import pytest
from sqlalchemy import func, select

from feedback_service.extensions import db
from feedback_service.journeys.editing import rule_field_errors
from feedback_service.journeys.library import LibraryError
from feedback_service.journeys.models import Journey, QuestionSet
from feedback_service.journeys.yaml_io import import_library
from feedback_service.staff.models import AuditEntry
from tests.conftest import csrf_of, uid


def upload(client, data: bytes):
    page = client.get("/workspace/library").text
    return client.post("/workspace/library", content_type="multipart/form-data",
                       data={"csrf_token": csrf_of(page), "archive": (io.BytesIO(data), "library.zip")})


def archive(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, content in files.items():
            z.writestr(name, content)
    return buffer.getvalue()


def test_a_yaml_alias_bomb_is_refused_and_plain_aliases_are_not(ctx, tmp_path):
    # Nested aliases: a few hundred bytes that would expand to a billion nodes.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    (tmp_path / "bomb").mkdir()
    (tmp_path / "bomb" / "journey.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(LibraryError) as refused:
        import_library(tmp_path)
    assert refused.value.errors == [f"{tmp_path}/bomb/journey.yaml:1: invalid YAML: expands to more than "
                                    "100000 values (anchors and aliases nested too deep)"]


def test_plain_aliases_as_pyyaml_writes_them_load(app, new_journey):
    # One list shared by every rule: PyYAML dumps it once (&id001) and refers to it (*id001).
    slug = new_journey(channels=["email", "sms"])
    with app.app_context():
        journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
        assert {tuple(r.channels) for r in journey.rules} == {("email", "sms")}


def test_an_archive_that_unpacks_past_the_bound_is_refused_before_anything_is_written(staff):
    designer = staff("designer")
    padding = "#" * (2 * 1024 * 1024)
    refused = upload(designer, archive({f"j{i}/pad.yaml": padding for i in range(8)}))  # 16 MB from ~20 kB
    assert refused.status_code == 422 and "unpacks to more than 10 MB" in refused.text
    many = upload(designer, archive({f"j{i}/x.yaml": "" for i in range(501)}))
    assert many.status_code == 422 and "more than 500 files" in many.text


def test_library_files_must_sit_where_the_export_puts_them(app, staff):
    designer = staff("designer")
    slug = uid("zip")
    journey = (f"slug: {slug}\nname: Zipped\nlocales: [en]\nstages:\n  - slug: s\n    name: S\n"
               "    touchpoints:\n      - slug: t\n        name: T\n        kind: human\n")
    # Two copies of one file (a stale backup deeper in the archive): refused, not one silently kept.
    clash = upload(designer, archive({f"surveys/{slug}/journey.yaml": journey,
                                      f"old/backup/{slug}/journey.yaml": journey.replace("Zipped", "Stale")}))
    assert clash.status_code == 422 and "not where a library file goes" in clash.text
    with app.app_context():
        assert db.session.scalar(select(Journey).where(Journey.slug == slug)) is None
    # Under one top folder, as the download gives it: imported.
    assert upload(designer, archive({f"surveys/{slug}/journey.yaml": journey})).status_code == 302
    with app.app_context():
        assert db.session.scalar(select(Journey.name).where(Journey.slug == slug)) == "Zipped"


def test_a_stale_editor_tab_cannot_overwrite_newer_work(app, staff, new_journey):
    designer = staff("designer")
    slug = new_journey()
    with app.app_context():
        qs_id = db.session.scalar(select(QuestionSet.id).join(QuestionSet.stage).join(Journey)
                                  .where(Journey.slug == slug, QuestionSet.key == "follow-up"))
    editor = f"/workspace/question-sets/{qs_id}"
    old_tab = designer.get(editor).text
    revision = re.search(r'name="revision" value="([0-9a-f]{64})"', old_tab).group(1)
    # Another tab saves a change to the title.
    new_tab = designer.get(editor).text
    fields = dict(re.findall(r'<input id="(title-[a-z]+)" name="\1" value="([^"]*)"', new_tab))
    saved = designer.post(editor, data={"csrf_token": csrf_of(new_tab), "action": "save", "revision": revision,
                                        **fields, "title-en": "Newer title"})
    assert saved.status_code == 302
    with app.app_context():
        assert db.session.get(QuestionSet, qs_id).draft["title"]["en"] == "Newer title"
    # The old tab's post carries the old revision: refused with a note, nothing overwritten.
    stale = designer.post(editor, data={"csrf_token": csrf_of(old_tab), "action": "save", "revision": revision,
                                        **fields, "title-en": "Older title"})
    assert stale.status_code == 409 and "changed in another window" in stale.text
    with app.app_context():
        assert db.session.get(QuestionSet, qs_id).draft["title"]["en"] == "Newer title"


def test_a_reminder_the_job_would_skip_as_link_expiring_is_refused():
    fields = {"event": "booking", "delay_minutes": 60, "channels": ["sms"], "exclude_codes": [],
              "link_ttl_days": 1, "reminder_hours": 13}
    assert "reminder_hours" in rule_field_errors(fields)
    assert "reminder_hours" not in rule_field_errors({**fields, "reminder_hours": 12})


def test_long_names_and_emails_fit_the_audit_log(app, staff):
    """Targets name journey/stage/touchpoint slugs, or an email: all at their longest."""
    designer, admin = staff("designer"), staff("admin")
    slug = ("j" + uid("x").replace("-", "") + "x" * 80)[:80]
    page = designer.get("/workspace/journeys").text
    assert designer.post("/workspace/journeys", data={"csrf_token": csrf_of(page), "slug": slug, "name": "Long",
                                                      "locales": "en"}).status_code == 302
    page = designer.get(f"/workspace/journeys/{slug}").text
    assert designer.post(f"/workspace/journeys/{slug}", data={"csrf_token": csrf_of(page), "form": "stage",
                                                              "stage-slug": "s" * 80, "stage-name": "S"}).status_code == 302
    with app.app_context():
        stage_id = db.session.scalar(select(Journey).where(Journey.slug == slug)).stages[0].id
    page = designer.get(f"/workspace/journeys/{slug}").text
    made = designer.post(f"/workspace/stage/{stage_id}/touchpoints",
                         data={"csrf_token": csrf_of(page), "tp-slug": "t" * 80, "tp-name": "T", "tp-kind": "human"})
    assert made.status_code == 302
    email = f"{'a' * 60}.{uid('b')}@{'d' * 60}.{'e' * 60}.example.org"
    page = admin.get("/admin/users").text
    assert admin.post("/admin/users", data={"csrf_token": csrf_of(page), "email": email, "role": "manager",
                                            "password": "a long enough password"}).status_code == 302
    with app.app_context():
        targets = set(db.session.scalars(select(AuditEntry.target).where(AuditEntry.action.in_(
            ["touchpoint.create", "user.create"]))))
        assert f"journey:{slug}/stage:{'s' * 80}/touchpoint:{'t' * 80}" in targets and f"user:{email}" in targets


def test_an_infinite_option_score_is_kept_as_typed_and_refused_at_publishing(app, staff, new_journey):
    designer = staff("designer")
    slug = new_journey()
    with app.app_context():
        stage_id = db.session.scalar(select(Journey).where(Journey.slug == slug)).stage("visit").id
    page = designer.get(f"/workspace/journeys/{slug}").text
    editor = designer.post(f"/workspace/journeys/{slug}", data={"csrf_token": csrf_of(page), "form": "question-set",
                                                                "qs-key": "choice", "qs-stage": str(stage_id)}).location
    page = designer.get(editor).text
    data = {"csrf_token": csrf_of(page), "title-en": "T", "title-es": "T", "q0-key": "pick", "q0-type": "single_choice",
            "q0-measure": "satisfaction", "q0-text-en": "Which?", "q0-text-es": "¿Cuál?", "action": "save"}
    assert designer.post(editor, data=data).status_code == 302  # the type switch adds two options
    data.update({"q0-opt0-value": "a", "q0-opt0-score": "1.5e999", "q0-opt0-label-en": "A", "q0-opt0-label-es": "A",
                 "q0-opt1-value": "b", "q0-opt1-score": "50", "q0-opt1-label-en": "B", "q0-opt1-label-es": "B"})
    assert designer.post(editor, data=data).status_code == 302
    with app.app_context():
        qs = db.session.get(QuestionSet, int(editor.rsplit("/", 1)[-1]))
        assert qs.draft["questions"][0]["options"][0]["score"] == "1.5e999"
    refused = designer.post(editor, data={**data, "action": "publish"})
    assert refused.status_code == 422 and "must be 0-100" in refused.text


def test_a_trial_far_from_today_is_refused_on_its_field(app, staff, new_journey):
    designer = staff("designer")
    slug = new_journey()
    page = designer.get(f"/workspace/journeys/{slug}/rules/booking").text
    tried = designer.post(f"/workspace/journeys/{slug}/rules/booking", data={
        "csrf_token": csrf_of(page), "form": "trial", "trial-occurred_at": "9999-12-31T23:00",
        "trial-timezone": "America/Chicago", "trial-phone": "+12025550123", "trial-locale": "en",
        "trial-consent_sms": "y"})
    assert tried.status_code == 422 and "within a year of today" in tried.text
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "rule.save", AuditEntry.target.contains(slug))) == 0
