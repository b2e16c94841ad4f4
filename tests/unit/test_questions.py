"""Question-set validation, answer scoring and hashing (feedback_service/journeys/questions.py)."""
from __future__ import annotations

import copy
import hashlib
import json

import pytest

from feedback_service.journeys.questions import (
    TOP_BOX_SCORE,
    QuestionSetError,
    choices,
    content_hash,
    goodness,
    score_answer,
    validate_question_set,
)

LOCALES = ["en", "es"]


def t(en: str, es: str | None = None) -> dict:
    """A text in both journey locales."""
    return {"en": en, "es": es if es is not None else f"{en} (es)"}


def valid_doc() -> dict:
    """A fresh, valid four-question set: effort (friction), rating, scored choice, free text."""
    return {
        "key": "booking",
        "stage": "booking",  # library metadata: not part of the canonical form
        "title": t("Booking your appointment", "La reserva de su cita"),
        "questions": [
            {"key": "ease", "type": "effort", "measure": "friction", "better": "high",
             "text": t("Booking was easy."),
             "anchors": {"en": ["Strongly disagree", "Strongly agree"], "es": ["Muy en desacuerdo", "Muy de acuerdo"]}},
            {"key": "overall", "type": "rating", "measure": "satisfaction", "text": t("Overall?")},
            {"key": "wait", "type": "single_choice", "measure": "satisfaction", "text": t("How long did you wait?"),
             "options": [{"value": "short", "label": t("Short"), "score": 100},
                         {"value": "long", "label": t("Long"), "score": 0}]},
            {"key": "comment", "type": "text", "text": t("Anything else?")},
        ],
    }


def errors_of(doc: dict, locales=LOCALES) -> dict[str, str]:
    with pytest.raises(QuestionSetError) as info:
        validate_question_set(doc, locales)
    return info.value.errors


# --- validate_question_set: the happy path -------------------------------------------------


def test_valid_doc_returns_canonical_form():
    """Texts are trimmed and limited to the journey's locales, defaults are filled in, extras dropped."""
    doc = valid_doc()
    doc["title"] = {"en": "  Booking your appointment ", "es": "La reserva de su cita", "fr": "Réservation"}
    doc["intro"] = t("Two minutes, promise.")
    canonical = validate_question_set(doc, LOCALES)
    assert canonical == {
        "key": "booking",
        "title": {"en": "Booking your appointment", "es": "La reserva de su cita"},
        "intro": {"en": "Two minutes, promise.", "es": "Two minutes, promise. (es)"},
        "questions": [
            {"key": "ease", "type": "effort", "text": t("Booking was easy."), "required": True,
             "measure": "friction", "better": "high",
             "anchors": {"en": ["Strongly disagree", "Strongly agree"], "es": ["Muy en desacuerdo", "Muy de acuerdo"]}},
            {"key": "overall", "type": "rating", "text": t("Overall?"), "required": True,
             "measure": "satisfaction", "better": "high"},
            {"key": "wait", "type": "single_choice", "text": t("How long did you wait?"), "required": True,
             "measure": "satisfaction",
             "options": [{"value": "short", "label": t("Short"), "score": 100},
                         {"value": "long", "label": t("Long"), "score": 0}]},
            {"key": "comment", "type": "text", "text": t("Anything else?"), "required": False},
        ],
    }


def test_valid_doc_without_intro_has_no_intro_key():
    assert "intro" not in validate_question_set(valid_doc(), LOCALES)


def test_validation_does_not_mutate_the_document():
    doc = valid_doc()
    before = copy.deepcopy(doc)
    validate_question_set(doc, LOCALES)
    assert doc == before


def test_nps_and_yes_no_defaults():
    """NPS defaults to better=high; yes/no defaults to better=yes and may be unmeasured."""
    doc = valid_doc()
    doc["questions"][1:3] = [
        {"key": "recommend", "type": "nps", "measure": "satisfaction", "text": t("Recommend us?")},
        {"key": "on_time", "type": "yes_no", "text": t("On time?")},
    ]
    recommend, on_time = validate_question_set(doc, LOCALES)["questions"][1:3]
    assert recommend["better"] == "high" and recommend["measure"] == "satisfaction"
    assert on_time["better"] == "yes" and "measure" not in on_time and on_time["required"] is True


def test_explicit_required_false_is_kept():
    doc = valid_doc()
    doc["questions"][1]["required"] = False
    assert validate_question_set(doc, LOCALES)["questions"][1]["required"] is False


@pytest.mark.parametrize("count", [2, 5])
def test_question_count_bounds_are_inclusive(count):
    doc = valid_doc()
    doc["questions"] = [
        {"key": f"q{i}", "type": "rating", "measure": "satisfaction", "text": t(f"Q{i}")} for i in range(count)
    ]
    assert len(validate_question_set(doc, LOCALES)["questions"]) == count


# --- validate_question_set: each error under its field path ---------------------------------


def _set(path, value):
    """A mutation that sets doc[path...] = value (path items are keys or list indexes)."""
    def mutate(doc):
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(doc):
        target = doc
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]
    return mutate


def _extra_questions(n):
    def mutate(doc):
        doc["questions"] += [
            {"key": f"extra_{i}", "type": "rating", "measure": "satisfaction", "text": t("x")} for i in range(n)
        ]
    return mutate


def _unmeasured_choice(doc):
    """Make questions[2] a plain (unscored) choice question."""
    doc["questions"][2].pop("measure")
    for option in doc["questions"][2]["options"]:
        option.pop("score")


ERROR_CASES = [
    # translations
    ("title missing es", _set(["title"], {"en": "Booking"}), "title", "missing translation for es"),
    ("title blank es", _set(["title", "es"], "   "), "title", "missing translation for es"),
    ("title not a mapping", _set(["title"], "Booking"), "title", "must give a text per locale"),
    ("intro missing es", _set(["intro"], {"en": "Hi"}), "intro", "missing translation for es"),
    ("question text missing es", _delete(["questions", 1, "text", "es"]), "questions[1].text", "es"),
    ("question text absent", _delete(["questions", 3, "text"]), "questions[3].text", "per locale"),
    ("option label missing es", _delete(["questions", 2, "options", 0, "label", "es"]),
     "questions[2].options[0].label", "es"),
    # set key and question count
    ("set key upper-case", _set(["key"], "Booking"), "key", "slug"),
    ("set key missing", _delete(["key"]), "key", "slug"),
    ("no questions", lambda d: d.update(questions=[]), "questions", "1 to 10"),
    ("eleven questions", _extra_questions(7), "questions", "1 to 10"),
    ("questions not a list", _set(["questions"], {"a": 1}), "questions", "1 to 10"),
    ("question not a mapping", _set(["questions", 3], "comment"), "questions[3]", "mapping"),
    # question keys
    ("key upper-case", _set(["questions", 1, "key"], "Overall"), "questions[1].key", "lower-case"),
    ("key starts with digit", _set(["questions", 1, "key"], "1st"), "questions[1].key", "lower-case"),
    ("key with dash", _set(["questions", 1, "key"], "over-all"), "questions[1].key", "lower-case"),
    ("key too long", _set(["questions", 1, "key"], "k" * 41), "questions[1].key", "lower-case"),
    ("key missing", _delete(["questions", 1, "key"]), "questions[1].key", "lower-case"),
    ("duplicate key", _set(["questions", 3, "key"], "ease"), "questions[3].key", "twice or reserved"),
    ("reserved csrf_token", _set(["questions", 3, "key"], "csrf_token"), "questions[3].key", "reserved"),
    ("reserved submit", _set(["questions", 0, "key"], "submit"), "questions[0].key", "reserved"),
    # types and measures
    ("unknown type", _set(["questions", 1, "type"], "stars"), "questions[1].type", "must be one of"),
    ("rating without measure", _delete(["questions", 1, "measure"]), "questions[1].measure",
     "satisfaction or friction"),
    ("effort without measure", _delete(["questions", 0, "measure"]), "questions[0].measure",
     "satisfaction or friction"),
    ("unknown measure", _set(["questions", 1, "measure"], "happiness"), "questions[1].measure",
     "satisfaction or friction"),
    ("effort without better", _delete(["questions", 0, "better"]), "questions[0].better", "high or low"),
    ("rating with bad better", _set(["questions", 1, "better"], "yes"), "questions[1].better", "high or low"),
    ("text with measure", _set(["questions", 3, "measure"], "satisfaction"), "questions[3].measure", "not scored"),
    ("yes_no bad better", _set(["questions", 3], {"key": "on_time", "type": "yes_no", "better": "maybe",
                                                  "text": t("On time?")}), "questions[3].better", "yes or no"),
    # single choice
    ("partial scores", _delete(["questions", 2, "options", 1, "score"]), "questions[2].options",
     "score every option or none"),
    ("scores without measure", _delete(["questions", 2, "measure"]), "questions[2].measure",
     "satisfaction or friction"),
    ("measure without scores", lambda d: [o.pop("score") for o in d["questions"][2]["options"]],
     "questions[2].options", "needs a score on each option"),
    ("one option", lambda d: (_unmeasured_choice(d), d["questions"][2]["options"].pop()),
     "questions[2].options", "at least two"),
    ("options missing", lambda d: (_unmeasured_choice(d), d["questions"][2].pop("options")),
     "questions[2].options", "at least two"),
    ("option score above 100", _set(["questions", 2, "options", 0, "score"], 150),
     "questions[2].options[0].score", "0-100"),
    ("option score negative", _set(["questions", 2, "options", 1, "score"], -1),
     "questions[2].options[1].score", "0-100"),
    ("option score not a number", _set(["questions", 2, "options", 1, "score"], "10"),
     "questions[2].options[1].score", "0-100"),
    ("option without value", _delete(["questions", 2, "options", 0, "value"]), "questions[2].options[0]",
     "value and a label"),
    # anchors
    ("anchors single label", _set(["questions", 0, "anchors", "es"], ["Muy en desacuerdo"]),
     "questions[0].anchors.es", "[lowest label, highest label]"),
    ("anchors three labels", _set(["questions", 0, "anchors", "en"], ["a", "b", "c"]),
     "questions[0].anchors.en", "[lowest label, highest label]"),
    ("anchors not strings", _set(["questions", 0, "anchors", "en"], [1, 7]),
     "questions[0].anchors.en", "[lowest label, highest label]"),
    ("anchors missing locale", _delete(["questions", 0, "anchors", "es"]),
     "questions[0].anchors.es", "[lowest label, highest label]"),
    ("anchors as a string", _set(["questions", 0, "anchors", "es"], "desacuerdo / acuerdo"),
     "questions[0].anchors.es", "[lowest label, highest label]"),
]


@pytest.mark.parametrize(("mutate", "field", "fragment"), [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_each_error_is_reported_under_its_field_path(mutate, field, fragment):
    """One defect gives exactly one error, keyed by the path of the offending field."""
    doc = valid_doc()
    doc["intro"] = t("Two minutes.")
    mutate(doc)
    errors = errors_of(doc)
    assert set(errors) == {field}, errors
    assert fragment in errors[field]


def test_anchors_not_a_mapping_flags_every_locale():
    doc = valid_doc()
    doc["questions"][0]["anchors"] = ["Strongly disagree", "Strongly agree"]
    assert set(errors_of(doc)) == {"questions[0].anchors.en", "questions[0].anchors.es"}


def test_missing_translation_names_every_missing_locale():
    doc = valid_doc()
    doc["questions"][1]["text"] = {"en": "Overall?"}
    errors = errors_of(doc, ["en", "es", "fr"])
    assert "es" in errors["questions[1].text"] and "fr" in errors["questions[1].text"]


def test_all_errors_are_collected_in_one_exception():
    """The author sees every problem at once, and the exception message names each field."""
    doc = valid_doc()
    doc["key"] = "Bad Key"
    doc["questions"][0].pop("better")
    doc["questions"][3]["measure"] = "friction"
    with pytest.raises(QuestionSetError) as info:
        validate_question_set(doc, LOCALES)
    assert set(info.value.errors) == {"key", "questions[0].better", "questions[3].measure"}
    assert isinstance(info.value, ValueError)
    for field in info.value.errors:
        assert f"{field}:" in str(info.value)


def test_measured_choice_with_one_scored_option_says_it_needs_two_options():
    doc = valid_doc()
    doc["questions"][2]["options"].pop()  # the remaining option has a score
    errors = errors_of(doc)
    assert set(errors) == {"questions[2].options"}
    assert "at least two" in errors["questions[2].options"]


def test_question_key_with_trailing_newline_is_rejected():
    doc = valid_doc()
    doc["questions"][1]["key"] = "overall\n"
    assert "questions[1].key" in errors_of(doc)


def test_set_key_with_trailing_newline_is_rejected():
    doc = valid_doc()
    doc["key"] = "booking\n"
    assert "key" in errors_of(doc)


def test_unhashable_question_key_is_a_validation_error():
    doc = valid_doc()
    doc["questions"][1]["key"] = ["overall"]
    assert set(errors_of(doc)) == {"questions[1].key"}


def test_duplicate_option_values_are_rejected():
    doc = valid_doc()
    doc["questions"][2]["options"][1]["value"] = "short"  # scores 100 and 0 under one value
    errors = errors_of(doc)
    assert any(field.startswith("questions[2].options") for field in errors)


# --- goodness and score_answer ----------------------------------------------------------------

RATING = {"type": "rating", "measure": "satisfaction", "better": "high"}
EFFORT_HIGH = {"type": "effort", "measure": "friction", "better": "high"}
EFFORT_LOW = {"type": "effort", "measure": "friction", "better": "low"}
NPS = {"type": "nps", "measure": "satisfaction", "better": "high"}
YES_GOOD = {"type": "yes_no", "measure": "satisfaction", "better": "yes"}
NO_GOOD = {"type": "yes_no", "measure": "friction", "better": "no"}
CHOICE = {"type": "single_choice", "measure": "satisfaction",
          "options": [{"value": "great", "label": t("Great"), "score": 100},
                      {"value": "fine", "label": t("Fine"), "score": 60},
                      {"value": "nearly", "label": t("Nearly"), "score": 90},
                      {"value": "poor", "label": t("Poor"), "score": 0}]}


@pytest.mark.parametrize(("question", "value", "expected"), [
    (RATING, "1", 0.0), (RATING, "2", 25.0), (RATING, "3", 50.0), (RATING, "4", 75.0), (RATING, "5", 100.0),
    (EFFORT_HIGH, "1", 0.0), (EFFORT_HIGH, "4", 50.0), (EFFORT_HIGH, "7", 100.0),
    (EFFORT_HIGH, "2", 100 / 6),
    (EFFORT_LOW, "1", 100.0), (EFFORT_LOW, "4", 50.0), (EFFORT_LOW, "7", 0.0), (EFFORT_LOW, "6", 100 / 6),
    (NPS, "0", 0.0), (NPS, "8", 80.0), (NPS, "9", 90.0), (NPS, "10", 100.0),
    (YES_GOOD, "yes", 100.0), (YES_GOOD, "no", 0.0),
    (NO_GOOD, "no", 100.0), (NO_GOOD, "yes", 0.0),
    (CHOICE, "great", 100.0), (CHOICE, "fine", 60.0), (CHOICE, "poor", 0.0),
])
def test_goodness(question, value, expected):
    assert goodness(question, value) == pytest.approx(expected)


def test_rating_better_low_is_reversed():
    assert goodness({**RATING, "better": "low"}, "1") == 100.0
    assert goodness({**RATING, "better": "low"}, "5") == 0.0


@pytest.mark.parametrize(("question", "value"), [
    ({"type": "text"}, "Lovely staff"),
    ({"type": "yes_no", "better": "yes"}, "yes"),  # no measure: asked, not scored
    ({"type": "single_choice", "options": [{"value": "a", "label": t("A")}, {"value": "b", "label": t("B")}]}, "a"),
])
def test_unscored_answers(question, value):
    assert goodness(question, value) is None
    assert score_answer(question, value) == (None, None, None)


@pytest.mark.parametrize(("question", "value"), [
    (RATING, "0"), (RATING, "6"), (RATING, "4.5"), (RATING, "four"), (RATING, ""),
    (EFFORT_HIGH, "0"), (EFFORT_HIGH, "8"), (EFFORT_LOW, "8"),
    (NPS, "-1"), (NPS, "11"),
    (YES_GOOD, "maybe"), (YES_GOOD, "YES"), (NO_GOOD, ""),
    (CHOICE, "other"), (CHOICE, "Great"),
])
def test_out_of_range_or_unknown_values_raise_value_error(question, value):
    with pytest.raises(ValueError):
        goodness(question, value)
    with pytest.raises(ValueError):
        score_answer(question, value)


RATING_FRICTION = {"type": "rating", "measure": "friction", "better": "high"}
NPS_FRICTION = {"type": "nps", "measure": "friction", "better": "high"}
CHOICE_FRICTION = {**CHOICE, "measure": "friction",
                   "options": CHOICE["options"] + [{"value": "meh", "label": t("Meh"), "score": 10},
                                                   {"value": "okish", "label": t("Ok-ish"), "score": 11}]}


def test_top_box_threshold_is_90_on_the_measure_scale():
    assert TOP_BOX_SCORE == 90.0


@pytest.mark.parametrize(("question", "value", "top"), [
    # satisfaction: the top of the scale is the best end
    (RATING, "5", True), (RATING, "4", False), (RATING, "1", False),
    ({**RATING, "better": "low"}, "1", True), ({**RATING, "better": "low"}, "5", False),
    (NPS, "10", True), (NPS, "9", True), (NPS, "8", False), (NPS, "0", False),
    (YES_GOOD, "yes", True), (YES_GOOD, "no", False),
    (CHOICE, "great", True), (CHOICE, "nearly", True), (CHOICE, "fine", False), (CHOICE, "poor", False),
    # friction (score = 100 - goodness): the top of the scale is the WORST end, most friction
    (RATING_FRICTION, "1", True), (RATING_FRICTION, "2", False), (RATING_FRICTION, "5", False),
    (NPS_FRICTION, "0", True), (NPS_FRICTION, "1", True), (NPS_FRICTION, "2", False),
    (NPS_FRICTION, "9", False), (NPS_FRICTION, "10", False),
    ({**NPS_FRICTION, "better": "low"}, "10", True), ({**NPS_FRICTION, "better": "low"}, "9", True),
    ({**NPS_FRICTION, "better": "low"}, "8", False), ({**NPS_FRICTION, "better": "low"}, "0", False),
    (EFFORT_HIGH, "1", True), (EFFORT_HIGH, "2", False), (EFFORT_HIGH, "7", False),
    (EFFORT_LOW, "7", True), (EFFORT_LOW, "6", False), (EFFORT_LOW, "1", False),
    (NO_GOOD, "yes", True), (NO_GOOD, "no", False),
    ({**YES_GOOD, "measure": "friction"}, "no", True), ({**YES_GOOD, "measure": "friction"}, "yes", False),
    (CHOICE_FRICTION, "poor", True), (CHOICE_FRICTION, "meh", True), (CHOICE_FRICTION, "okish", False),
    (CHOICE_FRICTION, "nearly", False), (CHOICE_FRICTION, "great", False),
])
def test_top_box(question, value, top):
    """Top box is the top of the measure's own 0-100 scale: the best answers for satisfaction (5 of 5, the
    better end of 1-7, NPS 9-10, the better yes/no) and the worst for friction (most friction)."""
    assert score_answer(question, value)[2] is top


SCALE_TOP_BOXES = [
    # (type, measure, better, the answers in the top box)
    ("rating", "satisfaction", "high", {"5"}), ("rating", "satisfaction", "low", {"1"}),
    ("rating", "friction", "high", {"1"}), ("rating", "friction", "low", {"5"}),
    ("effort", "satisfaction", "high", {"7"}), ("effort", "satisfaction", "low", {"1"}),
    ("effort", "friction", "high", {"1"}), ("effort", "friction", "low", {"7"}),
    ("nps", "satisfaction", "high", {"9", "10"}), ("nps", "satisfaction", "low", {"0", "1"}),
    ("nps", "friction", "high", {"0", "1"}), ("nps", "friction", "low", {"9", "10"}),
]


@pytest.mark.parametrize(("qtype", "measure", "better", "expected"), SCALE_TOP_BOXES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in SCALE_TOP_BOXES])
def test_top_box_over_every_scale_point(qtype, measure, better, expected):
    """Every point of every scale: exactly the expected answers are top box, and they are the ones whose
    reported score reaches 90 (scores exactly 90 included, despite floating-point arithmetic)."""
    question = {"type": qtype, "measure": measure, "better": better}
    results = {value: score_answer(question, value) for value, _ in choices(question, "en")}
    assert {value for value, (_, _, top) in results.items() if top} == expected
    for value, (got_measure, score, top) in results.items():
        assert got_measure == measure
        assert top is (score >= TOP_BOX_SCORE), (value, score)


@pytest.mark.parametrize(("question", "value"), [
    (EFFORT_HIGH, "1"), (EFFORT_HIGH, "2"), (EFFORT_HIGH, "7"),
    (EFFORT_LOW, "1"), (EFFORT_LOW, "5"), (EFFORT_LOW, "7"),
    (NO_GOOD, "yes"), (NO_GOOD, "no"),
    (RATING_FRICTION, "1"), (NPS_FRICTION, "1"),
    (CHOICE_FRICTION, "fine"), (CHOICE_FRICTION, "meh"),
])
def test_friction_score_is_100_minus_goodness(question, value):
    measure, score, top = score_answer(question, value)
    good = goodness(question, value)
    assert measure == "friction"
    assert score == round(100.0 - good, 4)
    assert top is (good <= 100.0 - TOP_BOX_SCORE)  # most friction = least good


@pytest.mark.parametrize(("question", "value", "expected"), [
    (RATING_FRICTION, "1", ("friction", 100.0, True)),
    (RATING_FRICTION, "5", ("friction", 0.0, False)),
    (NPS_FRICTION, "0", ("friction", 100.0, True)),
    (NPS_FRICTION, "1", ("friction", 90.0, True)),
    (NPS_FRICTION, "10", ("friction", 0.0, False)),
    (NO_GOOD, "yes", ("friction", 100.0, True)),
    (NO_GOOD, "no", ("friction", 0.0, False)),
    (CHOICE_FRICTION, "meh", ("friction", 90.0, True)),
    (CHOICE_FRICTION, "okish", ("friction", 89.0, False)),
])
def test_friction_answers_score_and_top_box(question, value, expected):
    assert score_answer(question, value) == expected


@pytest.mark.parametrize(("question", "value"), [(RATING, "4"), (NPS, "9"), (YES_GOOD, "no"), (CHOICE, "fine")])
def test_satisfaction_score_is_goodness(question, value):
    assert score_answer(question, value)[:2] == ("satisfaction", goodness(question, value))


def test_score_is_rounded_to_four_places():
    """An effort of 2 (better high) is 16.67% good, so 83.3333 friction."""
    assert score_answer(EFFORT_HIGH, "2") == ("friction", 83.3333, False)


def test_canonical_form_scores_like_hand_built_questions():
    """The validator's output is what goodness() reads (defaults such as better=high included)."""
    questions = validate_question_set(valid_doc(), LOCALES)["questions"]
    assert score_answer(questions[0], "7") == ("friction", 0.0, False)  # easiest: least friction
    assert score_answer(questions[0], "1") == ("friction", 100.0, True)  # hardest: most friction, top box
    assert score_answer(questions[1], "4") == ("satisfaction", 75.0, False)
    assert score_answer(questions[1], "5") == ("satisfaction", 100.0, True)
    assert score_answer(questions[2], "long") == ("satisfaction", 0.0, False)
    assert score_answer(questions[3], "anything") == (None, None, None)


# --- content_hash -------------------------------------------------------------------------------


def test_content_hash_is_stable_under_key_order():
    a = {"key": "booking", "title": {"en": "A", "es": "Sí"}, "questions": [{"key": "q", "type": "rating"}]}
    b = {"questions": [{"type": "rating", "key": "q"}], "title": {"es": "Sí", "en": "A"}, "key": "booking"}
    assert content_hash(a) == content_hash(b)


def test_content_hash_is_sha256_hex_of_sorted_json():
    content = {"b": 1, "a": ["Sí", 2]}
    expected = hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
    assert content_hash(content) == expected and len(expected) == 64


@pytest.mark.parametrize("change", [
    lambda c: c["title"].update(en="B"),
    lambda c: c["questions"].reverse(),
    lambda c: c["questions"][0].update(required=False),
])
def test_content_hash_changes_with_content(change):
    content = {"title": {"en": "A"}, "questions": [{"key": "q1", "required": True}, {"key": "q2"}]}
    before = content_hash(content)
    change(content)
    assert content_hash(content) != before


# --- choices ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("question", "values"), [
    (RATING, ["1", "2", "3", "4", "5"]),
    (EFFORT_HIGH, ["1", "2", "3", "4", "5", "6", "7"]),
    (EFFORT_LOW, ["1", "2", "3", "4", "5", "6", "7"]),  # display order does not flip with `better`
    (NPS, [str(v) for v in range(11)]),
])
def test_scale_choices(question, values):
    assert choices(question, "en") == [(v, v) for v in values]


@pytest.mark.parametrize(("locale", "expected"), [
    ("en", [("yes", "Yes"), ("no", "No")]),
    ("es", [("yes", "Sí"), ("no", "No")]),
    ("fr", [("yes", "Yes"), ("no", "No")]),  # no translation: English
])
def test_yes_no_choices(locale, expected):
    assert choices(YES_GOOD, locale) == expected


def test_single_choice_choices_use_the_locale_label_in_option_order():
    assert choices(CHOICE, "es") == [("great", "Great (es)"), ("fine", "Fine (es)"),
                                     ("nearly", "Nearly (es)"), ("poor", "Poor (es)")]


def test_single_choice_falls_back_to_first_label():
    question = {"type": "single_choice", "options": [{"value": "a", "label": {"en": "Alpha"}},
                                                     {"value": "b", "label": {"en": "Beta", "es": "Beta ES"}}]}
    assert choices(question, "es") == [("a", "Alpha"), ("b", "Beta ES")]


def test_text_question_has_no_choices():
    assert choices({"type": "text"}, "en") == []
