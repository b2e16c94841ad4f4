"""Advice for writing a good short survey: warnings shown in the editor, never refusals."""
from __future__ import annotations

import re

from textstat.textstat import textstatistics

ADVISED_QUESTIONS = 5
# Spanish readability (Fernández Huerta, 0-100, higher is easier): under 60 reads as "somewhat
# difficult", about a US 8th-9th grade level.
SPANISH_EASE_FLOOR = 60.0
# Two things asked at once ("Were the nurses kind and helpful?"); set phrases are not two things.
_JOINERS = {"en": re.compile(r"\b(and|as well as)\b", re.I), "es": re.compile(r"\s(y|e)\s", re.I)}
_SET_PHRASES = re.compile(r"friends and family|family and friends|familiares y amigos|amigos y familiares", re.I)


def _reader(locale: str) -> textstatistics:
    reader = textstatistics()
    reader.set_lang(locale)
    return reader


def reading_problem(text: str, locale: str, grade_target: float) -> str | None:
    """Why this text reads above the target, or None (also for languages we cannot measure)."""
    if len(text.split()) < 4:
        return None  # too short for any readability formula to mean anything
    if locale == "en":
        grade = _reader("en").flesch_kincaid_grade(text)
        if grade > grade_target:
            return f"reads at about grade {grade:.0f}; aim for grade {grade_target:g} or below"
    elif locale == "es":
        ease = _reader("es").fernandez_huerta(text)
        if ease < SPANISH_EASE_FLOOR:
            return f"reading ease {ease:.0f} (Fernández Huerta); aim for {SPANISH_EASE_FLOOR:g} or above"
    return None


def double_barrelled(text: str, locale: str) -> bool:
    joiner = _JOINERS.get(locale)
    return bool(joiner and joiner.search(_SET_PHRASES.sub("", text)))


def guidance(doc: dict, locales: list[str], grade_target: float) -> list[tuple[str, str]]:
    """(field path, advice) pairs for a question-set document, in editor order."""
    advice = []
    questions = [q for q in doc.get("questions") or [] if isinstance(q, dict)]
    if len(questions) > ADVISED_QUESTIONS:
        advice.append(("questions", f"{len(questions)} questions: surveys of {ADVISED_QUESTIONS} or fewer "
                                    "get many more answers"))
    for i, q in enumerate(questions):
        texts = q.get("text") if isinstance(q.get("text"), dict) else {}
        for locale in locales:
            text = str(texts.get(locale) or "").strip()
            if not text:
                continue
            problem = reading_problem(text, locale, grade_target)
            if problem:
                advice.append((f"questions[{i}].text.{locale}", problem))
            if q.get("type") != "text" and double_barrelled(text, locale):
                advice.append((f"questions[{i}].text.{locale}",
                               "may ask two things at once; a patient who feels differently about each "
                               "cannot answer - split it"))
    return advice
