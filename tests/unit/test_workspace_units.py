"""The workspace's plain functions without a request: the editor's form <-> document
(workspace.drafts), the writing advice (journeys.guidance), and the business rules of
journeys.editing (rule checks, moving, retiring, publishing)."""
from __future__ import annotations

import copy
from datetime import time

import pytest
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from feedback_service.extensions import db
from feedback_service.journeys import editing
from feedback_service.journeys.editing import EditError
from feedback_service.journeys.guidance import ADVISED_QUESTIONS, double_barrelled, guidance, reading_problem
from feedback_service.journeys.models import Journey, Stage, Touchpoint
from feedback_service.sqltypes import utcnow
from feedback_service.staff.models import AuditEntry
from feedback_service.workspace.drafts import MAX_FIELD, apply_action, doc_from_form

LOCALES = ["en", "es"]
HARD_EN = ("Considering the comprehensive multidisciplinary coordination of your postoperative rehabilitation, "
           "how would you characterise the communication effectiveness?")
HARD_ES = ("Considerando la coordinación multidisciplinaria exhaustiva de su rehabilitación postoperatoria, "
           "¿cómo caracterizaría la efectividad comunicacional institucional?")


# ------------------------------------------------------------------------------------------- drafts: form -> document

def rating(key="q", **extra) -> dict:
    return {"key": key, "type": "rating", "text": {"en": "", "es": ""}, "measure": "satisfaction", "better": "high",
            "anchors": {"en": ["", ""], "es": ["", ""]}, **extra}


def choice(key="c", n=3) -> dict:
    return {"key": key, "type": "single_choice", "text": {"en": "", "es": ""},
            "options": [{"value": f"o{j}", "label": {"en": "", "es": ""}} for j in range(n)]}


def doc_of(*questions) -> dict:
    return {"key": "visit", "stage": "visit", "title": {"en": "", "es": ""}, "questions": list(questions)}


def test_the_form_gives_every_text_per_locale_and_keeps_key_and_stage():
    form = MultiDict({"key": "hijack", "stage": "other", "title-en": "  Your visit ", "title-es": "Su visita",
                      "title-fr": "ignored", "q0-key": "overall", "q0-type": "rating", "q0-measure": "friction",
                      "q0-better": "low", "q0-required": "1", "q0-text-en": " How was it? ", "q0-text-es": "¿Y?",
                      "q0-low-en": "Bad", "q0-high-en": "Good", "q0-low-es": "Mal", "q0-high-es": "Bien"})
    out = doc_from_form(form, doc_of(rating()), LOCALES)
    assert out == {"key": "visit", "stage": "visit", "title": {"en": "Your visit", "es": "Su visita"},
                   "questions": [{"key": "overall", "type": "rating", "text": {"en": "How was it?", "es": "¿Y?"},
                                  "required": True, "measure": "friction", "better": "low",
                                  "anchors": {"en": ["Bad", "Good"], "es": ["Mal", "Bien"]}}]}


def test_missing_fields_read_as_empty_texts_and_defaults():
    out = doc_from_form(MultiDict(), doc_of(rating("kept")), LOCALES)
    [q] = out["questions"]
    assert out["title"] == {"en": "", "es": ""} and "intro" not in out and "sms" not in out
    assert (q["key"], q["type"], q["required"], q["better"]) == ("kept", "rating", False, "high")
    assert "measure" not in q  # "none" in the editor
    assert q["anchors"] == {"en": ["", ""], "es": ["", ""]}


def test_texts_are_cut_to_the_field_limit():
    out = doc_from_form(MultiDict({"title-en": "x" * 900, "q0-text-es": "y" * 900}), doc_of(rating()), LOCALES)
    assert len(out["title"]["en"]) == MAX_FIELD and len(out["questions"][0]["text"]["es"]) == MAX_FIELD


def test_an_intro_is_kept_only_when_some_locale_has_one():
    assert "intro" not in doc_from_form(MultiDict({"intro-en": "  "}), doc_of(rating()), LOCALES)
    out = doc_from_form(MultiDict({"intro-es": "Hola"}), doc_of(rating()), LOCALES)
    assert out["intro"] == {"en": "", "es": "Hola"}


def test_the_sms_box():
    assert doc_from_form(MultiDict({"sms": "1"}), doc_of(rating()), LOCALES)["sms"] is True
    assert "sms" not in doc_from_form(MultiDict({"sms": ""}), doc_of(rating()), LOCALES)


def test_an_unknown_type_keeps_the_old_one():
    out = doc_from_form(MultiDict({"q0-type": "essay"}), doc_of(rating()), LOCALES)
    assert out["questions"][0]["type"] == "rating"


def test_only_the_questions_of_the_document_are_read():
    form = MultiDict({"q0-key": "a", "q1-key": "b", "q1-type": "text"})
    assert [q["key"] for q in doc_from_form(form, doc_of(rating("x")), LOCALES)["questions"]] == ["a"]


def test_a_text_question_feeds_no_score():
    out = doc_from_form(MultiDict({"q0-type": "text", "q0-measure": "satisfaction", "q0-better": "high"}),
                        doc_of(rating()), LOCALES)
    q = out["questions"][0]
    assert q["type"] == "text" and "measure" not in q and "better" not in q and "anchors" not in q


@pytest.mark.parametrize("posted, better", [("yes", "yes"), ("no", "no"), ("high", "yes"), ("", "yes")])
def test_yes_no_better_is_yes_or_no(posted, better):
    out = doc_from_form(MultiDict({"q0-type": "yes_no", "q0-better": posted}), doc_of(rating()), LOCALES)
    assert out["questions"][0]["better"] == better and "anchors" not in out["questions"][0]


def test_switching_to_single_choice_brings_two_blank_options():
    out = doc_from_form(MultiDict({"q0-type": "single_choice"}), doc_of(rating()), LOCALES)
    q = out["questions"][0]
    assert q["options"] == [{"value": "option_1", "label": {"en": "", "es": ""}},
                            {"value": "option_2", "label": {"en": "", "es": ""}}]
    assert "anchors" not in q and "better" not in q


def test_switching_away_from_single_choice_drops_the_options():
    out = doc_from_form(MultiDict({"q0-type": "nps", "q0-opt0-value": "a"}), doc_of(choice()), LOCALES)
    q = out["questions"][0]
    assert "options" not in q and q["anchors"] == {"en": ["", ""], "es": ["", ""]}


@pytest.mark.parametrize("typed, score", [("100", 100), ("0", 0), ("12.5", 12.5), (" 50 ", 50), ("lots", "lots"),
                                          ("1e3", "1e3"), ("", None), ("   ", None)])
def test_option_scores_are_read_as_numbers_or_kept_as_typed(typed, score):
    form = MultiDict({"q0-type": "single_choice", "q0-opt0-value": "a", "q0-opt0-score": typed})
    option = doc_from_form(form, doc_of(choice(n=2)), LOCALES)["questions"][0]["options"][0]
    assert option.get("score") == score and (score is not None or "score" not in option)
    assert type(option.get("score")) is type(score)


def test_options_are_read_per_locale_and_only_as_many_as_the_document_has():
    form = MultiDict({"q0-type": "single_choice", "q0-opt0-value": " phone ", "q0-opt0-label-en": "Phone",
                      "q0-opt0-label-es": "Teléfono", "q0-opt1-value": "web", "q0-opt2-value": "extra"})
    options = doc_from_form(form, doc_of(choice(n=2)), LOCALES)["questions"][0]["options"]
    assert options == [{"value": "phone", "label": {"en": "Phone", "es": "Teléfono"}},
                       {"value": "web", "label": {"en": "", "es": ""}}]


# ------------------------------------------------------------------------------------------------ drafts: the buttons

def keys(doc) -> list[str]:
    return [q["key"] for q in doc["questions"]]


def three() -> dict:
    return doc_of(rating("a"), rating("b"), choice("c"))


@pytest.mark.parametrize("new_type", ["rating", "effort", "nps", "yes_no", "single_choice", "text"])
def test_add_question_of_every_type(new_type):
    doc = apply_action(three(), "add-question", LOCALES, new_type)
    q = doc["questions"][-1]
    assert keys(doc) == ["a", "b", "c", "question_4"] and q["type"] == new_type
    assert q["text"] == {"en": "", "es": ""}
    if new_type == "single_choice":
        assert len(q["options"]) == 2


def test_a_new_question_has_a_key_of_its_own():
    doc = apply_action(doc_of(rating("question_2"), rating("question_3")), "add-question", LOCALES)
    assert keys(doc) == ["question_2", "question_3", "question_4"]


def test_a_new_question_of_an_unknown_type_is_a_rating():
    assert apply_action(three(), "add-question", LOCALES, "essay")["questions"][-1]["type"] == "rating"


@pytest.mark.parametrize("action, expected", [
    ("up:1", ["b", "a", "c"]), ("down:1", ["a", "c", "b"]), ("up:0", ["a", "b", "c"]), ("down:2", ["a", "b", "c"]),
    ("delete:1", ["a", "c"]), ("delete:3", ["a", "b", "c"]), ("up:3", ["a", "b", "c"]), ("down:99", ["a", "b", "c"]),
    ("up:-1", ["a", "b", "c"]), ("up:", ["a", "b", "c"]), ("up", ["a", "b", "c"]), ("delete:x", ["a", "b", "c"]),
    ("jump:1", ["a", "b", "c"]), ("", ["a", "b", "c"]), ("save", ["a", "b", "c"]), ("publish", ["a", "b", "c"]),
])
def test_moving_and_deleting_questions(action, expected):
    assert keys(apply_action(three(), action, LOCALES)) == expected


def test_the_last_question_is_never_deleted():
    assert keys(apply_action(doc_of(rating("only")), "delete:0", LOCALES)) == ["only"]


def test_options_are_added_to_choice_questions_only():
    doc = apply_action(three(), "add-option:2", LOCALES)
    assert [o["value"] for o in doc["questions"][2]["options"]] == ["o0", "o1", "o2", "option_4"]
    assert doc["questions"][2]["options"][-1]["label"] == {"en": "", "es": ""}
    before = copy.deepcopy(three())
    assert apply_action(three(), "add-option:0", LOCALES) == before


@pytest.mark.parametrize("action, values", [
    ("delete-option:2:0", ["o1", "o2"]), ("delete-option:2:2", ["o0", "o1"]), ("delete-option:2", ["o0", "o1", "o2"]),
    ("delete-option:0:0", None), ("delete-option:5:0", None),
])
def test_deleting_options(action, values):
    doc = apply_action(three(), action, LOCALES)
    if values is None:
        assert doc == three()
    else:
        assert [o["value"] for o in doc["questions"][2]["options"]] == values


def test_a_choice_question_keeps_two_options():
    doc = doc_of(choice("c", n=2))
    assert len(apply_action(doc, "delete-option:0:1", LOCALES)["questions"][0]["options"]) == 2


@pytest.mark.parametrize("j", [3, 7, 99])
def test_deleting_an_option_that_is_not_there_changes_nothing(j):
    """A stale page or a crafted post names an option past the end: nothing to delete."""
    assert apply_action(three(), f"delete-option:2:{j}", LOCALES) == three()


# ----------------------------------------------------------------------------------------------------------- guidance

def q(text_en: str, text_es: str = "", qtype: str = "rating") -> dict:
    return {"key": "k", "type": qtype, "text": {"en": text_en, "es": text_es}}


@pytest.mark.parametrize("n, warned", [(1, False), (ADVISED_QUESTIONS, False), (ADVISED_QUESTIONS + 1, True),
                                       (10, True)])
def test_more_than_five_questions_is_advised_against(n, warned):
    advice = guidance({"questions": [q("How was it?")] * n}, LOCALES, 8)
    assert (("questions", f"{n} questions: surveys of 5 or fewer get many more answers") in advice) == warned


def test_hard_english_is_flagged_with_its_grade():
    problem = reading_problem(HARD_EN, "en", 8)
    assert problem.startswith("reads at about grade ") and problem.endswith("aim for grade 8 or below")
    assert int(problem.split()[4].rstrip(";")) > 12


@pytest.mark.parametrize("text", ["How was your visit today?", "Too short",
                                  "Did you get your follow-up appointment when you needed it?"])
def test_plain_english_is_not_flagged(text):
    assert reading_problem(text, "en", 8) is None


def test_the_grade_target_is_the_settings():
    assert reading_problem(HARD_EN, "en", 30) is None
    assert reading_problem("Did you get your follow-up appointment when you needed it?", "en", 2) is not None


def test_hard_spanish_is_flagged_with_its_reading_ease():
    problem = reading_problem(HARD_ES, "es", 8)
    assert problem is not None and "Fernández Huerta" in problem and "aim for 60 or above" in problem
    assert reading_problem("¿Qué tan probable es que recomiende este hospital a familiares y amigos?", "es", 8) is None


def test_languages_that_cannot_be_measured_are_not_flagged():
    assert reading_problem(HARD_EN, "fr", 8) is None


@pytest.mark.parametrize("text, locale, flagged", [
    ("Were the nurses kind and helpful?", "en", True),
    ("Were the nurses kind AND helpful?", "en", True),
    ("Was the ward clean as well as quiet?", "en", True),
    ("How likely are you to recommend us to friends and family?", "en", False),
    ("How likely are you to recommend us to Friends and Family?", "en", False),
    ("How likely are you to recommend us to family and friends?", "en", False),
    ("Was the band playing in the lobby?", "en", False),
    ("Did Anderson ward treat you well?", "en", False),
    ("¿Las enfermeras fueron amables y atentas?", "es", True),
    ("¿Fue rápido e informativo?", "es", True),
    ("¿Recomendaría este hospital a familiares y amigos?", "es", False),
    ("¿Recomendaría este hospital a amigos y familiares?", "es", False),
    ("¿Fue fácil reservar su cita?", "es", False),
    ("Were the nurses kind and helpful?", "fr", False),
], ids=lambda v: v if isinstance(v, str) and len(v) < 4 else None)
def test_double_barrelled_questions(text, locale, flagged):
    assert double_barrelled(text, locale) is flagged


def test_guidance_names_each_text_in_editor_order():
    doc = {"questions": [q("How was your visit?", "¿Cómo fue su visita?"),
                         q("Were the nurses kind and helpful?", "¿Las enfermeras fueron amables y atentas?"),
                         q(HARD_EN, HARD_ES)]}
    paths = [path for path, _ in guidance(doc, LOCALES, 8)]
    assert paths == ["questions[1].text.en", "questions[1].text.es", "questions[2].text.en", "questions[2].text.es"]


def test_free_text_questions_may_ask_two_things():
    doc = {"questions": [q("What went well and what could be better?", qtype="text")]}
    assert guidance(doc, ["en"], 8) == []


def test_guidance_reads_any_draft_without_failing():
    doc = {"questions": [None, "text", {"text": None}, {"text": {"en": None}}, {"text": {"en": 5}},
                         {"type": "rating", "text": {"en": "   ", "es": ""}}]}
    assert guidance(doc, LOCALES, 8) == []  # four questions once the non-mappings are left out
    assert guidance({}, LOCALES, 8) == [] and guidance({"questions": None}, LOCALES, 8) == []


def test_only_the_journeys_locales_are_read():
    doc = {"questions": [q("How was it?", "¿Las enfermeras fueron amables y atentas?")]}
    assert guidance(doc, ["en"], 8) == []


# ----------------------------------------------------------------------------------------------- editing: rule checks

ALLOWED = (time(8), time(20))


@pytest.fixture
def journey(ctx, new_journey) -> Journey:
    return db.session.scalar(select(Journey).where(Journey.slug == new_journey()))


def fields(**overrides) -> dict:
    base = {"event": "booking", "question_set": "booking", "touchpoint": "phone-booking", "delay_minutes": 60,
            "channels": ["sms", "email"], "reminder_hours": 24, "link_ttl_days": 5, "fatigue_days": 10,
            "window_start": "09:00", "window_end": "17:00", "exclude_codes": ["ONC"], "hcahps": "skip",
            "active": True}
    return {**base, **overrides}


def test_a_valid_rule_has_no_errors(journey):
    assert editing.rule_errors(journey, fields(), ALLOWED) == {}
    assert editing.rule_errors(journey, fields(window_start=None, window_end=None, reminder_hours=None,
                                               link_ttl_days=None, fatigue_days=None, exclude_codes=[],
                                               delay_minutes=0, channels=["email"]), ALLOWED) == {}
    assert editing.rule_errors(journey, fields(window_start="08:00", window_end="20:00"), ALLOWED) == {}
    # The reminder job skips one in the link's last 12 hours, so that is the latest a rule may ask.
    assert editing.rule_errors(journey, fields(reminder_hours=108, link_ttl_days=5), ALLOWED) == {}
    assert "reminder_hours" in editing.rule_errors(journey, fields(reminder_hours=109, link_ttl_days=5), ALLOWED)


@pytest.mark.parametrize("overrides, field", [
    ({"event": "checkout"}, "event"),
    ({"event": None}, "event"),
    ({"question_set": "nope"}, "question_set"),
    ({"question_set": None}, "question_set"),
    ({"touchpoint": "discharge-desk"}, "touchpoint"),
    ({"touchpoint": "nope"}, "touchpoint"),
    ({"touchpoint": None}, "touchpoint"),
    ({"delay_minutes": -1}, "delay_minutes"),
    ({"delay_minutes": 60 * 24 * 365 + 1}, "delay_minutes"),
    ({"delay_minutes": 1.5}, "delay_minutes"),
    ({"delay_minutes": "60"}, "delay_minutes"),
    ({"delay_minutes": None}, "delay_minutes"),
    ({"channels": []}, "channels"),
    ({"channels": ["sms", "sms"]}, "channels"),
    ({"channels": ["fax"]}, "channels"),
    ({"channels": "sms"}, "channels"),
    ({"channels": None}, "channels"),
    ({"reminder_hours": 0}, "reminder_hours"),
    ({"reminder_hours": 24 * 30 + 1}, "reminder_hours"),
    ({"reminder_hours": "24"}, "reminder_hours"),
    ({"reminder_hours": 1.5}, "reminder_hours"),
    ({"reminder_hours": 120, "link_ttl_days": 5}, "reminder_hours"),
    ({"reminder_hours": 500, "link_ttl_days": 5}, "reminder_hours"),
    ({"link_ttl_days": 0}, "link_ttl_days"),
    ({"link_ttl_days": 91}, "link_ttl_days"),
    ({"fatigue_days": 0}, "fatigue_days"),
    ({"fatigue_days": 366}, "fatigue_days"),
    ({"window_start": "07:59", "window_end": "12:00"}, "window_start"),
    ({"window_start": "09:00", "window_end": "20:01"}, "window_start"),
    ({"window_start": "18:00", "window_end": "09:00"}, "window_start"),
    ({"window_start": "09:00", "window_end": "09:00"}, "window_start"),
    ({"window_start": "09:00", "window_end": None}, "window_start"),
    ({"window_start": None, "window_end": "17:00"}, "window_start"),
    ({"window_start": "9am", "window_end": "17:00"}, "window_start"),
    ({"window_start": "25:00", "window_end": "26:00"}, "window_start"),
    ({"window_start": 900, "window_end": 1700}, "window_start"),
    ({"exclude_codes": "ONC"}, "exclude_codes"),
    ({"exclude_codes": [""]}, "exclude_codes"),
    ({"exclude_codes": ["X" * 65]}, "exclude_codes"),
    ({"exclude_codes": [5]}, "exclude_codes"),
    ({"exclude_codes": None}, "exclude_codes"),
    ({"hcahps": "maybe"}, "hcahps"),
])
def test_an_invalid_rule_names_the_field(journey, overrides, field):
    errors = editing.rule_errors(journey, fields(**overrides), ALLOWED)
    assert set(errors) == {field}, errors


@pytest.mark.parametrize("start, end", [("0900", "1700"), ("09:00:00", "17:00:00"), ("09:00:30", "17:00")])
def test_sending_hours_are_hh_mm_only(journey, start, end):
    """The column holds 5 characters and the message says "HH:MM": other ISO forms that
    time.fromisoformat happens to read are refused too."""
    errors = editing.rule_errors(journey, fields(window_start=start, window_end=end), ALLOWED)
    assert "window_start" in errors or "window_end" in errors, errors


def test_sending_hours_are_checked_against_the_service_only_when_given(journey):
    assert editing.rule_errors(journey, fields(window_start="06:00", window_end="22:00"), None) == {}


def test_a_retired_touchpoint_is_refused(journey):
    journey.stage("booking").touchpoint("phone-booking").retired_at = utcnow()
    assert editing.rule_errors(journey, fields(), ALLOWED) == {"touchpoint": "this touchpoint is retired"}


def test_a_question_set_of_a_retired_stage_is_refused(journey):
    """Like a retired touchpoint: a rule pointing there could never send anything."""
    journey.stage("booking").retired_at = utcnow()
    assert "question_set" in editing.rule_errors(journey, fields(), ALLOWED)


def test_rule_errors_writes_nothing(journey):
    editing.rule_errors(journey, fields(channels=[]), ALLOWED)
    assert not db.session.new and not db.session.dirty


def test_save_rule_refuses_with_the_errors_and_changes_nothing(journey):
    before = editing.describe_rule(next(r for r in journey.rules if r.event_type == "booking"))
    with pytest.raises(EditError) as exc:
        editing.save_rule(None, journey, fields(channels=["sms", "sms"], delay_minutes=-5), ALLOWED)
    assert set(exc.value.errors) == {"channels", "delay_minutes"}
    assert editing.describe_rule(next(r for r in journey.rules if r.event_type == "booking")) == before


def test_save_rule_creates_a_rule_for_a_new_event_type(ctx, new_journey):
    journey = db.session.scalar(select(Journey).where(Journey.slug == new_journey(journey={"rules": []})))
    rule = editing.save_rule(None, journey, fields(event="discharge", question_set="discharge",
                                                   touchpoint="discharge-desk"), ALLOWED)
    assert editing.describe_rule(rule)["touchpoint"] == "discharge-desk"
    assert [r.event_type for r in journey.rules] == ["discharge"]


# ---------------------------------------------------------------------------------------------------- editing: moving

def built(n=4, positions=None) -> Journey:
    """A journey in memory with stages s0..s(n-1), each with touchpoints t0..t2."""
    j = Journey(slug="mem", name="Mem", locales=["en"])
    for i in range(n):
        s = Stage(slug=f"s{i}", name=f"S{i}", position=(positions or list(range(n)))[i])
        j.stages.append(s)
        for k in range(3):
            s.touchpoints.append(Touchpoint(slug=f"t{k}", name=f"T{k}", kind="human", position=k))
    return j


def slugs(things) -> list[str]:
    return [t.slug for t in sorted(things, key=lambda t: t.position)]


def audits() -> list[AuditEntry]:
    return [o for o in db.session.new if isinstance(o, AuditEntry)]


@pytest.mark.parametrize("which, step, expected", [
    (0, -1, ["s0", "s1", "s2", "s3"]),
    (3, 1, ["s0", "s1", "s2", "s3"]),
    (0, 1, ["s1", "s0", "s2", "s3"]),
    (3, -1, ["s0", "s1", "s3", "s2"]),
    (1, 2, ["s0", "s1", "s2", "s3"]),
    (1, 0, ["s0", "s1", "s2", "s3"]),
])
def test_moving_a_stage(ctx, which, step, expected):
    j = built()
    editing.move(None, j.stages[which], step)
    assert slugs(j.stages) == expected
    assert sorted(s.position for s in j.stages) == [0, 1, 2, 3]
    assert len(audits()) == (0 if expected == ["s0", "s1", "s2", "s3"] else 1)


def test_a_move_records_the_order_before_and_after(ctx):
    j = built()
    editing.move(None, j.stages[2], -1)
    [entry] = audits()
    assert (entry.action, entry.target, entry.actor) == ("stage.move", "journey:mem/stage:s2", "command line")
    assert entry.before == {"order": ["s0", "s1", "s2", "s3"]} and entry.after == {"order": ["s0", "s2", "s1", "s3"]}


def test_moving_closes_gaps_in_positions(ctx):
    j = built(3, positions=[0, 5, 9])
    editing.move(None, j.stages[2], -1)
    assert [(s.slug, s.position) for s in sorted(j.stages, key=lambda s: s.position)] == [
        ("s0", 0), ("s2", 1), ("s1", 2)]


@pytest.mark.parametrize("which, step, expected", [
    (0, -1, ["t0", "t1", "t2"]), (2, 1, ["t0", "t1", "t2"]), (2, -1, ["t0", "t2", "t1"]), (0, 1, ["t1", "t0", "t2"]),
])
def test_moving_a_touchpoint_stays_within_its_stage(ctx, which, step, expected):
    j = built()
    stage = j.stages[1]
    editing.move(None, stage.touchpoints[which], step)
    assert slugs(stage.touchpoints) == expected
    assert all(slugs(s.touchpoints) == ["t0", "t1", "t2"] for s in j.stages if s is not stage)
    assert slugs(j.stages) == ["s0", "s1", "s2", "s3"]


def test_a_single_stage_cannot_move(ctx):
    j = built(1)
    editing.move(None, j.stages[0], -1)
    editing.move(None, j.stages[0], 1)
    assert j.stages[0].position == 0 and audits() == []


# -------------------------------------------------------------------------------------------------- editing: the rest

@pytest.mark.parametrize("text, locales", [
    ("en es", ["en", "es"]), ("EN, Es", ["en", "es"]), (" en ,, es  pt-br ", ["en", "es", "pt-br"]), ("", []),
    (None, []),
])
def test_parse_locales(text, locales):
    assert editing.parse_locales(text) == locales


@pytest.mark.parametrize("slug, name, locales, fields_", [
    ("Bad", "N", ["en"], {"slug"}), ("ok-{u}", " ", ["en"], {"name"}), ("ok-{u}", "N", [], {"locales"}),
    ("ok-{u}", "N", ["en", "en"], {"locales"}), ("ok-{u}", "N", ["en_US"], {"locales"}),
    ("", "", [], {"slug", "name", "locales"}),
])
def test_create_journey_names_every_bad_field(ctx, slug, name, locales, fields_):
    with pytest.raises(EditError) as exc:
        editing.create_journey(None, slug.format(u="x1"), name, locales)
    assert set(exc.value.errors) == fields_
    assert audits() == []


def test_retiring_twice_is_recorded_once(ctx):
    j = built(1)
    editing.set_retired(None, j, True)
    first = j.retired_at
    editing.set_retired(None, j, True)
    assert [a.action for a in audits()] == ["journey.retire"]
    assert j.retired_at is not None and first is not None
    editing.set_retired(None, j, False)
    assert j.retired_at is None and [a.action for a in audits()] == ["journey.retire", "journey.restore"]


def test_renaming_to_the_same_name_is_not_recorded(ctx):
    j = built(1)
    editing.rename(None, j.stages[0], " S0 ")
    assert j.stages[0].name == "S0" and audits() == []
    with pytest.raises(EditError):
        editing.rename(None, j.stages[0].touchpoints[0], "Fine", "robotic")


def test_publishing_the_current_content_again_makes_no_version(journey):
    qs = journey.question_set("booking")
    editing.save_draft(None, qs, editing.working_copy(qs))
    assert editing.publish(None, qs) is None
    assert [v.version for v in qs.versions] == [1] and qs.draft is None


def test_publishing_a_change_makes_the_next_version_and_keeps_the_old(journey):
    qs = journey.question_set("booking")
    v1 = copy.deepcopy(qs.current.content)
    doc = editing.working_copy(qs)
    doc["questions"][0]["text"]["en"] = "Booking was easy."
    editing.save_draft(None, qs, doc)
    version = editing.publish(None, qs)
    assert version.version == 2 and version.content["questions"][0]["text"]["en"] == "Booking was easy."
    assert qs.versions[0].content == v1 and qs.current is version


def test_publishing_an_incomplete_draft_is_refused_and_keeps_it(journey):
    qs = journey.question_set("booking")
    doc = editing.working_copy(qs)
    doc["questions"][1]["text"]["es"] = ""
    editing.save_draft(None, qs, doc)
    with pytest.raises(EditError) as exc:
        editing.publish(None, qs)
    assert exc.value.errors == {"questions[1].text": "missing translation for es"}
    assert qs.draft["questions"][1]["text"]["es"] == "" and [v.version for v in qs.versions] == [1]
    assert editing.publishing_errors(qs) == exc.value.errors
