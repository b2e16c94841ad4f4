"""The question-set library as files: `surveys import` takes a directory whole or refuses it with
errors naming file, line and field; `surveys export` writes back what import read, byte for byte."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from feedback_service import create_app
from feedback_service.config import PROJECT_ROOT
from feedback_service.extensions import db
from feedback_service.journeys import editing
from feedback_service.journeys.library import LibraryError
from feedback_service.journeys.models import (Journey, QuestionSet, QuestionSetVersion, Stage, Touchpoint,
                                              TriggerRule)
from feedback_service.journeys.yaml_io import HEADER, SMS_NOTE, export_library, import_library
from feedback_service.staff.models import AuditEntry
from tests.conftest import uid
from tests.scratch import scratch_database

# A journey using every field the files have: two locales, a retired stage and touchpoint, a rule
# with every optional field, and every question type; written in the canonical form.
JOURNEY = HEADER + """\
slug: SLUG
name: Every field
locales: [en, es]
hcahps_sampled: true
stages:
  - slug: booking
    name: Booking
    touchpoints:
      - slug: phone
        name: "Booking by phone: the call centre"
        kind: human
      - slug: kiosk
        name: Check-in kiosk
        kind: digital
        retired: true
  - slug: stay
    name: Hospital stay
    touchpoints:
      - slug: ward
        name: Ward
        kind: physical
  - slug: leaflets
    name: Leaflets
    retired: true
    touchpoints:
      - slug: waiting-room
        name: Waiting room
        kind: physical
rules:
  - event: booking
    question_set: everything
    touchpoint: phone
    delay_minutes: 90
    channels: [email, sms]
    reminder_hours: 48
    link_ttl_days: 10
    fatigue_days: 60
    window_start: "09:30"
    window_end: "19:00"
    exclude_codes: [W1, "0042"]
    hcahps: delay
    active: false
  - event: discharge
    question_set: stay-pulse
    touchpoint: ward
    delay_minutes: 2880
    channels: [sms]
"""

EVERYTHING = HEADER + """\
key: everything
stage: booking
title:
  en: Every kind of question
  es: Todo tipo de preguntas
intro:
  en: "Seven short questions."
  es: "Siete preguntas cortas."
questions:
  - key: overall
    type: rating
    measure: satisfaction
    text:
      en: "How was booking, overall?"
      es: "¿Cómo fue la reserva, en general?"
    anchors:
      en: [Very poor, Excellent]
      es: [Muy mala, Excelente]
  - key: booking_effort
    type: effort
    measure: friction
    better: low
    text:
      en: "How much effort did booking take?"
      es: "¿Cuánto esfuerzo le costó reservar?"
    anchors:
      en: [Very little, A great deal]
      es: [Muy poco, Muchísimo]
  - key: recommend
    type: nps
    measure: satisfaction
    required: false
    text:
      en: "Would you recommend the \\"quiet hours\\" to a friend?"
      es: "¿Recomendaría las \\"horas de silencio\\" a un amigo?"
  - key: waited
    type: yes_no
    measure: friction
    better: "no"
    text:
      en: "Did you wait on the phone?"
      es: "¿Esperó al teléfono?"
  - key: expected
    type: single_choice
    measure: satisfaction
    text:
      en: "Was it as you expected?"
      es: "¿Fue como esperaba?"
    options:
      - value: better
        score: 100
        label:
          en: Better
          es: Mejor
      - value: same
        score: 62.5
        label:
          en: The same
          es: Igual
      - value: worse
        score: 0
        label:
          en: Worse
          es: Peor
  - key: heard_from
    type: single_choice
    text:
      en: "Where did you hear of us?"
      es: "¿Dónde supo de nosotros?"
    options:
      - value: doctor
        label:
          en: My doctor
          es: Mi médico
      - value: "yes"
        label:
          en: "Yes: a friend"
          es: "Sí: un amigo"
  - key: comment
    type: text
    required: true
    text:
      en: "Anything else?"
      es: "¿Algo más?"
"""

STAY_PULSE = HEADER + SMS_NOTE + """\
key: stay-pulse
stage: stay
sms: true
title:
  en: Your stay
  es: Su estancia
questions:
  - key: stay_clean
    type: yes_no
    better: "yes"
    text:
      en: "Was your room clean?"
      es: "¿Estaba limpia su habitación?"
"""


def write_journey(root: Path, slug: str | None = None, **edits: tuple[str, str] | list[tuple[str, str]]) -> str:
    """The journey above under a fresh slug in root; journey_yaml=(old, new) or a list of such
    pairs edits journey.yaml (everything_yaml, stay_pulse_yaml likewise)."""
    slug = slug or uid("every")
    folder = root / slug
    folder.mkdir(parents=True)
    for name, text in (("journey.yaml", JOURNEY), ("everything.yaml", EVERYTHING), ("stay-pulse.yaml", STAY_PULSE)):
        text = text.replace("SLUG", slug)
        pairs = edits.get(name.replace("-", "_").replace(".", "_"), [])
        for old, new in [pairs] if isinstance(pairs, tuple) else pairs:
            assert text.count(old) == 1, f"{old!r} is not once in {name}"
            text = text.replace(old, new)
        (folder / name).write_text(text, encoding="utf-8")
    return slug


def line_in(path: Path, marker: str) -> int:
    """The number (from 1) of the first line of the file holding marker."""
    return next(i for i, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if marker in text)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def state(slug: str) -> dict:
    """What the database holds for a journey, to compare before and after a refused import."""
    journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
    if journey is None:
        return {}
    sets = db.session.scalars(select(QuestionSet).join(QuestionSet.stage).where(Stage.journey_id == journey.id))
    return {"journey": (journey.name, journey.retired_at, journey.locales),
            "stages": [(s.slug, s.name, s.position, s.retired_at,
                        [(t.slug, t.name, t.kind, t.retired_at) for t in s.touchpoints]) for s in journey.stages],
            "versions": sorted((qs.key, v.version, v.content_hash) for qs in sets for v in qs.versions),
            "rules": sorted((editing.describe_rule(r) for r in journey.rules), key=lambda r: r["event"])}


def counts() -> tuple[int, ...]:
    return tuple(db.session.scalar(select(func.count()).select_from(model))
                 for model in (Journey, Stage, Touchpoint, QuestionSet, QuestionSetVersion, TriggerRule))


# -- round trips ----------------------------------------------------------------------------------

@pytest.fixture
def fresh_app(settings, tmp_path):
    """The service on a database of its own, created by `feedback-service init` (which loads surveys/)."""
    with scratch_database(os.environ.get("FEEDBACK_TEST_DATABASE_URL"), tmp_path, prefix="feedback_yaml") as url:
        app = create_app({"TESTING": True, **settings, "FEEDBACK_DATABASE_URL": url})
        result = app.test_cli_runner().invoke(args=["init"])
        assert result.exit_code == 0, result.output
        yield app
        with app.app_context():
            db.engine.dispose()


def test_the_shipped_library_comes_back_byte_for_byte(fresh_app, tmp_path):
    shipped = PROJECT_ROOT / "surveys"
    runner = fresh_app.test_cli_runner()
    again = runner.invoke(args=["surveys", "import", str(shipped)])
    assert again.exit_code == 0, again.output
    assert "2 journeys imported" in again.output and "0 question-set versions published" in again.output

    exported = runner.invoke(args=["surveys", "export", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.output
    assert tree(tmp_path / "out") == tree(shipped)
    assert str(tmp_path / "out" / "orthopedic-surgery" / "recovery.yaml") in exported.output.splitlines()
    pulse = (tmp_path / "out" / "general-care" / "booking-pulse.yaml").read_text(encoding="utf-8")
    assert "\nsms: true\n" in pulse and "¿Qué tan fácil fue reservar su cita?" in pulse


def test_a_journey_with_every_kind_of_field_comes_back_byte_for_byte(ctx, tmp_path):
    slug = write_journey(tmp_path / "lib")
    assert import_library(tmp_path / "lib") == {"journeys": 1, "published": 2, "kept": 0}

    journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
    assert journey.hcahps_sampled and journey.retired_at is None and journey.locales == ["en", "es"]
    assert journey.stage("leaflets").retired_at is not None and journey.stage("booking").retired_at is None
    assert journey.stage("booking").touchpoint("kiosk").retired_at is not None
    booking = next(r for r in journey.rules if r.event_type == "booking")
    assert editing.describe_rule(booking) == {
        "event": "booking", "question_set": "everything", "touchpoint": "phone", "delay_minutes": 90,
        "channels": ["email", "sms"], "reminder_hours": 48, "link_ttl_days": 10, "fatigue_days": 60,
        "window_start": "09:30", "window_end": "19:00", "exclude_codes": ["W1", "0042"], "hcahps": "delay",
        "active": False}

    written = export_library(tmp_path / "out")
    assert set(written) >= {tmp_path / "out" / slug / name
                            for name in ("journey.yaml", "everything.yaml", "stay-pulse.yaml")}
    assert tree(tmp_path / "out" / slug) == tree(tmp_path / "lib" / slug)
    # What was exported reads back as it was: nothing new to publish.
    assert import_library(tmp_path / "lib")["published"] == 0


def test_retired_flags_follow_the_file_set_once_and_cleared_when_left_out(ctx, tmp_path):
    slug = write_journey(tmp_path / "a")
    import_library(tmp_path / "a")
    journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
    retired_at = journey.stage("leaflets").retired_at
    import_library(tmp_path / "a")
    assert retired_at is not None and journey.stage("leaflets").retired_at == retired_at

    write_journey(tmp_path / "b", slug, journey_yaml=[("    retired: true\n    touchpoints:", "    touchpoints:"),
                                                     ("name: Every field\n", "name: Every field\nretired: true\n")])
    import_library(tmp_path / "b")
    assert journey.retired_at is not None and journey.stage("leaflets").retired_at is None
    import_library(tmp_path / "a")
    assert journey.retired_at is None and journey.stage("leaflets").retired_at is not None
    export_library(tmp_path / "out")
    assert tree(tmp_path / "out" / slug) == tree(tmp_path / "a" / slug)


def test_an_export_shows_the_version_published_since_and_never_a_draft(ctx, tmp_path):
    slug = write_journey(tmp_path / "lib")
    import_library(tmp_path / "lib")
    journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
    qs = db.session.scalar(select(QuestionSet).where(QuestionSet.stage_id == journey.stage("booking").id))

    doc = editing.working_copy(qs)
    doc["questions"][0]["text"]["en"] = "How was booking, all in all?"
    editing.save_draft(None, qs, doc)
    assert editing.publish(None, qs).version == 2
    doc["questions"][0]["text"]["en"] = "A draft nobody has published"
    editing.save_draft(None, qs, doc)
    editing.create_question_set(None, journey.stage("stay"), "never-published")

    export_library(tmp_path / "out")
    text = (tmp_path / "out" / slug / "everything.yaml").read_text(encoding="utf-8")
    assert text == EVERYTHING.replace('"How was booking, overall?"', '"How was booking, all in all?"')
    assert not (tmp_path / "out" / slug / "never-published.yaml").exists()


def test_what_the_workspace_allows_exports_to_files_that_import_unchanged(ctx, tmp_path):
    slug, bare = write_journey(tmp_path / "lib"), uid("bare")
    import_library(tmp_path / "lib")
    journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
    # A language added after publishing (the sets' next versions must have it), a stage with no
    # touchpoints yet, a journey with no stages yet, a set only drafted so far, and a stage and a
    # touchpoint retired after rules chose them.
    editing.update_journey(None, journey, journey.name, ["en", "es", "fr"], True)
    editing.add_stage(None, journey, "later", "Later")
    editing.create_journey(None, bare, "Bare", ["en"])
    editing.create_question_set(None, journey.stage("stay"), "drafted")
    editing.set_retired(None, journey.stage("booking").touchpoint("phone"), True)
    editing.set_retired(None, journey.stage("stay"), True)

    export_library(tmp_path / "out")
    text = (tmp_path / "out" / slug / "journey.yaml").read_text()
    assert "locales: [en, es, fr]" in text and "  - slug: later\n    name: Later\n    touchpoints: []\n" in text
    assert not (tmp_path / "out" / slug / "drafted.yaml").exists()
    assert "      - slug: phone\n        name: \"Booking by phone: the call centre\"\n        kind: human\n" \
           "        retired: true\n" in text
    assert (tmp_path / "out" / bare / "journey.yaml").read_text() == (
        HEADER + f"slug: {bare}\nname: Bare\nlocales: [en]\nstages: []\n")
    # (Only these two journeys: other tests write rows no file could hold, such as long reminders.)
    for folder in (slug, bare):
        shutil.copytree(tmp_path / "out" / folder, tmp_path / "ours" / folder)
    assert import_library(tmp_path / "ours") == {"journeys": 2, "published": 0, "kept": 0}
    export_library(tmp_path / "again")
    for folder in (slug, bare):
        assert tree(tmp_path / "again" / folder) == tree(tmp_path / "out" / folder)

    # A changed set is a new version, which must have every language.
    changed = tmp_path / "ours" / slug / "everything.yaml"
    changed.write_text(changed.read_text().replace("Every kind of question", "All kinds of question"))
    with pytest.raises(LibraryError) as refused:
        import_library(tmp_path / "ours")
    assert f"{changed}:{line_in(changed, 'title:')}: title: missing translation for fr" in refused.value.errors


# -- refusals -------------------------------------------------------------------------------------

REFUSED = {  # case: (file, (text, replacement)..., the line the error names holds this, error)
    "bad YAML syntax": ("everything.yaml", ("    type: effort\n", "    type: effort: high\n"),
                        "type: effort: high", "invalid YAML: mapping values are not allowed here"),
    "missing translation": ("everything.yaml", ('      es: "¿Cuánto esfuerzo le costó reservar?"\n', ""),
                            ('    text:\n      en: "How much', '    text:  # English only\n      en: "How much'),
                            "English only", "questions[1].text: missing translation for es"),
    "unknown question type": ("everything.yaml", ("    type: yes_no\n", "    type: slider\n"), "type: slider",
                              "questions[3].type: must be one of rating, effort, nps, yes_no, single_choice, text"),
    "misspelt field": ("everything.yaml", ("    required: true\n", "    requried: true\n"), "requried: true",
                       "questions[6].requried: unknown field (known: key, type, measure, better, required, text, "
                       "anchors, options)"),
    "unknown touchpoint": ("journey.yaml", ("    touchpoint: ward\n", "    touchpoint: nowhere\n"),
                           "touchpoint: nowhere", "rules[1].touchpoint: 'nowhere' is not a touchpoint of stage stay"),
    "retired touchpoint": ("journey.yaml", ("    touchpoint: phone\n", "    touchpoint: kiosk\n"), "touchpoint: kiosk",
                           "rules[0].touchpoint: this touchpoint is retired"),
    "negative delay": ("journey.yaml", ("delay_minutes: 2880", "delay_minutes: -5"), "delay_minutes: -5",
                       "rules[1].delay_minutes: 0 minutes to a year"),
    "delay missing": ("journey.yaml", ("    delay_minutes: 2880\n", ""), "- event: discharge",
                      "rules[1].delay_minutes: 0 minutes to a year"),
    "channels not a list": ("journey.yaml", ("channels: [sms]", "channels: sms"), "channels: sms",
                            "rules[1].channels: one or more of sms, email, in order of preference, each once"),
    "reminder after the link expires": ("journey.yaml",
                                        ("delay_minutes: 2880\n", "delay_minutes: 2880\n    reminder_hours: 400\n"),
                                        "reminder_hours: 400",
                                        "rules[1].reminder_hours: must come at least 12 hours before the link "
                                        "expires (14 days)"),
    "delay given twice": ("journey.yaml", ("delay_minutes: 2880\n", "delay_minutes: 2880\n    delay_minutes: 5\n"),
                          "delay_minutes: 5", "rules[1].delay_minutes: given twice; only one is kept"),
    "window backwards": ("journey.yaml", ('window_start: "09:30"', 'window_start: "19:30"'), 'window_start: "19:30"',
                         "rules[0].window_start: the start must come before the end"),
    "window outside sending hours": ("journey.yaml", ('window_start: "09:30"', 'window_start: "06:00"'),
                                     'window_start: "06:00"', "rules[0].window_start: must lie within the service's "
                                                              "sending hours, 08:00 to 20:00"),
    "window unquoted": ("journey.yaml", ('window_end: "19:00"', "window_end: 19:00"), "window_end: 19:00",
                        'rules[0].window_end: a time as "HH:MM", in quotes (unquoted, 19:00 reads as a number)'),
    "set named unlike its file": ("stay-pulse.yaml", ("key: stay-pulse\n", "key: stay\n"), "key: stay",
                                  "key: must be the file's name, stay-pulse"),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_a_bad_file_is_refused_with_its_file_line_and_field_and_nothing_changes(ctx, tmp_path, case):
    name, *edit, marker, message = case
    slug = write_journey(tmp_path / "before")
    import_library(tmp_path / "before")
    before, rows = state(slug), counts()

    root = tmp_path / "lib"
    write_journey(root, slug, **{name.replace("-", "_").replace(".", "_"): edit})
    good = write_journey(root)  # a valid journey beside the bad one is not imported either
    with pytest.raises(LibraryError) as refused:
        import_library(root)

    path = root / slug / name
    assert f"{path}:{line_in(path, marker)}: {message}" in refused.value.errors, "\n".join(refused.value.errors)
    assert not any(good in error for error in refused.value.errors)
    assert state(slug) == before and counts() == rows and state(good) == {}


def test_a_rule_needs_a_published_question_set(ctx, tmp_path):
    slug = write_journey(tmp_path / "a")
    import_library(tmp_path / "a")
    journey = db.session.scalar(select(Journey).where(Journey.slug == slug))
    editing.create_question_set(None, journey.stage("stay"), "drafted")
    write_journey(tmp_path / "b", slug, journey_yaml=("question_set: stay-pulse", "question_set: drafted"))
    path = tmp_path / "b" / slug / "journey.yaml"
    with pytest.raises(LibraryError) as refused:
        import_library(tmp_path / "b")
    line = line_in(path, "question_set: drafted")
    assert refused.value.errors == [f"{path}:{line}: rules[1].question_set: publish this question set first"]


def test_every_error_is_reported_in_file_and_line_order(ctx, tmp_path):
    slug = write_journey(tmp_path, journey_yaml=("delay_minutes: 90", "delay_minutes: soon"),
                         everything_yaml=[('en: "Anything else?"', "fr: Rien?"), ("key: overall", "key: Overall")])
    with pytest.raises(LibraryError) as refused:
        import_library(tmp_path)
    sets, journey = tmp_path / slug / "everything.yaml", tmp_path / slug / "journey.yaml"
    assert refused.value.errors == [
        f"{sets}:{line_in(sets, 'key: Overall')}: questions[0].key: must be a lower-case identifier "
        f"(letters, digits, _)",
        f"{sets}:{line_in(sets, 'fr: Rien?') - 1}: questions[6].text: missing translation for en",  # text: above
        f"{journey}:{line_in(journey, 'delay_minutes: soon')}: rules[0].delay_minutes: 0 minutes to a year",
    ]


def test_a_missing_field_points_at_the_item_that_lacks_it(ctx, tmp_path):
    slug = write_journey(tmp_path, journey_yaml=("    name: Hospital stay\n", ""))
    path = tmp_path / slug / "journey.yaml"
    with pytest.raises(LibraryError) as refused:
        import_library(tmp_path)
    line = line_in(path, "- slug: stay")
    assert refused.value.errors == [f"{path}:{line}: stages[1].name: required, at most 200 characters"]


# -- the commands ---------------------------------------------------------------------------------

def test_the_commands_import_export_and_refuse_leaving_the_database_as_it_was(app, tmp_path):
    runner = app.test_cli_runner()
    slug = write_journey(tmp_path / "good")
    result = runner.invoke(args=["surveys", "import", str(tmp_path / "good")])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"1 journeys imported from {tmp_path / 'good'}, 2 question-set versions published\n"
    with app.app_context():
        before, rows = state(slug), counts()
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "library.import")
                                  .order_by(AuditEntry.id.desc()).limit(1))
        assert (entry.actor, entry.after["from"]) == ("command line", str(tmp_path / "good"))

    bad = tmp_path / "bad"
    write_journey(bad, slug, journey_yaml=("delay_minutes: 2880", "delay_minutes: -5"),
                  everything_yaml=("    type: yes_no\n", "    type: slider\n"))
    newcomer = write_journey(bad)
    (bad / newcomer / "stay-pulse.yaml").write_text("key: stay-pulse\nquestions: [\n")
    result = runner.invoke(args=["surveys", "import", str(bad)])
    assert result.exit_code != 0
    errors = result.stderr.splitlines()
    sets, journey = bad / slug / "everything.yaml", bad / slug / "journey.yaml"
    assert (f"{sets}:{line_in(sets, 'type: slider')}: questions[3].type: must be one of rating, effort, nps, yes_no, "
            f"single_choice, text") in errors
    assert f"{journey}:{line_in(journey, 'delay_minutes: -5')}: rules[1].delay_minutes: 0 minutes to a year" in errors
    assert any(e.startswith(f"{bad / newcomer}/stay-pulse.yaml:3: invalid YAML: ") for e in errors)
    assert "Error: 3 errors" in result.stderr and "nothing imported" in result.stderr
    with app.app_context():
        assert state(slug) == before and counts() == rows and state(newcomer) == {}

    out = tmp_path / "out"
    (out / "gone-journey").mkdir(parents=True)
    (out / "gone-journey" / "journey.yaml").write_text("slug: gone-journey\n")
    result = runner.invoke(args=["surveys", "export", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{out / slug / 'journey.yaml'}" in result.stdout.splitlines()
    assert tree(out / slug) == tree(tmp_path / "good" / slug)
    assert not (out / "gone-journey").exists()  # what an earlier export wrote does not linger
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # nor any staging copy


def test_export_refuses_a_directory_holding_other_files_and_leaves_it_alone(app, tmp_path):
    target = tmp_path / "notes"
    (target / "general-care").mkdir(parents=True)
    (target / "README.md").write_text("keep me\n")
    result = app.test_cli_runner().invoke(args=["surveys", "export", str(target)])
    assert result.exit_code != 0 and "README.md" in result.output and "new or empty directory" in result.output
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "general-care"]
    assert not any((target / "general-care").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_import_of_a_directory_without_journeys_is_refused(app, tmp_path):
    result = app.test_cli_runner().invoke(args=["surveys", "import", str(tmp_path)])
    assert result.exit_code != 0 and "no */journey.yaml found" in result.output
