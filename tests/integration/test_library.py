"""The question-set library: loading, versioning on change, refusing bad files whole; and the CLI."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from feedback_service.api.models import ApiKey
from feedback_service.config import PROJECT_ROOT
from feedback_service.extensions import db
from feedback_service.journeys.library import LibraryError, load_library, publish_version
from feedback_service.journeys.models import Journey, QuestionSet
from feedback_service.scheduling.models import Invitation
from feedback_service.security import hash_secret
from tests.conftest import csrf_of, event_body, message_for, token_of, uid


def copy_journey(tmp_path: Path, slug: str) -> Path:
    root = tmp_path / "lib"
    shutil.copytree(PROJECT_ROOT / "surveys" / "general-care", root / slug)
    doc = yaml.safe_load((root / slug / "journey.yaml").read_text())
    doc["slug"], doc["default"] = slug, False
    (root / slug / "journey.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    return root


def edit(path: Path, change) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))


def test_init_is_idempotent(app):
    result = app.test_cli_runner().invoke(args=["init"])
    assert result.exit_code == 0, result.output
    assert "0 question-set versions published" in result.output


def test_init_loads_new_journeys_and_keeps_what_the_workspace_changed_in_the_others(app, tmp_path):
    """The README's start command runs init every time: a set published in the workspace since
    must not be overwritten by the file it started from."""
    slug, fresh = uid("kept"), uid("fresh")
    root = copy_journey(tmp_path, slug)
    with app.app_context():
        load_library(root)
        qs = db.session.scalar(select(QuestionSet).join(QuestionSet.stage).join(Journey)
                               .where(Journey.slug == slug, QuestionSet.key == "booking"))
        edited = {**qs.current.content, "title": {"en": "Booked", "es": "Reservado"}}
        publish_version(qs, edited)  # as the workspace does
        db.session.commit()
    shutil.copytree(copy_journey(tmp_path / "x", fresh) / fresh, root / fresh)
    app.config["FEEDBACK_SURVEYS_DIR"] = str(root)
    try:
        result = app.test_cli_runner().invoke(args=["init"])
    finally:
        app.config["FEEDBACK_SURVEYS_DIR"] = "surveys"
    assert result.exit_code == 0, result.output
    assert "1 journeys loaded" in result.output and "1 already here kept" in result.output
    with app.app_context():
        qs = db.session.scalar(select(QuestionSet).join(QuestionSet.stage).join(Journey)
                               .where(Journey.slug == slug, QuestionSet.key == "booking"))
        assert qs.current.version == 2 and qs.current.content["title"]["en"] == "Booked"
        assert db.session.scalar(select(Journey).where(Journey.slug == fresh)) is not None


def test_shipped_library_has_booking_discharge_and_follow_up_sets_in_english_and_spanish(ctx):
    for journey in db.session.scalars(select(Journey).where(Journey.slug.in_(["general-care", "orthopedic-surgery"]))):
        assert journey.locales == ["en", "es"]
        ruled = {rule.event_type: rule.question_set.current for rule in journey.rules}
        assert set(ruled) == {"booking", "discharge", "follow_up"}
        for version in ruled.values():
            measures = {q.get("measure") for q in version.questions}
            assert {"satisfaction", "friction"} <= measures
            assert any(q["type"] == "text" and not q["required"] for q in version.questions)
            assert 2 <= len(version.questions) <= 5


def test_a_changed_set_is_a_new_version_and_old_invitations_keep_theirs(app, client, auth, outbox, run_jobs, tmp_path):
    slug = uid("lib")
    root = copy_journey(tmp_path, slug)
    with app.app_context():
        load_library(root)
        db.session.commit()
    r = client.post("/api/v1/events", json=event_body(journey=slug), headers=auth)
    old = r.get_json()["invitations"][0]
    assert old["question_set_version"] == 1

    edit(root / slug / "booking.yaml", lambda d: d["questions"][1]["text"].update(en="How satisfied are you with booking?"))
    with app.app_context():
        assert load_library(root)["published"] == 1
        db.session.commit()
    new = client.post("/api/v1/events", json=event_body(journey=slug), headers=auth).get_json()["invitations"][0]
    assert new["question_set_version"] == 2

    run_jobs()
    token = token_of(message_for(outbox, old["id"]))
    page = client.get(f"/s/{token}")
    assert "Overall, how satisfied are you with how your appointment was booked?" in page.text  # version 1 wording
    client.post(f"/s/{token}", data={"csrf_token": csrf_of(page.text), "booking_ease": "4", "booking_satisfaction": "3"})
    with app.app_context():
        inv = db.session.get(Invitation, old["id"])
        assert inv.status == "answered" and inv.question_set_version.version == 1
        qs = db.session.scalar(select(QuestionSet).join(QuestionSet.stage).where(QuestionSet.key == "booking",
                                                                                 QuestionSet.id == inv.question_set_version.question_set_id))
        assert [v.version for v in qs.versions] == [1, 2] and qs.versions[0].content != qs.versions[1].content


def test_an_invalid_library_is_refused_whole_with_file_and_field(app, tmp_path):
    slug, other = uid("bad"), uid("good")
    root = copy_journey(tmp_path, slug)
    shutil.copytree(copy_journey(tmp_path / "x", other) / other, root / other)
    edit(root / slug / "discharge.yaml", lambda d: d["questions"][0]["text"].pop("es"))
    edit(root / slug / "journey.yaml", lambda d: d["rules"][0].update(touchpoint="nowhere"))
    with app.app_context():
        with pytest.raises(LibraryError) as refused:
            load_library(root)
        db.session.rollback()
        errors = "\n".join(refused.value.errors)
        # file:line: field: message
        assert re.search(rf"{slug}/discharge\.yaml:\d+: questions\[0\]\.text: missing translation for es", errors)
        assert re.search(rf"{slug}/journey\.yaml:\d+: rules\[0\]\.touchpoint: 'nowhere' is not a touchpoint "
                         rf"of stage booking", errors)
        # Nothing was loaded, not even the valid journey beside it.
        assert db.session.scalar(select(Journey).where(Journey.slug.in_([slug, other]))) is None


def test_init_reports_a_bad_library_and_exits_non_zero(app, tmp_path):
    root = copy_journey(tmp_path, uid("cli"))
    (next(root.iterdir()) / "booking.yaml").write_text("key: booking\nstage: booking\nquestions: [\n")
    app.config["FEEDBACK_SURVEYS_DIR"] = str(root)
    try:
        result = app.test_cli_runner().invoke(args=["init"])
    finally:
        app.config["FEEDBACK_SURVEYS_DIR"] = "surveys"
    assert result.exit_code != 0 and "nothing loaded" in result.output


def test_api_key_create_prints_the_key_once_and_stores_only_its_hash(app, client):
    name = uid("key")
    result = app.test_cli_runner().invoke(args=["api-key", "create", name])
    key = result.stdout.strip().splitlines()[0]
    assert result.exit_code == 0 and key.startswith("fbk_") and len(key) > 40
    with app.app_context():
        row = db.session.scalar(select(ApiKey).where(ApiKey.name == name))
        assert row.key_hash == hash_secret(key) and key not in (row.key_hash, row.prefix)
    assert client.get("/api/v1/journeys", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    again = app.test_cli_runner().invoke(args=["api-key", "create", name])
    assert again.exit_code != 0 and "exists already" in again.output
