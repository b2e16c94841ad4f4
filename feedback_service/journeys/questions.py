"""Question types, question-set validation and score normalisation: plain functions, no Flask."""
from __future__ import annotations

import hashlib
import json
import re

import wtforms

from ..errors import FieldErrors

MEASURES = ("satisfaction", "friction")
KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
# Question keys name the survey form's fields, so they must not shadow what a form already has.
RESERVED_KEYS = frozenset(n for n in dir(wtforms.Form) if not n.startswith("_")) | {
    "meta", "form_errors", "csrf_token", "submit", "hidden_tag", "is_submitted", "validate_on_submit", "recaptcha"}
# One question is a text survey: asked in the SMS itself, answered by replying.
# The editor advises 5 or fewer (journeys.guidance); past 10 a survey is no longer short at all.
MIN_QUESTIONS, MAX_QUESTIONS = 1, 10
MAX_TEXT_ANSWER = 2000

# type -> (lowest, highest, default better end); None where the type has no numeric scale.
SCALES = {
    "rating": (1, 5, "high"),
    "effort": (1, 7, None),  # CES wording varies, so the set must say which end is better
    "nps": (0, 10, "high"),
}
QUESTION_TYPES = ("rating", "effort", "nps", "yes_no", "single_choice", "text")
# An answer is in the top box when its score on its measure's 0-100 scale reaches this: for
# satisfaction the best point of a 1-5 or 1-7 scale, 9-10 on NPS, the better yes/no answer; for
# friction the worst of those (100 = most friction).
TOP_BOX_SCORE = 90.0


class QuestionSetError(FieldErrors):
    """A question-set document is invalid."""


def content_hash(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def validate_question_set(doc: dict, locales: list[str]) -> dict:
    """Check a question-set document against the journey's locales; return its canonical form."""
    errors: dict[str, str] = {}

    def texts(path: str, value, required=True) -> dict | None:
        if value is None and not required:
            return None
        if not isinstance(value, dict):
            errors[path] = f"must give a text per locale ({', '.join(locales)})"
            return None
        missing = [loc for loc in locales if not str(value.get(loc) or "").strip()]
        if missing:
            errors[path] = f"missing translation for {', '.join(missing)}"
        return {loc: str(value[loc]).strip() for loc in locales if value.get(loc)}

    key = doc.get("key")
    if not isinstance(key, str) or not re.fullmatch(r"[a-z][a-z0-9-]{0,79}", key):
        errors["key"] = "must be a lower-case slug"
    canonical = {"key": key, "title": texts("title", doc.get("title")), "questions": []}
    intro = texts("intro", doc.get("intro"), required=False)
    if intro:
        canonical["intro"] = intro

    questions = doc.get("questions")
    if not isinstance(questions, list) or not (MIN_QUESTIONS <= len(questions) <= MAX_QUESTIONS):
        errors["questions"] = f"a short survey has {MIN_QUESTIONS} to {MAX_QUESTIONS} questions"
        questions = questions if isinstance(questions, list) else []
    seen: set[str] = set()
    for i, q in enumerate(questions):
        path = f"questions[{i}]"
        if not isinstance(q, dict):
            errors[path] = "must be a mapping"
            continue
        qkey, qtype = q.get("key"), q.get("type")
        if not isinstance(qkey, str) or not KEY_RE.fullmatch(qkey):
            errors[f"{path}.key"] = "must be a lower-case identifier (letters, digits, _)"
        elif qkey in seen or qkey in RESERVED_KEYS:
            errors[f"{path}.key"] = f"{qkey!r} is used twice or reserved"
        else:
            seen.add(qkey)
        if qtype not in QUESTION_TYPES:
            errors[f"{path}.type"] = f"must be one of {', '.join(QUESTION_TYPES)}"
            continue
        out = {"key": qkey, "type": qtype, "text": texts(f"{path}.text", q.get("text")),
               "required": bool(q.get("required", qtype != "text"))}
        measure = q.get("measure")
        if qtype == "text":
            if measure:
                errors[f"{path}.measure"] = "free-text answers are not scored"
        elif measure is not None and measure not in MEASURES:
            errors[f"{path}.measure"] = "must be satisfaction or friction"
        elif measure:
            out["measure"] = measure
        if qtype in SCALES:
            if measure is None:
                errors[f"{path}.measure"] = "scale questions must feed satisfaction or friction"
            better = q.get("better", SCALES[qtype][2])
            if better not in ("high", "low"):
                errors[f"{path}.better"] = "must be high or low (which end of the scale is better)"
            out["better"] = better
            anchors = q.get("anchors")
            if _all_blank(anchors):
                anchors = None  # the editor's empty label boxes: no labels
            if anchors is not None:
                out["anchors"] = {}
                for loc in locales:
                    pair = anchors.get(loc) if isinstance(anchors, dict) else None
                    if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(a, str) for a in pair)):
                        errors[f"{path}.anchors.{loc}"] = "must be [lowest label, highest label]"
                    elif not all(a.strip() for a in pair):
                        errors[f"{path}.anchors.{loc}"] = f"missing translation for {loc}"
                    else:
                        out["anchors"][loc] = pair
        elif qtype == "yes_no":
            better = q.get("better", "yes")
            if better not in ("yes", "no"):
                errors[f"{path}.better"] = "must be yes or no"
            out["better"] = better
        elif qtype == "single_choice":
            options = q.get("options")
            if not isinstance(options, list) or len(options) < 2:
                errors[f"{path}.options"] = "needs at least two options"
                options = []
            out["options"] = []
            values = set()
            for j, opt in enumerate(options):
                opath = f"{path}.options[{j}]"
                if not isinstance(opt, dict) or not isinstance(opt.get("value"), str):
                    errors[opath] = "needs a value and a label per locale"
                    continue
                if opt["value"] in values:
                    errors[f"{opath}.value"] = f"{opt['value']!r} is used twice"
                values.add(opt["value"])
                option = {"value": opt["value"], "label": texts(f"{opath}.label", opt.get("label"))}
                if "score" in opt:
                    if not isinstance(opt["score"], (int, float)) or not 0 <= opt["score"] <= 100:
                        errors[f"{opath}.score"] = "must be 0-100 (100 = best)"
                    option["score"] = opt["score"]
                out["options"].append(option)
            scored = [o for o in out["options"] if "score" in o]
            if scored and len(scored) != len(out["options"]):
                errors[f"{path}.options"] = "score every option or none"
            if scored and not measure:
                errors[f"{path}.measure"] = "scored options must feed satisfaction or friction"
            if measure and not scored and f"{path}.options" not in errors:
                errors[f"{path}.options"] = "a measured choice question needs a score on each option"
        canonical["questions"].append(out)

    sms = doc.get("sms", False)
    if not isinstance(sms, bool):
        errors["sms"] = "must be true or false"
    elif sms:
        # Its wording goes into the text itself, so the team says so on purpose, and keeps it to
        # one closed question (and, like every text, free of clinical detail).
        if len(canonical["questions"]) != 1 or canonical["questions"][0]["type"] not in SMS_ANSWERABLE:
            errors["sms"] = "a survey answered by text has exactly one closed question"
        canonical["sms"] = True
    if errors:
        raise QuestionSetError(errors)
    return canonical


def _all_blank(anchors) -> bool:
    return isinstance(anchors, dict) and bool(anchors) and all(
        isinstance(pair, list) and all(isinstance(a, str) and not a.strip() for a in pair)
        for pair in anchors.values())


def choices(question: dict, locale: str) -> list[tuple[str, str]]:
    """(value, label) pairs for a closed question, in display order (scale anchors are the page's job)."""
    qtype = question["type"]
    if qtype in SCALES:
        lo, hi, _ = SCALES[qtype]
        return [(str(v), str(v)) for v in range(lo, hi + 1)]
    if qtype == "yes_no":
        return [("yes", YES_NO[locale][0] if locale in YES_NO else "Yes"),
                ("no", YES_NO[locale][1] if locale in YES_NO else "No")]
    if qtype == "single_choice":
        return [(o["value"], o["label"].get(locale) or next(iter(o["label"].values()))) for o in question["options"]]
    return []


YES_NO = {"en": ("Yes", "No"), "es": ("Sí", "No")}
# Replies read as yes or no to a text survey, in any of our languages.
SMS_YES = {"y", "yes", "si", "sí", "s", "yeah", "yep"}
SMS_NO = {"n", "no", "nope"}
SMS_ANSWERABLE = ("rating", "effort", "nps", "yes_no", "single_choice")


def sms_question(content: dict) -> dict | None:
    """The question of a set marked to be answered by replying to a text (`sms: true`)."""
    return content["questions"][0] if content.get("sms") else None


def reply_words(text: str) -> list[str]:
    """A text's words, lower-cased, without punctuation ("Opt-Out!" -> ["opt", "out"])."""
    return re.findall(r"[^\W_]+", text.lower())


def parse_sms_answer(question: dict, reply: str) -> str | None:
    """The answer value in a patient's text reply ("4", "4 stars", "Yes!", "2" for the second
    option), or None when the reply does not read as one."""
    words = reply_words(reply)
    numbers = [int(w) for w in words if w.isascii() and w.isdigit()]  # "²" is a digit, not a number
    qtype = question["type"]
    if qtype in SCALES:
        low, high, _ = SCALES[qtype]
        # One number in range, and nothing else that looks like an answer ("4 or 5" is not one).
        if len(numbers) == 1 and low <= numbers[0] <= high:
            return str(numbers[0])
        return None
    if qtype == "yes_no":
        said = set(words) & (SMS_YES | SMS_NO)
        if len(said) == 1:
            return "yes" if said <= SMS_YES else "no"
        return None
    if qtype == "single_choice":
        options = question["options"]
        if len(numbers) == 1 and 1 <= numbers[0] <= len(options) and len(words) <= 3:
            return options[numbers[0] - 1]["value"]
        text = " ".join(words)
        matches = [o["value"] for o in options
                   if text and any(text == " ".join(reply_words(label)) for label in o["label"].values())]
        return matches[0] if len(matches) == 1 else None
    return None


def goodness(question: dict, value: str) -> float | None:
    """How good an answer is, 0-100 (100 = the better end), or None if it is not scored."""
    qtype = question["type"]
    if qtype in SCALES:
        lo, hi, _ = SCALES[qtype]
        v = int(value)
        if not lo <= v <= hi:
            raise ValueError(f"{value} is outside {lo}-{hi}")
        frac = (v - lo) / (hi - lo)
        return 100.0 * (frac if question["better"] == "high" else 1 - frac)
    if qtype == "yes_no" and "measure" in question:
        if value not in ("yes", "no"):
            raise ValueError(f"{value!r} is not yes or no")
        return 100.0 if value == question["better"] else 0.0
    if qtype == "single_choice" and "measure" in question:
        for option in question["options"]:
            if option["value"] == value:
                return float(option["score"])
        raise ValueError(f"{value!r} is not an option")
    return None


def score_answer(question: dict, value: str) -> tuple[str | None, float | None, bool | None]:
    """(measure, score 0-100 on that measure's scale, top box) for one answer."""
    good = goodness(question, value)
    if good is None:
        return None, None, None
    measure = question["measure"]
    score = round(good if measure == "satisfaction" else 100.0 - good, 4)
    return measure, score, score >= TOP_BOX_SCORE
