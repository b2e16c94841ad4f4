"""The question-set library as YAML files: imported all or nothing, with errors that name file,
line and field; exported in one canonical form, so that export after import gives the same files.

An export replaces its directory whole (written beside it, then swapped in), and only a directory
that is new, empty or holds nothing but journey folders of .yaml files, such as an earlier export.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml
from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..scheduling.rules import SendPolicy
from .library import (JOURNEY_FIELDS, QUESTION_FIELDS, RULE_DEFAULTS, RULE_FIELDS, LibraryError, Problem,
                      check_library, upsert_library)
from .models import EVENT_TYPES, Journey, QuestionSet, Stage

HEADER = "# Written by `feedback-service surveys export`; load it with `feedback-service surveys import`.\n"
DEFAULT_NOTE = "# The default journey: events posted without a journey slug land here.\n"
SMS_NOTE = "# Answered by text: the question goes into the SMS itself (one closed question, no clinical detail).\n"


# Reading ---------------------------------------------------------------------------------------

@dataclass
class LibraryFile:
    """One parsed file: its document, and the YAML nodes it came from (they know their lines)."""

    path: Path
    doc: object = None
    node: yaml.Node | None = None


def read_library(root: Path) -> tuple[list[tuple[LibraryFile, list[LibraryFile]]], list[tuple[Path, int, str]]]:
    """Parse every journey folder under root: ([(journey file, [question-set files])], syntax errors
    as (file, line, message)). A journey with a file that does not parse is left out."""
    journeys, errors = [], []
    for journey_path in sorted(root.glob("*/journey.yaml")):
        paths = [journey_path, *(p for p in sorted(journey_path.parent.glob("*.yaml")) if p.name != "journey.yaml")]
        files, broken = [], False
        for path in paths:
            try:
                files.append(_parse(path))
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or exc.context_mark
                errors.append((path, mark.line + 1 if mark else 1, _yaml_message(exc)))
                broken = True
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                errors.append((path, 1, f"not readable as YAML: {exc}"))
                broken = True
        if not broken:
            journeys.append((files[0], files[1:]))
    if not journeys and not errors:
        raise LibraryError([f"{root}: no */journey.yaml found"])
    return journeys, errors


# Far beyond any library file. Aliases (*a) are fine (PyYAML writes them for repeated lists), but
# nested ones make a few hundred bytes stand for billions of nodes (an "alias bomb"), which every
# walk over the document would then visit.
MAX_EXPANDED_NODES = 100_000


def _expanded_size(node: yaml.Node, memo: dict) -> int:
    """How many nodes the document has once every alias is expanded (memoised: linear time)."""
    if id(node) not in memo:
        memo[id(node)] = 0  # a recursive alias counts once
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        memo[id(node)] = min(1 + sum(_expanded_size(child, memo) for child in children), MAX_EXPANDED_NODES + 1)
    return memo[id(node)]


def _parse(path: Path) -> LibraryFile:
    loader = yaml.SafeLoader(path.read_text(encoding="utf-8"))
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise yaml.MarkedYAMLError(problem=f"expands to more than {MAX_EXPANDED_NODES} values "
                                               "(anchors and aliases nested too deep)", problem_mark=node.start_mark)
        return LibraryFile(path, loader.construct_document(node) if node is not None else None, node)
    finally:
        loader.dispose()


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    parts = [exc.context, exc.problem]
    return "invalid YAML: " + ", ".join(p for p in parts if p)


def line_of(node: yaml.Node | None, field: str) -> int:
    """The line (from 1) of a field path such as "questions[1].text" or "rules[0].delay_minutes",
    or of the closest node on its path that exists (the item of a missing field, say)."""
    if node is None:
        return 1
    line = node.start_mark.line
    for index, key in re.findall(r"\[(\d+)\]|([^.\[\]]+)", field):
        if index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
            line = node.start_mark.line
        elif key and isinstance(node, yaml.MappingNode):
            # The last of duplicated keys is the one the document holds.
            pair = next((p for p in reversed(node.value) if isinstance(p[0], yaml.ScalarNode) and p[0].value == key),
                        None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line, pair[1]
        else:
            break
    return line + 1


def _duplicate_keys(node: yaml.Node | None, at: str = "") -> list[tuple[str, str]]:
    """(field, message) for each key given twice in one mapping: YAML would keep only the last."""
    found = []
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            field = f"{at}.{name}" if at else name
            if name in seen:
                found.append((field, "given twice; only one is kept"))
            seen.add(name)
            found.extend(_duplicate_keys(value, field))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found.extend(_duplicate_keys(item, f"{at}[{i}]"))
    return found


# Importing -------------------------------------------------------------------------------------

def import_library(root: Path, only_new: bool = False) -> dict:
    """Check every file under root, then upsert it all in the current transaction: callers commit,
    or roll back on LibraryError (raised before anything is written). Returns a summary.
    only_new: journeys already in the database are left as they are (`init` at every start must
    not undo what was published in the workspace since)."""
    journeys, syntax = read_library(root)
    files = {f.path: f for journey_file, sets in journeys for f in (journey_file, *sets)}
    problems: list[Problem] = [(f.path, field, message) for f in files.values()
                               for field, message in _duplicate_keys(f.node)]
    policy = SendPolicy.from_config(current_app.config)
    problems += check_library([(j.path, j.doc, [(s.path, s.doc) for s in sets]) for j, sets in journeys],
                              (policy.window_start, policy.window_end), policy.link_ttl_days)
    located = syntax + [(path, line_of(files[path].node, field), f"{field}: {message}" if field else message)
                        for path, field, message in problems]
    if located:
        located.sort(key=lambda e: (str(e[0]), e[1]))
        raise LibraryError([f"{path}:{line}: {message}" for path, line, message in dict.fromkeys(located)])
    existing = set(db.session.scalars(select(Journey.slug))) if only_new else set()
    summary = upsert_library([(j.doc, [s.doc for s in sets]) for j, sets in journeys
                              if j.doc["slug"] not in existing])
    return {**summary, "kept": len(existing & {j.doc["slug"] for j, _ in journeys})}


# Exporting -------------------------------------------------------------------------------------

class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key, double quotes where quotes are needed."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)

    def choose_scalar_style(self):
        style = super().choose_scalar_style()
        return '"' if style == "'" else style


class _Flow(list):
    """A short list of words, written on one line: [en, es]."""


class _Quoted(str):
    """Always in double quotes: sentences patients read (editing one cannot turn it into YAML) and
    times of day (unquoted, 19:00 reads as a number)."""


_Dumper.add_representer(_Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
_Dumper.add_representer(_Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style='"'))


def dump(doc: dict, header: str = HEADER) -> str:
    """A document as canonical YAML text: the header, then the fields in the order given."""
    return header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                              default_flow_style=False, width=1_000_000)


def library_files() -> dict[str, str]:
    """Every journey in the database as the text of its files, by path under the library."""
    files = {}
    for journey in db.session.scalars(select(Journey).order_by(Journey.slug)):
        files[f"{journey.slug}/journey.yaml"] = dump(journey_doc(journey),
                                                     HEADER + (DEFAULT_NOTE if journey.is_default else ""))
        sets = db.session.scalars(select(QuestionSet).join(QuestionSet.stage)
                                  .where(Stage.journey_id == journey.id).order_by(QuestionSet.key, Stage.position))
        for qs in sets:
            # Drafts are the workspace's; a set never published has nothing to export.
            if qs.current is None:
                continue
            path = f"{journey.slug}/{qs.key}.yaml"
            if path in files:
                raise LibraryError([f"{journey.slug}: two question sets are named {qs.key}; "
                                    f"a file per set needs each key once"])
            content = qs.current.content
            files[path] = dump(set_doc(qs, content, journey.locales), HEADER + (SMS_NOTE if content.get("sms") else ""))
    return files


def journey_doc(journey: Journey) -> dict:
    """A journey as its journey.yaml holds it: optional fields only when set."""
    doc = {"slug": journey.slug, "name": journey.name, "default": journey.is_default,
           "locales": _Flow(journey.locales), "hcahps_sampled": journey.hcahps_sampled,
           "retired": journey.retired_at is not None,
           "stages": [_flagged({"slug": st.slug, "name": st.name, "retired": st.retired_at is not None,
                                "touchpoints": [_flagged({"slug": tp.slug, "name": tp.name, "kind": tp.kind,
                                                          "retired": tp.retired_at is not None})
                                                for tp in _ordered(st.touchpoints)]})
                      for st in _ordered(journey.stages)],
           "rules": [rule_doc(r) for r in sorted(journey.rules, key=lambda r: EVENT_TYPES.index(r.event_type))]}
    doc = _flagged(doc)
    if not doc["rules"]:
        del doc["rules"]
    return {k: doc[k] for k in JOURNEY_FIELDS if k in doc}


def _ordered(rows: list) -> list:
    # By position, not list order: a list changed in this session is not sorted again until reloaded.
    return sorted(rows, key=lambda row: (row.position, row.id))


def _flagged(doc: dict) -> dict:
    """Leave out true-or-false flags that are false: absent means false."""
    return {k: v for k, v in doc.items() if v is not False}


def rule_doc(rule) -> dict:
    """A trigger rule as journey.yaml holds it: optional fields only when they differ from the default."""
    fields = {"event": rule.event_type, "question_set": rule.question_set.key,
              "touchpoint": rule.default_touchpoint.slug, "delay_minutes": rule.delay_minutes,
              "channels": _Flow(rule.channels), "reminder_hours": rule.reminder_hours,
              "link_ttl_days": rule.link_ttl_days, "fatigue_days": rule.fatigue_days,
              "window_start": _Quoted(rule.window_start) if rule.window_start else None,
              "window_end": _Quoted(rule.window_end) if rule.window_end else None,
              "exclude_codes": _Flow(rule.exclude_codes or []), "hcahps": rule.hcahps, "active": rule.active}
    return {k: fields[k] for k in RULE_FIELDS if k not in RULE_DEFAULTS or fields[k] != RULE_DEFAULTS[k]}


def set_doc(qs: QuestionSet, content: dict, locales: list[str]) -> dict:
    """A published version's content as its question-set file holds it, with key and stage."""
    doc = {"key": qs.key, "stage": qs.stage.slug}
    if content.get("sms"):
        doc["sms"] = True
    doc["title"] = _texts(content["title"], locales)
    if content.get("intro"):
        doc["intro"] = _texts(content["intro"], locales, _Quoted)
    doc["questions"] = [_question_doc(q, locales) for q in content["questions"]]
    return doc


def _question_doc(q: dict, locales: list[str]) -> dict:
    out = dict(q)
    if q["type"] in ("rating", "nps") and q.get("better") == "high":
        del out["better"]  # the scale's own better end; effort and yes-no say theirs
    if q["required"] == (q["type"] != "text"):
        del out["required"]
    out["text"] = _texts(q["text"], locales, _Quoted)
    if "anchors" in q:
        out["anchors"] = {loc: _Flow(pair) for loc, pair in _texts(q["anchors"], locales).items()}
    if "options" in q:
        out["options"] = [{**{k: o[k] for k in ("value", "score") if k in o}, "label": _texts(o["label"], locales)}
                          for o in q["options"]]
    return {k: out[k] for k in QUESTION_FIELDS if k in out}


def _texts(texts: dict, locales: list[str], kind=str) -> dict:
    """Translations in the journey's locale order (any others after)."""
    order = [loc for loc in locales if loc in texts] + [loc for loc in texts if loc not in locales]
    return {loc: kind(texts[loc]) if isinstance(texts[loc], str) else texts[loc] for loc in order}


def export_library(root: Path) -> list[Path]:
    """Write every journey and its published question sets under root, replacing the directory
    whole (never left half-written); returns the files written."""
    files = library_files()
    if not files:
        raise LibraryError(["no journeys in the database: nothing to export"])
    _refuse_foreign(root)
    target = root.resolve()  # through a symbolic link: the directory it names is replaced
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.export-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        if target.exists():
            os.chmod(staging, target.stat().st_mode & 0o7777)
        for rel, text in files.items():
            path = staging / rel
            path.parent.mkdir(exist_ok=True)
            with open(path, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [root / rel for rel in files]


def _refuse_foreign(root: Path) -> None:
    """An export replaces its directory: refuse one holding anything an export would not write."""
    if not root.exists():
        return
    if not root.is_dir():
        raise LibraryError([f"{root}: not a directory"])
    foreign = [p for p in root.iterdir()
               if not p.is_dir() or p.is_symlink() or any(not f.is_file() or f.suffix != ".yaml" for f in p.iterdir())]
    if foreign:
        raise LibraryError([f"{root}: holds {', '.join(sorted(p.name for p in foreign))}, which an export would "
                            f"delete; export into a new or empty directory, or an earlier export"])


def _swap_in(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
        return
    old = target.parent / f".{target.name}.replaced-{uuid.uuid4().hex[:8]}"
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
