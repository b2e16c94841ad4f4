"""The question-set library's rules: what a journey and its question sets must hold to be loaded,
and how they are upserted into the database. yaml_io reads and writes the files themselves.

Layout: surveys/<journey>/journey.yaml (stages, touchpoints, trigger rules) and one
surveys/<journey>/<question-set>.yaml per question set. Loading is an upsert: a question set
whose content changed gets a new published version; an unchanged one is left alone.
"""
from __future__ import annotations

import re
from datetime import time, timedelta
from pathlib import Path

from sqlalchemy import select

from ..channels.base import MEDIA
from ..extensions import db
from ..scheduling.reminders import EXPIRY_MARGIN as REMINDER_EXPIRY_MARGIN
from ..sqltypes import utcnow
from .models import (EVENT_TYPES, HCAHPS_HOLDS, TOUCHPOINT_KINDS, Journey, QuestionSet, QuestionSetVersion, Stage,
                     Touchpoint, TriggerRule)
from .questions import QuestionSetError, content_hash, validate_question_set

SLUG_RE = re.compile(r"[a-z][a-z0-9-]{0,79}")
LOCALE_RE = SLUG_RE  # "en", "es", "pt-br": lower-case tags

# The fields each part of the files may have, in the order an export writes them.
JOURNEY_FIELDS = ("slug", "name", "default", "locales", "hcahps_sampled", "retired", "stages", "rules")
STAGE_FIELDS = ("slug", "name", "retired", "touchpoints")
TOUCHPOINT_FIELDS = ("slug", "name", "kind", "retired")
RULE_FIELDS = ("event", "question_set", "touchpoint", "delay_minutes", "channels", "reminder_hours",
               "link_ttl_days", "fatigue_days", "window_start", "window_end", "exclude_codes", "hcahps", "active")
# A rule's optional fields, and what leaving one out means.
RULE_DEFAULTS = {"reminder_hours": None, "link_ttl_days": None, "fatigue_days": None, "window_start": None,
                 "window_end": None, "exclude_codes": [], "hcahps": "skip", "active": True}
SET_FIELDS = ("key", "stage", "sms", "title", "intro", "questions")
QUESTION_FIELDS = ("key", "type", "measure", "better", "required", "text", "anchors", "options")
OPTION_FIELDS = ("value", "score", "label")

# (file, field path such as "questions[1].text" or "" for the whole file, message)
Problem = tuple[Path, str, str]


# Checks shared by the workspace (editing.py) and the files, and setting a rule from checked fields.

def name_errors(name: str) -> dict[str, str]:
    return {} if (name or "").strip() and len(name) <= 200 else {"name": "required, at most 200 characters"}


def locale_errors(locales: list[str]) -> dict[str, str]:
    if not locales or not all(LOCALE_RE.fullmatch(x) for x in locales) or len(set(locales)) != len(locales):
        return {"locales": "one or more distinct locale codes, the fallback first (en es)"}
    return {}


HHMM_RE = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


def rule_field_errors(fields: dict, allowed: tuple[time, time] | None = None,
                      default_ttl_days: int | None = None) -> dict[str, str]:
    """The checks of a rule's own fields, against the service-wide sending hours its own must lie
    within and the default link lifetime, when given (the YAML loader's too)."""
    errors = {}
    if fields.get("event") not in EVENT_TYPES:
        errors["event"] = f"one of {', '.join(EVENT_TYPES)}"
    delay = fields.get("delay_minutes")
    if not _whole(delay) or not 0 <= delay <= 60 * 24 * 365:
        errors["delay_minutes"] = "0 minutes to a year"
    channels = fields.get("channels")
    if not (isinstance(channels, list) and channels and len(set(channels)) == len(channels)
            and all(c in MEDIA for c in channels)):
        errors["channels"] = f"one or more of {', '.join(MEDIA)}, in order of preference, each once"
    for name, top in (("reminder_hours", 24 * 30), ("link_ttl_days", 90), ("fatigue_days", 365)):
        value = fields.get(name)
        if value is not None and (not _whole(value) or not 1 <= value <= top):
            errors[name] = f"empty, or a whole number from 1 to {top}"
    ttl = fields.get("link_ttl_days") or default_ttl_days
    if "reminder_hours" not in errors and fields.get("reminder_hours") and _whole(ttl) \
            and timedelta(hours=fields["reminder_hours"]) > timedelta(days=ttl) - REMINDER_EXPIRY_MARGIN:
        # The reminder job skips a reminder whose link is about to expire.
        errors["reminder_hours"] = (f"must come at least {REMINDER_EXPIRY_MARGIN.total_seconds() / 3600:g} hours "
                                    f"before the link expires ({ttl} days)")
    start, end = fields.get("window_start"), fields.get("window_end")
    if (start is None) != (end is None):
        errors["window_start"] = "give both ends of the sending hours, or neither"
    elif start is not None:
        if not all(isinstance(t, str) and HHMM_RE.fullmatch(t) for t in (start, end)):
            errors["window_start"] = "times as HH:MM"
        elif time.fromisoformat(start) >= time.fromisoformat(end):
            errors["window_start"] = "the start must come before the end"
        elif allowed and (time.fromisoformat(start) < allowed[0] or time.fromisoformat(end) > allowed[1]):
            errors["window_start"] = (f"must lie within the service's sending hours, "
                                      f"{allowed[0]:%H:%M} to {allowed[1]:%H:%M}")
    codes = fields.get("exclude_codes")
    if not isinstance(codes, list) or not all(isinstance(c, str) and 0 < len(c) <= 64 for c in codes):
        errors["exclude_codes"] = "a list of codes"
    if fields.get("hcahps", "skip") not in HCAHPS_HOLDS:
        errors["hcahps"] = f"one of {', '.join(HCAHPS_HOLDS)}"
    return errors


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def apply_rule(rule: TriggerRule, journey: Journey, fields: dict) -> None:
    """Set a rule's columns from checked fields (also used by the library loader)."""
    qs = journey.question_set(fields["question_set"])
    rule.question_set = qs
    rule.default_touchpoint = qs.stage.touchpoint(fields["touchpoint"])
    rule.delay_minutes = fields["delay_minutes"]
    rule.channels = list(fields["channels"])
    rule.reminder_hours = fields.get("reminder_hours")
    rule.link_ttl_days = fields.get("link_ttl_days")
    rule.fatigue_days = fields.get("fatigue_days")
    rule.window_start, rule.window_end = fields.get("window_start"), fields.get("window_end")
    rule.exclude_codes = list(fields.get("exclude_codes") or [])
    rule.hcahps = fields.get("hcahps", "skip")
    rule.active = fields.get("active", True)


class LibraryError(ValueError):
    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def load_library(root: Path) -> dict:
    """Validate every file under root, then upsert it all in the current transaction (see
    yaml_io.import_library; this is its older name)."""
    from .yaml_io import import_library  # yaml_io builds on this module

    return import_library(root)


def check_library(journeys: list[tuple[Path, object, list[tuple[Path, object]]]],
                  allowed: tuple[time, time] | None = None, default_ttl_days: int | None = None) -> list[Problem]:
    """Every problem in these parsed journeys (journey file, its document, [(set file, document)]),
    without writing anything. `allowed` (the service's sending hours) and `default_ttl_days` (its
    link lifetime) are what rules are checked against, as in the workspace."""
    problems = [p for path, doc, sets in journeys
                for p in _check_journey(path, doc, sets, _existing(doc), allowed, default_ttl_days)]
    defaults = [(path, doc.get("slug")) for path, doc, _ in journeys
                if isinstance(doc, dict) and doc.get("default") is True]
    for path, _slug in defaults[1:]:
        problems.append((path, "default", f"only one journey can be the default ({defaults[0][1]} is too)"))
    return problems


def _check_journey(path: Path, doc, sets: list[tuple[Path, object]], existing: Journey | None = None,
                   allowed: tuple[time, time] | None = None, default_ttl_days: int | None = None) -> list[Problem]:
    """One journey file and its question-set files; `existing` is the journey as the database has it.
    What a file restates unchanged from the database is never refused (an export imports again)."""
    if not isinstance(doc, dict):
        return [(path, "", "must be a mapping (slug, name, locales, stages, rules)")]
    errs: list[Problem] = []

    def err(field: str, message: str) -> None:
        errs.append((path, field, message))

    _unknown_fields(doc, JOURNEY_FIELDS, "", err)
    slug = doc.get("slug")
    if not isinstance(slug, str) or not SLUG_RE.fullmatch(slug):
        err("slug", "must be a lower-case slug")
    elif slug != path.parent.name:
        err("slug", f"must be the journey's folder name, {path.parent.name}")
    for message in name_errors(_str(doc.get("name"))).values():
        err("name", message)
    locales = doc.get("locales")
    if not (isinstance(locales, list) and all(isinstance(x, str) for x in locales)):
        locales = []
    for message in locale_errors(locales).values():
        err("locales", message)
    for flag in ("default", "hcahps_sampled", "retired"):
        _check_flag(doc, flag, "", err)

    # A journey or stage may be empty for now: the workspace creates them that way.
    stages = doc.get("stages")
    if not isinstance(stages, list):
        err("stages", "a list of stages (each with its touchpoints)")
        stages = []
    touchpoints_of: dict[str, dict[str, dict]] = {}  # stage slug -> touchpoint slug -> its document
    for i, st in enumerate(stages):
        at = f"stages[{i}]"
        if not isinstance(st, dict):
            err(at, "needs a slug, a name and touchpoints")
            continue
        _unknown_fields(st, STAGE_FIELDS, at, err)
        stage_slug = _slug(st, at, touchpoints_of, err)
        for message in name_errors(_str(st.get("name"))).values():
            err(f"{at}.name", message)
        _check_flag(st, "retired", at, err)
        tps = st.get("touchpoints")
        if not isinstance(tps, list):
            err(f"{at}.touchpoints", "a list of touchpoints")
            tps = []
        tp_docs: dict[str, dict] = {}
        for j, tp in enumerate(tps):
            tp_at = f"{at}.touchpoints[{j}]"
            if not isinstance(tp, dict):
                err(tp_at, f"needs a slug, a name and a kind ({', '.join(TOUCHPOINT_KINDS)})")
                continue
            _unknown_fields(tp, TOUCHPOINT_FIELDS, tp_at, err)
            tp_slug = _slug(tp, tp_at, tp_docs, err)
            for message in name_errors(_str(tp.get("name"))).values():
                err(f"{tp_at}.name", message)
            if tp.get("kind") not in TOUCHPOINT_KINDS:
                err(f"{tp_at}.kind", f"one of {', '.join(TOUCHPOINT_KINDS)}")
            _check_flag(tp, "retired", tp_at, err)
            if tp_slug is not None:
                tp_docs[tp_slug] = tp
        if stage_slug is not None:
            touchpoints_of[stage_slug] = tp_docs

    sets_in_db = {qs.key: qs for qs in existing.question_sets} if existing else {}
    set_stage: dict[str, str] = {}  # question-set key -> its stage's slug, for the sets the files publish
    for qpath, qs in sets:
        if not isinstance(qs, dict):
            errs.append((qpath, "", "must be a mapping (key, stage, title, questions)"))
            continue
        _check_set_fields(qs, lambda field, message, qpath=qpath: errs.append((qpath, field, message)))
        stage, key = qs.get("stage"), qs.get("key")
        was = sets_in_db.get(key) if isinstance(key, str) else None
        if not isinstance(stage, str) or stage not in touchpoints_of:
            errs.append((qpath, "stage", f"{stage!r} is not a stage of this journey"))
        elif was is not None and was.stage.slug != stage:
            errs.append((qpath, "stage", f"question set {key} belongs to stage {was.stage.slug}, where its answers "
                                         f"are counted; give a set for another stage its own key"))
        try:
            validate_question_set(qs, locales)
        except QuestionSetError as exc:
            if not _is_published_as(qs, was.current if was else None):
                errs.extend((qpath, field, message) for field, message in exc.errors.items())
        if isinstance(key, str) and key != qpath.stem:
            # An export names each file after its set: any other name would not come back the same.
            errs.append((qpath, "key", f"must be the file's name, {qpath.stem}"))
        elif isinstance(key, str) and isinstance(stage, str):
            set_stage[key] = stage

    # A stage or touchpoint retired after a rule chose it stays the rule's until the rule is changed.
    kept = {(r.event_type, r.question_set.key, r.default_touchpoint.slug) for r in (existing.rules if existing else [])}
    stage_docs = {st["slug"]: st for st in stages if isinstance(st, dict) and isinstance(st.get("slug"), str)}
    rules = doc.get("rules")
    if rules is not None and not isinstance(rules, list):
        err("rules", "a list of trigger rules")
    events: dict[str, int] = {}
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        at = f"rules[{i}]"
        if not isinstance(rule, dict):
            err(at, "must be a mapping")
            continue
        _unknown_fields(rule, RULE_FIELDS, at, err)
        for field, message in _rule_errors(rule, allowed, default_ttl_days).items():
            err(f"{at}.{field}", message)
        event = rule.get("event")
        if isinstance(event, str) and event in events:
            err(f"{at}.event", f"{event} has a rule already (rules[{events[event]}])")
        elif isinstance(event, str):
            events[event] = i
        key, touchpoint = rule.get("question_set"), rule.get("touchpoint")
        in_db = sets_in_db.get(key) if isinstance(key, str) else None
        was_kept = all(isinstance(x, str) for x in (event, key, touchpoint)) and (event, key, touchpoint) in kept
        # As editing.rule_errors checks them, against what the files say: a set the files publish,
        # or one published before whose file is left out (it stays as it is).
        stage = set_stage.get(key) if isinstance(key, str) else None
        if stage is None and in_db is not None and in_db.current is not None:
            stage = in_db.stage.slug
        if stage is None:
            err(f"{at}.question_set", "publish this question set first" if in_db is not None
                else f"no question set {key!r} in this journey")
        elif stage not in touchpoints_of:
            err(f"{at}.question_set", f"question set {key} is in stage {stage}, which this journey does not list")
        elif stage_docs[stage].get("retired") is True and not was_kept:
            err(f"{at}.question_set", "its stage is retired")
        else:
            tp = touchpoints_of[stage].get(touchpoint) if isinstance(touchpoint, str) else None
            if tp is None:
                err(f"{at}.touchpoint", f"{touchpoint!r} is not a touchpoint of stage {stage}")
            elif tp.get("retired") is True and not was_kept:
                err(f"{at}.touchpoint", "this touchpoint is retired")
    return errs


_WINDOW = ("window_start", "window_end")


def _rule_errors(rule: dict, allowed: tuple[time, time] | None, default_ttl_days: int | None) -> dict[str, str]:
    """The workspace's checks of a rule's fields (editing.rule_errors), as a file gives them."""
    fields = {**RULE_DEFAULTS, **rule}
    # rule_errors puts channels in a set: a list of mappings goes in as a value it refuses instead.
    if isinstance(fields.get("channels"), list) and not all(isinstance(c, str) for c in fields["channels"]):
        fields["channels"] = None
    # Files may give 0 days (a link that expires at once, no fatigue window), which tests and
    # drills use; the workspace offers 1 and up.
    for name in ("link_ttl_days", "fatigue_days"):
        if type(fields[name]) is int and fields[name] == 0:
            fields[name] = None
    errors = {}
    for name in _WINDOW:
        if fields[name] is not None and not isinstance(fields[name], str):
            errors[name] = 'a time as "HH:MM", in quotes (unquoted, 19:00 reads as a number)'
    for name, message in rule_field_errors(fields, allowed, default_ttl_days).items():
        if not (name in _WINDOW and errors):
            errors[name] = message
    if not isinstance(fields["active"], bool):
        errors["active"] = "true or false"
    return errors


def _check_set_fields(qs: dict, err) -> None:
    """Unknown fields in a question-set document: they would be dropped, so they are refused."""
    _unknown_fields(qs, SET_FIELDS, "", err)
    for i, q in enumerate(qs.get("questions") if isinstance(qs.get("questions"), list) else []):
        if isinstance(q, dict):
            _unknown_fields(q, QUESTION_FIELDS, f"questions[{i}]", err)
            for j, opt in enumerate(q.get("options") if isinstance(q.get("options"), list) else []):
                if isinstance(opt, dict):
                    _unknown_fields(opt, OPTION_FIELDS, f"questions[{i}].options[{j}]", err)


def _unknown_fields(doc: dict, known: tuple[str, ...], at: str, err) -> None:
    for name in doc:
        if name not in known:
            err(f"{at}.{name}" if at else str(name), f"unknown field (known: {', '.join(known)})")


def _check_flag(doc: dict, name: str, at: str, err) -> None:
    if not isinstance(doc.get(name, False), bool):
        err(f"{at}.{name}" if at else name, "true or false")


def _slug(doc: dict, at: str, seen, err) -> str | None:
    slug = doc.get("slug")
    if not isinstance(slug, str) or not SLUG_RE.fullmatch(slug):
        err(f"{at}.slug", "lower-case letters, digits and dashes, starting with a letter")
        return None
    if slug in seen:
        err(f"{at}.slug", f"{slug!r} appears twice")
        return None
    return slug


def _str(value) -> str:
    return value if isinstance(value, str) else ""


def _existing(doc) -> Journey | None:
    """The journey a file names, as the database has it."""
    if not isinstance(doc, dict) or not isinstance(doc.get("slug"), str):
        return None
    return db.session.scalar(select(Journey).where(Journey.slug == doc["slug"]))


def _is_published_as(doc: dict, version: QuestionSetVersion | None) -> bool:
    """Whether a question-set document is exactly this published version, in the languages the
    version was written in. Such a file loads even when the journey has gained a language since
    (the workspace allows that; the set's next version must have it): it changes nothing."""
    if version is None:
        return False
    try:
        content = validate_question_set(doc, list(version.content["title"]))
    except QuestionSetError:
        return False
    return content_hash(content) == version.content_hash


def upsert_library(journeys: list[tuple[dict, list[dict]]]) -> dict:
    """Write checked journeys (document, [question-set documents]) to the current transaction."""
    summary = {"journeys": 0, "published": 0}
    for journey_doc, sets in journeys:
        summary["published"] += _upsert_journey(journey_doc, sets)
        summary["journeys"] += 1
    db.session.flush()
    return summary


def _retired(at, doc: dict):
    """The retired_at a row keeps for the file's `retired` flag (set once; cleared when absent)."""
    return (at or utcnow()) if doc.get("retired") else None


def _upsert_journey(doc: dict, sets: list[dict]) -> int:
    journey = db.session.scalar(select(Journey).where(Journey.slug == doc["slug"]))
    if journey is None:
        journey = Journey(slug=doc["slug"])
        db.session.add(journey)
    journey.name = doc["name"]
    journey.locales = list(doc["locales"])
    journey.hcahps_sampled = doc.get("hcahps_sampled", False)
    journey.retired_at = _retired(journey.retired_at, doc)
    if doc.get("default"):
        for other in db.session.scalars(select(Journey).where(Journey.is_default.is_(True))):
            other.is_default = False
        journey.is_default = True

    # Stages and touchpoints missing from the file are kept (their history stays reportable)
    # and move after the listed ones.
    listed = [s["slug"] for s in doc["stages"]]
    for st_doc in doc["stages"]:
        stage = journey.stage(st_doc["slug"])
        if stage is None:
            stage = Stage(slug=st_doc["slug"], position=0)
            journey.stages.append(stage)
        stage.name = st_doc["name"]
        stage.position = listed.index(st_doc["slug"])
        stage.retired_at = _retired(stage.retired_at, st_doc)
        tp_listed = [t["slug"] for t in st_doc["touchpoints"]]
        for tp_doc in st_doc["touchpoints"]:
            tp = stage.touchpoint(tp_doc["slug"])
            if tp is None:
                tp = Touchpoint(slug=tp_doc["slug"], position=0)
                stage.touchpoints.append(tp)
            tp.name, tp.kind, tp.position = tp_doc["name"], tp_doc["kind"], tp_listed.index(tp_doc["slug"])
            tp.retired_at = _retired(tp.retired_at, tp_doc)
        for extra in stage.touchpoints:
            if extra.slug not in tp_listed:
                extra.position = len(tp_listed) + extra.position
    for extra in journey.stages:
        if extra.slug not in listed:
            extra.position = len(listed) + extra.position
    db.session.flush()

    published = 0
    for qs_doc in sets:
        stage = journey.stage(qs_doc["stage"])
        qs = journey.question_set(qs_doc["key"])
        if qs is None:
            qs = QuestionSet(stage=stage, key=qs_doc["key"])
            db.session.add(qs)
        try:
            content = validate_question_set(qs_doc, journey.locales)
        except QuestionSetError:
            continue  # checked: it is the published version, from before the journey gained a language
        published += publish_version(qs, content) is not None
    db.session.flush()

    for rule_doc in doc.get("rules") or []:
        rule = next((r for r in journey.rules if r.event_type == rule_doc["event"]), None)
        if rule is None:
            rule = TriggerRule(event_type=rule_doc["event"])
            journey.rules.append(rule)
        with db.session.no_autoflush:  # a new rule is incomplete until apply_rule has filled it in
            apply_rule(rule, journey, {**RULE_DEFAULTS, **rule_doc})
    return published


def publish_version(qs: QuestionSet, content: dict) -> QuestionSetVersion | None:
    """Publish content as the set's next immutable version, unless it equals the current one."""
    digest = content_hash(content)
    current = qs.current
    if current is not None and current.content_hash == digest:
        return None
    version = QuestionSetVersion(
        question_set=qs, version=(qs.versions[-1].version + 1) if qs.versions else 1,
        content=content, content_hash=digest, published_at=utcnow(),
    )
    db.session.add(version)
    db.session.flush()
    return version
