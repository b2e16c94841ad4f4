"""Surveys answered by text: the `sms` flag on a question set, reading replies, counting segments."""
from __future__ import annotations

import pytest

from feedback_service.channels.base import Pacer, sms_segments
from feedback_service.journeys.questions import QuestionSetError, parse_sms_answer, sms_question, validate_question_set

LOCALES = ["en", "es"]


def t(text: str) -> dict:
    return {"en": text, "es": f"{text} (es)"}


def pulse(**changes) -> dict:
    doc = {"key": "pulse", "title": t("Booking"), "sms": True,
           "questions": [{"key": "ease", "type": "rating", "measure": "satisfaction", "text": t("How easy?")}]}
    doc.update(changes)
    return doc


def test_a_set_marked_for_text_keeps_the_mark_and_its_question_is_the_one_asked():
    content = validate_question_set(pulse(), LOCALES)
    assert content["sms"] is True and sms_question(content)["key"] == "ease"


def test_an_unmarked_set_is_never_asked_by_text_and_its_canonical_form_is_unchanged():
    content = validate_question_set(pulse(sms=False), LOCALES)
    assert "sms" not in content and sms_question(content) is None  # older versions keep their hash


@pytest.mark.parametrize("changes", [
    {"questions": pulse()["questions"] * 2},
    {"questions": [{"key": "why", "type": "text", "text": t("Why?")}]},
    {"sms": "yes"},
])
def test_only_one_closed_question_can_be_asked_by_text(changes):
    with pytest.raises(QuestionSetError) as info:
        validate_question_set(pulse(**changes), LOCALES)
    assert "sms" in info.value.errors


RATING = {"type": "rating"}
NPS = {"type": "nps"}
YES_NO = {"type": "yes_no"}
CHOICE = {"type": "single_choice", "options": [{"value": "soon", "label": {"en": "Same week", "es": "Misma semana"}},
                                                {"value": "late", "label": {"en": "Later", "es": "Más tarde"}}]}


@pytest.mark.parametrize(("question", "reply", "value"), [
    (RATING, "4", "4"), (RATING, " 5! ", "5"), (RATING, "4 stars", "4"), (RATING, "I'd say 3", "3"),
    (RATING, "6", None), (RATING, "0", None), (RATING, "4 or 5", None), (RATING, "four", None), (RATING, "", None),
    (NPS, "10", "10"), (NPS, "0", "0"), (NPS, "11", None),
    (YES_NO, "Yes", "yes"), (YES_NO, "y", "yes"), (YES_NO, "Sí", "yes"), (YES_NO, "no!", "no"),
    (YES_NO, "yes no", None), (YES_NO, "maybe", None),
    (CHOICE, "1", "soon"), (CHOICE, "2", "late"), (CHOICE, "3", None), (CHOICE, "later", "late"),
    (CHOICE, "Más tarde", "late"), (CHOICE, "sometime later please", None),
])
def test_replies_are_read_as_answers_only_when_unambiguous(question, reply, value):
    assert parse_sms_answer(question, reply) == value


@pytest.mark.parametrize(("body", "segments"), [
    ("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3),
    ("é" * 160, 1),  # é is in the GSM alphabet
    ("á" * 70, 1), ("á" * 71, 2), ("¿Qué tan fácil fue reservar su cita?", 1),
    ("€" * 80, 1), ("€" * 81, 2),  # two septets each
    ("😀" * 35, 1), ("😀" * 36, 2),  # two UTF-16 units each
])
def test_sms_segments_count_as_carriers_do(body, segments):
    assert sms_segments(body) == segments


def test_the_pacer_spaces_units_not_calls():
    import time
    pacer = Pacer(100.0)  # 10 ms a unit
    start = time.monotonic()
    pacer.wait(3)
    pacer.wait(1)  # must wait out the first call's three units
    assert time.monotonic() - start >= 0.029
