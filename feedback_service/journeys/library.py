"""Load the question-set library (surveys/) into the database: all of it, or nothing.

Layout: surveys/<journey>/journey.yaml (stages, touchpoints, trigger rules) and one
surveys/<journey>/<question-set>.yaml per question set. Loading is an upsert: a question set
whose content changed gets a new published version; an unchanged one is left alone.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from sqlalchemy import select

from ..channels.base import MEDIA
from ..extensions import db
from ..sqltypes import utcnow
from .models import (EVENT_TYPES, HCAHPS_HOLDS, TOUCHPOINT_KINDS, Journey, QuestionSet, QuestionSetVersion, Stage,
                     Touchpoint, TriggerRule)
from .questions import QuestionSetError, content_hash, validate_question_set

SLUG_RE = re.compile(r"[a-z][a-z0-9-]{0,79}")


class LibraryError(ValueError):
    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def read_library(root: Path) -> list[tuple[dict, list[dict]]]:
    """Parse every journey folder under root into (journey doc, [question-set docs])."""
    errors: list[str] = []
    out = []
    for journey_file in sorted(root.glob("*/journey.yaml")):
        try:
            journey = yaml.safe_load(journey_file.read_text(encoding="utf-8"))
            sets = []
            for f in sorted(journey_file.parent.glob("*.yaml")):
                if f.name != "journey.yaml":
                    doc = yaml.safe_load(f.read_text(encoding="utf-8"))
                    if isinstance(doc, dict):
                        doc["_file"] = str(f)
                    sets.append(doc)
        except yaml.YAMLError as exc:
            errors.append(f"{journey_file.parent}: {exc}")
            continue
        if isinstance(journey, dict):
            journey["_file"] = str(journey_file)
        out.append((journey, sets))
    if errors:
        raise LibraryError(errors)
    if not out:
        raise LibraryError([f"{root}: no */journey.yaml found"])
    return out


def _check_journey(doc: dict, sets: list[dict]) -> list[str]:
    """Structural checks that need no database; returns 'file: field: message' lines."""
    f = doc.get("_file", "journey") if isinstance(doc, dict) else "journey"
    if not isinstance(doc, dict):
        return [f"{f}: must be a mapping"]
    errs = []
    if not SLUG_RE.fullmatch(str(doc.get("slug", ""))):
        errs.append(f"{f}: slug: must be a lower-case slug")
    if not doc.get("name"):
        errs.append(f"{f}: name: required")
    locales = doc.get("locales") or []
    if not (isinstance(locales, list) and locales and all(isinstance(x, str) for x in locales)):
        errs.append(f"{f}: locales: a non-empty list of locale codes")
    stages = doc.get("stages") or []
    stage_touchpoints: dict[str, set[str]] = {}
    for i, st in enumerate(stages):
        if not isinstance(st, dict) or not SLUG_RE.fullmatch(str(st.get("slug", ""))) or not st.get("name"):
            errs.append(f"{f}: stages[{i}]: needs a slug and a name")
            continue
        if st["slug"] in stage_touchpoints:
            errs.append(f"{f}: stages[{i}].slug: {st['slug']} appears twice")
        tps = st.get("touchpoints") or []
        if not tps:
            errs.append(f"{f}: stages[{i}].touchpoints: at least one touchpoint")
        names = set()
        for j, tp in enumerate(tps):
            if (not isinstance(tp, dict) or not SLUG_RE.fullmatch(str(tp.get("slug", "")))
                    or not tp.get("name") or tp.get("kind") not in TOUCHPOINT_KINDS):
                errs.append(f"{f}: stages[{i}].touchpoints[{j}]: needs slug, name and kind "
                            f"({', '.join(TOUCHPOINT_KINDS)})")
                continue
            names.add(tp["slug"])
        stage_touchpoints[st["slug"]] = names
    if not stages:
        errs.append(f"{f}: stages: at least one stage")

    set_stage: dict[str, str] = {}
    for qs in sets:
        qf = qs.get("_file", "question set") if isinstance(qs, dict) else "question set"
        if not isinstance(qs, dict):
            errs.append(f"{qf}: must be a mapping")
            continue
        if qs.get("stage") not in stage_touchpoints:
            errs.append(f"{qf}: stage: {qs.get('stage')!r} is not a stage of this journey")
        try:
            validate_question_set(qs, locales if isinstance(locales, list) else [])
        except QuestionSetError as exc:
            errs.extend(f"{qf}: {field}: {msg}" for field, msg in exc.errors.items())
        set_stage[str(qs.get("key"))] = qs.get("stage")

    for i, rule in enumerate(doc.get("rules") or []):
        path = f"{f}: rules[{i}]"
        if not isinstance(rule, dict):
            errs.append(f"{path}: must be a mapping")
            continue
        if rule.get("event") not in EVENT_TYPES:
            errs.append(f"{path}.event: must be one of {', '.join(EVENT_TYPES)}")
        stage = set_stage.get(str(rule.get("question_set")))
        if stage is None:
            errs.append(f"{path}.question_set: no question set {rule.get('question_set')!r} in this journey")
        elif rule.get("touchpoint") not in stage_touchpoints.get(stage, set()):
            errs.append(f"{path}.touchpoint: {rule.get('touchpoint')!r} is not a touchpoint of stage {stage}")
        if not isinstance(rule.get("delay_minutes"), int) or rule["delay_minutes"] < 0:
            errs.append(f"{path}.delay_minutes: a whole number of minutes, 0 or more")
        channels = rule.get("channels")
        if not (isinstance(channels, list) and channels and all(c in MEDIA for c in channels)):
            errs.append(f"{path}.channels: a preference list drawn from {', '.join(MEDIA)}")
        for opt in ("link_ttl_days", "fatigue_days"):
            if opt in rule and (not isinstance(rule[opt], int) or rule[opt] < 0):
                errs.append(f"{path}.{opt}: a whole number of days")
        if rule.get("hcahps", "skip") not in HCAHPS_HOLDS:
            errs.append(f"{path}.hcahps: one of {', '.join(HCAHPS_HOLDS)}")
    if not isinstance(doc.get("hcahps_sampled", False), bool):
        errs.append(f"{f}: hcahps_sampled: true or false")
    return errs


def load_library(root: Path) -> dict:
    """Validate every file under root, then upsert it all in the current transaction."""
    docs = read_library(root)
    errors = [e for journey, sets in docs for e in _check_journey(journey, sets)]
    if errors:
        raise LibraryError(errors)
    summary = {"journeys": 0, "published": 0}
    for journey_doc, sets in docs:
        summary["published"] += _upsert_journey(journey_doc, sets)
        summary["journeys"] += 1
    db.session.flush()
    return summary


def _upsert_journey(doc: dict, sets: list[dict]) -> int:
    journey = db.session.scalar(select(Journey).where(Journey.slug == doc["slug"]))
    if journey is None:
        journey = Journey(slug=doc["slug"])
        db.session.add(journey)
    journey.name = doc["name"]
    journey.locales = list(doc["locales"])
    journey.hcahps_sampled = doc.get("hcahps_sampled", False)
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
        tp_listed = [t["slug"] for t in st_doc["touchpoints"]]
        for tp_doc in st_doc["touchpoints"]:
            tp = stage.touchpoint(tp_doc["slug"])
            if tp is None:
                tp = Touchpoint(slug=tp_doc["slug"], position=0)
                stage.touchpoints.append(tp)
            tp.name, tp.kind, tp.position = tp_doc["name"], tp_doc["kind"], tp_listed.index(tp_doc["slug"])
        for extra in stage.touchpoints:
            if extra.slug not in tp_listed:
                extra.position = len(tp_listed) + extra.position
    for extra in journey.stages:
        if extra.slug not in listed:
            extra.position = len(listed) + extra.position
    db.session.flush()

    published = 0
    question_sets: dict[str, QuestionSet] = {}
    for qs_doc in sets:
        stage = journey.stage(qs_doc["stage"])
        qs = db.session.scalar(select(QuestionSet).where(QuestionSet.stage_id == stage.id,
                                                        QuestionSet.key == qs_doc["key"]))
        if qs is None:
            qs = QuestionSet(stage=stage, key=qs_doc["key"])
            db.session.add(qs)
        published += publish_version(qs, validate_question_set(qs_doc, journey.locales)) is not None
        question_sets[qs.key] = qs

    for rule_doc in doc.get("rules") or []:
        rule = next((r for r in journey.rules if r.event_type == rule_doc["event"]), None)
        if rule is None:
            rule = TriggerRule(event_type=rule_doc["event"])
            journey.rules.append(rule)
        qs = question_sets[rule_doc["question_set"]]
        rule.question_set = qs
        rule.default_touchpoint = qs.stage.touchpoint(rule_doc["touchpoint"])
        rule.delay_minutes = rule_doc["delay_minutes"]
        rule.channels = list(rule_doc["channels"])
        rule.link_ttl_days = rule_doc.get("link_ttl_days")
        rule.fatigue_days = rule_doc.get("fatigue_days")
        rule.active = rule_doc.get("active", True)
        rule.hcahps = rule_doc.get("hcahps", "skip")
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
