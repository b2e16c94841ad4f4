"""What the workspace changes, as plain functions: each checks its input, changes the rows and adds
an audit entry to the same transaction. Callers commit (or roll back on EditError)."""
from __future__ import annotations

import copy
from datetime import time

from sqlalchemy import select

from ..errors import FieldErrors
from ..extensions import db
from ..sqltypes import utcnow
from ..staff.services import record
from .library import SLUG_RE, apply_rule, locale_errors, name_errors, publish_version, rule_field_errors
from .models import TOUCHPOINT_KINDS, Journey, QuestionSet, Stage, Touchpoint, TriggerRule
from .questions import QuestionSetError, validate_question_set

class EditError(FieldErrors):
    """A workspace change refused."""


def _require(errors: dict[str, str]) -> None:
    if errors:
        raise EditError(errors)


def _slug_errors(slug: str, taken) -> dict[str, str]:
    if not SLUG_RE.fullmatch(slug or ""):
        return {"slug": "lower-case letters, digits and dashes, starting with a letter"}
    return {"slug": f"{slug!r} is taken"} if slug in taken else {}


# Journeys -------------------------------------------------------------------------------------

def describe_journey(j: Journey) -> dict:
    return {"slug": j.slug, "name": j.name, "locales": list(j.locales), "hcahps_sampled": j.hcahps_sampled,
            "retired": j.retired_at is not None,
            "stages": [{"slug": s.slug, "name": s.name, "retired": s.retired_at is not None,
                        "touchpoints": [{"slug": t.slug, "name": t.name, "kind": t.kind,
                                         "retired": t.retired_at is not None} for t in s.touchpoints]}
                       for s in j.stages]}


def parse_locales(text: str) -> list[str]:
    return [part.strip().lower() for part in (text or "").replace(",", " ").split() if part.strip()]


def create_journey(actor, slug: str, name: str, locales: list[str]) -> Journey:
    taken = set(db.session.scalars(select(Journey.slug)))
    _require({**_slug_errors(slug, taken), **name_errors(name), **locale_errors(locales)})
    journey = Journey(slug=slug, name=name.strip(), locales=locales)
    db.session.add(journey)
    db.session.flush()
    record(actor, "journey.create", f"journey:{slug}", None, describe_journey(journey))
    return journey


def update_journey(actor, journey: Journey, name: str, locales: list[str], hcahps_sampled: bool) -> None:
    errors = {**name_errors(name), **locale_errors(locales)}
    dropped = [x for x in journey.locales if x not in locales]
    if dropped and not errors:
        # A published set has texts for every locale; dropping one would leave versions that no
        # longer match their journey. Adding one is fine: drafts flag the missing translations.
        in_use = [qs.key for qs in journey.question_sets if qs.current]
        if in_use:
            errors["locales"] = f"{', '.join(dropped)} cannot be removed: published question sets use it"
    _require(errors)
    before = describe_journey(journey)
    journey.name, journey.locales, journey.hcahps_sampled = name.strip(), locales, hcahps_sampled
    record(actor, "journey.update", f"journey:{journey.slug}", before, describe_journey(journey))


def set_retired(actor, thing, retired: bool) -> None:
    """Retire (or bring back) a journey, stage or touchpoint. Retired ones take no new invitations
    and leave the editors; their events, responses and scores stay."""
    kind = type(thing).__name__.lower()
    before = thing.retired_at is not None
    thing.retired_at = utcnow() if retired else None
    if before != retired:
        record(actor, f"{kind}.{'retire' if retired else 'restore'}", _target(thing),
               {"retired": before}, {"retired": retired})


def _target(thing) -> str:
    if isinstance(thing, Journey):
        return f"journey:{thing.slug}"
    if isinstance(thing, Stage):
        return f"journey:{thing.journey.slug}/stage:{thing.slug}"
    if isinstance(thing, Touchpoint):
        return f"journey:{thing.stage.journey.slug}/stage:{thing.stage.slug}/touchpoint:{thing.slug}"
    return f"question_set:{thing.stage.journey.slug}/{thing.key}"


def add_stage(actor, journey: Journey, slug: str, name: str) -> Stage:
    _require({**_slug_errors(slug, {s.slug for s in journey.stages}), **name_errors(name)})
    stage = Stage(slug=slug, name=name.strip(), position=len(journey.stages))
    journey.stages.append(stage)
    db.session.flush()
    record(actor, "stage.create", _target(stage), None, {"slug": slug, "name": stage.name})
    return stage


def add_touchpoint(actor, stage: Stage, slug: str, name: str, kind: str) -> Touchpoint:
    errors = {**_slug_errors(slug, {t.slug for t in stage.touchpoints}), **name_errors(name)}
    if kind not in TOUCHPOINT_KINDS:
        errors["kind"] = f"one of {', '.join(TOUCHPOINT_KINDS)}"
    _require(errors)
    tp = Touchpoint(slug=slug, name=name.strip(), kind=kind, position=len(stage.touchpoints))
    stage.touchpoints.append(tp)
    db.session.flush()
    record(actor, "touchpoint.create", _target(tp), None, {"slug": slug, "name": tp.name, "kind": kind})
    return tp


def rename(actor, thing, name: str, kind: str | None = None) -> None:
    errors = name_errors(name)
    if kind is not None and kind not in TOUCHPOINT_KINDS:
        errors["kind"] = f"one of {', '.join(TOUCHPOINT_KINDS)}"
    _require(errors)
    before = {"name": thing.name, **({"kind": thing.kind} if kind else {})}
    thing.name = name.strip()
    if kind:
        thing.kind = kind
    after = {"name": thing.name, **({"kind": thing.kind} if kind else {})}
    if after != before:
        record(actor, f"{type(thing).__name__.lower()}.rename", _target(thing), before, after)


def move(actor, thing, step: int) -> None:
    """Move a stage or touchpoint one place earlier (-1) or later (+1) among its siblings."""
    siblings = list(thing.journey.stages if isinstance(thing, Stage) else thing.stage.touchpoints)
    siblings.sort(key=lambda s: s.position)
    i = siblings.index(thing)
    j = i + step
    if step not in (-1, 1) or not 0 <= j < len(siblings):
        return
    before = [s.slug for s in siblings]
    siblings[i], siblings[j] = siblings[j], siblings[i]
    for position, s in enumerate(siblings):
        s.position = position
    record(actor, f"{type(thing).__name__.lower()}.move", _target(thing), {"order": before},
           {"order": [s.slug for s in siblings]})


# Question sets --------------------------------------------------------------------------------

def blank_set(key: str, stage: Stage, locales: list[str]) -> dict:
    return {"key": key, "stage": stage.slug, "title": {loc: "" for loc in locales},
            "questions": [blank_question("rating", 1, locales)]}


def blank_question(qtype: str, n: int, locales: list[str]) -> dict:
    q = {"key": f"question_{n}", "type": qtype, "text": {loc: "" for loc in locales},
         "required": qtype != "text"}  # as in the YAML library: closed questions need an answer
    if qtype in ("rating", "effort", "nps"):
        q.update(measure="satisfaction", better="high", anchors={loc: ["", ""] for loc in locales})
    elif qtype == "yes_no":
        q.update(measure="friction", better="yes")
    elif qtype == "single_choice":
        q["options"] = [{"value": f"option_{i}", "label": {loc: "" for loc in locales}} for i in (1, 2)]
    return q


def create_question_set(actor, stage: Stage, key: str) -> QuestionSet:
    taken = {qs.key for qs in stage.journey.question_sets}
    errors = {"key": e for e in _slug_errors(key, taken).values()}
    if stage.retired_at is not None:
        errors["stage"] = "this stage is retired"
    _require(errors)
    qs = QuestionSet(stage=stage, key=key, draft=blank_set(key, stage, stage.journey.locales),
                     draft_updated_at=utcnow())
    db.session.add(qs)
    db.session.flush()
    record(actor, "question_set.create", _target(qs), None, {"key": key, "stage": stage.slug})
    return qs


def working_copy(qs: QuestionSet) -> dict:
    """The draft, or (for a published set not being edited) a copy of the current version."""
    if qs.draft is not None:
        return copy.deepcopy(qs.draft)
    doc = copy.deepcopy(qs.current.content) if qs.current else blank_set(qs.key, qs.stage, qs.stage.journey.locales)
    doc["stage"] = qs.stage.slug
    return doc


def save_draft(actor, qs: QuestionSet, doc: dict) -> None:
    """Keep the edited document as the set's draft. Drafts may be incomplete; publishing checks."""
    before = qs.draft if qs.draft is not None else (qs.current.content if qs.current else None)
    doc = {**doc, "key": qs.key, "stage": qs.stage.slug}
    qs.draft, qs.draft_updated_at = doc, utcnow()
    if doc != before:
        record(actor, "question_set.edit", _target(qs), before, doc)


def discard_draft(actor, qs: QuestionSet) -> None:
    if qs.draft is not None:
        record(actor, "question_set.discard_draft", _target(qs), qs.draft, None)
        qs.draft, qs.draft_updated_at = None, None


def publishing_errors(qs: QuestionSet) -> dict[str, str]:
    """Everything that stops the draft from being published (missing translations first)."""
    try:
        validate_question_set(working_copy(qs), qs.stage.journey.locales)
    except QuestionSetError as exc:
        return exc.errors
    return {}


def publish(actor, qs: QuestionSet):
    """Publish the draft as the next immutable version; returns it (None if it equals the current)."""
    doc = working_copy(qs)
    try:
        content = validate_question_set(doc, qs.stage.journey.locales)
    except QuestionSetError as exc:
        raise EditError(exc.errors) from None
    version = publish_version(qs, content)
    qs.draft, qs.draft_updated_at = None, None
    if version is not None:
        record(actor, "question_set.publish", _target(qs), {"version": version.version - 1 or None},
               {"version": version.version, "content": content})
    return version


# Trigger rules --------------------------------------------------------------------------------

def describe_rule(rule: TriggerRule) -> dict:
    return {"event": rule.event_type, "question_set": rule.question_set.key,
            "touchpoint": rule.default_touchpoint.slug, "delay_minutes": rule.delay_minutes,
            "channels": list(rule.channels), "reminder_hours": rule.reminder_hours,
            "link_ttl_days": rule.link_ttl_days, "fatigue_days": rule.fatigue_days,
            "window_start": rule.window_start, "window_end": rule.window_end,
            "exclude_codes": list(rule.exclude_codes or []), "hcahps": rule.hcahps, "active": rule.active}


def rule_errors(journey: Journey, fields: dict, allowed: tuple[time, time] | None = None,
                default_ttl_days: int | None = None) -> dict[str, str]:
    """Check a rule's fields (as describe_rule names them) against the journey, then on their own
    (rule_field_errors); no database writes."""
    errors = {}
    qs = journey.question_set(fields.get("question_set"))
    if qs is None:
        errors["question_set"] = "a question set of this journey"
    elif qs.current is None:
        # Events would be skipped ("no-published-question-set") without anyone noticing.
        errors["question_set"] = "publish this question set first"
    elif qs.stage.retired_at is not None:
        errors["question_set"] = "its stage is retired"
    elif qs.stage.touchpoint(fields.get("touchpoint") or "") is None:
        errors["touchpoint"] = f"a touchpoint of stage {qs.stage.name}"
    elif qs.stage.touchpoint(fields["touchpoint"]).retired_at is not None:
        errors["touchpoint"] = "this touchpoint is retired"
    return {**errors, **rule_field_errors(fields, allowed, default_ttl_days)}


def save_rule(actor, journey: Journey, fields: dict, allowed: tuple[time, time] | None = None,
              default_ttl_days: int | None = None) -> TriggerRule:
    """Create or replace the journey's rule for fields["event"]."""
    _require(rule_errors(journey, fields, allowed, default_ttl_days))
    rule = next((r for r in journey.rules if r.event_type == fields["event"]), None)
    before = describe_rule(rule) if rule else None
    if rule is None:
        rule = TriggerRule(event_type=fields["event"])
        journey.rules.append(rule)
    with db.session.no_autoflush:  # a new rule is incomplete until apply_rule has filled it in
        apply_rule(rule, journey, fields)
    db.session.flush()
    after = describe_rule(rule)
    if after != before:
        record(actor, "rule.save", f"journey:{journey.slug}/rule:{rule.event_type}", before, after)
    return rule
