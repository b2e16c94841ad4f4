"""The question-set editor's form <-> a question-set document. Plain functions: the editor posts
the whole draft each time, and every button first keeps what was typed."""
from __future__ import annotations

import math

from ..journeys.editing import blank_question
from ..journeys.questions import QUESTION_TYPES, SCALES

MAX_FIELD = 500


def _text(form, name: str) -> str:
    return (form.get(name) or "").strip()[:MAX_FIELD]


def doc_from_form(form, doc: dict, locales: list[str]) -> dict:
    """The document as edited: fields named title-<loc>, q<i>-text-<loc>, q<i>-opt<j>-label-<loc>..."""
    out = {"key": doc["key"], "stage": doc["stage"],
           "title": {loc: _text(form, f"title-{loc}") for loc in locales}}
    intro = {loc: _text(form, f"intro-{loc}") for loc in locales}
    if any(intro.values()):
        out["intro"] = intro
    if form.get("sms"):
        out["sms"] = True
    questions = []
    for i, old in enumerate(doc.get("questions") or []):
        p = f"q{i}-"
        qtype = form.get(p + "type") if form.get(p + "type") in QUESTION_TYPES else old.get("type", "rating")
        q = {"key": _text(form, p + "key") or old.get("key", ""), "type": qtype,
             "text": {loc: _text(form, f"{p}text-{loc}") for loc in locales}}
        q["required"] = bool(form.get(p + "required"))  # the editor shows the box for every question
        if qtype != "text" and form.get(p + "measure"):
            q["measure"] = form[p + "measure"]
        if qtype in SCALES:
            q["better"] = form.get(p + "better") or "high"
            # Optional (all empty: none); once given in one language, publishing asks for all.
            q["anchors"] = {loc: [_text(form, f"{p}low-{loc}"), _text(form, f"{p}high-{loc}")] for loc in locales}
        elif qtype == "yes_no":
            q["better"] = form.get(p + "better") if form.get(p + "better") in ("yes", "no") else "yes"
        elif qtype == "single_choice":
            q["options"] = []
            for j in range(len(old.get("options") or [])):
                o = f"{p}opt{j}-"
                option = {"value": _text(form, o + "value"),
                          "label": {loc: _text(form, f"{o}label-{loc}") for loc in locales}}
                score = _text(form, o + "score")
                if score:
                    try:
                        number = float(score) if "." in score else int(score)
                        # inf and nan are not JSON (PostgreSQL refuses them): kept as typed instead
                        option["score"] = number if math.isfinite(number) else score
                    except ValueError:
                        option["score"] = score  # kept as typed; publishing names it
                q["options"].append(option)
            if not q["options"] and old.get("type") != "single_choice":
                q["options"] = blank_question("single_choice", i + 1, locales)["options"]
        questions.append(q)
    out["questions"] = questions
    return out


def apply_action(doc: dict, action: str, locales: list[str], new_type: str = "rating") -> dict:
    """Add, move or delete a question or option; `action` is the pressed button's value."""
    questions = doc["questions"]
    verb, _, rest = action.partition(":")
    if verb == "add-question":
        keys = {q.get("key") for q in questions}
        n = len(questions) + 1
        while f"question_{n}" in keys:
            n += 1
        questions.append(blank_question(new_type if new_type in QUESTION_TYPES else "rating", n, locales))
        return doc
    parts = [int(x) for x in rest.split(":") if x.isdigit()]
    if not parts or not 0 <= parts[0] < len(questions):
        return doc
    i = parts[0]
    if verb in ("up", "down"):
        j = i - 1 if verb == "up" else i + 1
        if 0 <= j < len(questions):
            questions[i], questions[j] = questions[j], questions[i]
    elif verb == "delete" and len(questions) > 1:
        questions.pop(i)
    elif verb == "add-option" and questions[i].get("type") == "single_choice":
        options = questions[i].setdefault("options", [])
        options.append({"value": f"option_{len(options) + 1}", "label": {loc: "" for loc in locales}})
    elif verb == "delete-option" and len(parts) == 2 and 0 <= parts[1] < len(questions[i].get("options") or []) \
            and len(questions[i]["options"]) > 2:
        questions[i]["options"].pop(parts[1])
    return doc
