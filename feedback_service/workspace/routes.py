"""Workspace pages. Thin: each view reads a form, calls journeys.editing, commits, redirects."""
from __future__ import annotations

import io
import tempfile
import zipfile
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user
from sqlalchemy import select
from wtforms import SelectChoice

from ..config import public_url
from ..extensions import db
from ..protection import framed_by_us
from ..journeys import editing
from ..journeys.editing import EditError
from ..journeys.guidance import guidance
from ..journeys.library import LibraryError
from ..journeys.models import EVENT_TYPES, Journey, QuestionSet, Stage, Touchpoint
from ..journeys.questions import content_hash
from ..journeys.trial import Sample, try_rule
from ..journeys.yaml_io import export_library, import_library
from ..responses.forms import build_survey_form
from ..responses.texts import texts_for
from ..scheduling.rules import SendPolicy
from ..sqltypes import utcnow
from ..staff.auth import role_required
from ..staff.forms import ConfirmForm, show_errors
from ..staff.routes import forbidden
from ..staff.services import record
from .drafts import apply_action, doc_from_form
from .forms import (EVENT_LABELS, ImportForm, JourneyForm, JourneySettingsForm, QuestionSetForm, RenameForm,
                    RuleForm, StageForm, TouchpointForm, TrialForm, event_choices)

bp = Blueprint("workspace", __name__, url_prefix="/workspace")
bp.register_error_handler(403, forbidden)
designer = role_required("designer")
manager = role_required("manager", "admin")
MAX_ARCHIVE_BYTES = 2 * 1024 * 1024
# A library is a few dozen small files; these bounds keep a crafted zip from filling the disk.
MAX_ARCHIVE_MEMBERS = 500
MAX_LIBRARY_BYTES = 10 * 1024 * 1024


def _journey(slug: str) -> Journey:
    return db.session.scalar(select(Journey).where(Journey.slug == slug)) or abort(404)


# The rule editor's fields for the rule's own (editing.describe_rule) names.
RULE_FIELDS = {"channels": "second_channel", "delay_minutes": "delay_hours", "event": "question_set"}


def _policy() -> SendPolicy:
    return SendPolicy.from_config(current_app.config)


# Journeys, stages, touchpoints ---------------------------------------------------------------

@bp.route("/journeys", methods=["GET", "POST"])
@designer
def journeys():
    form = JourneyForm()
    if form.validate_on_submit():
        try:
            journey = editing.create_journey(current_user, form.slug.data, form.name.data,
                                             editing.parse_locales(form.locales.data))
            db.session.commit()
            flash(f"Journey {journey.name} created. Add its stages and touchpoints next.")
            return redirect(url_for("workspace.journey", slug=journey.slug))
        except EditError as exc:
            db.session.rollback()
            show_errors(form, exc.errors)
    rows = db.session.scalars(select(Journey).order_by(Journey.retired_at.is_not(None), Journey.name))
    return render_template("workspace/journeys.html", form=form, journeys=rows), 422 if form.errors else 200


@bp.route("/journeys/<slug>", methods=["GET", "POST"])
@designer
def journey(slug: str):
    j = _journey(slug)
    settings = JourneySettingsForm(prefix="settings", data=None if request.method == "POST" else {
        "name": j.name, "locales": " ".join(j.locales), "hcahps_sampled": j.hcahps_sampled})
    stage_form, qs_form = StageForm(prefix="stage"), QuestionSetForm(prefix="qs")
    qs_form.stage.choices = [SelectChoice(s.id, s.name) for s in j.stages if s.retired_at is None]
    status = 200
    submitted = request.form.get("form")
    if request.method == "POST" and submitted not in ("settings", "stage", "question-set"):
        abort(400)
    try:
        if submitted == "settings" and settings.validate_on_submit():
            editing.update_journey(current_user, j, settings.name.data, editing.parse_locales(settings.locales.data),
                                   settings.hcahps_sampled.data)
        elif submitted == "stage" and stage_form.validate_on_submit():
            editing.add_stage(current_user, j, stage_form.slug.data, stage_form.name.data)
        elif submitted == "question-set" and qs_form.validate_on_submit():
            stage = next(s for s in j.stages if s.id == qs_form.stage.data)
            qs = editing.create_question_set(current_user, stage, qs_form.key.data)
            db.session.commit()
            return redirect(url_for("workspace.question_set", qs_id=qs.id))
        if request.method == "POST" and not any(f.errors for f in (settings, stage_form, qs_form)):
            db.session.commit()
            flash("Saved.")
            return redirect(url_for("workspace.journey", slug=j.slug))
    except EditError as exc:
        db.session.rollback()
        show_errors({"settings": settings, "stage": stage_form, "question-set": qs_form}[submitted], exc.errors)
    if request.method == "POST":
        status = 422
    rules = {r.event_type: r for r in j.rules}
    return render_template("workspace/journey.html", journey=j, settings=settings, stage_form=stage_form,
                           qs_form=qs_form, rules=rules, event_types=event_choices(),
                           touchpoint_form=TouchpointForm(prefix="tp"), confirm=ConfirmForm()), status


def _thing(kind: str, thing_id: int):
    model = {"journey": Journey, "stage": Stage, "touchpoint": Touchpoint}.get(kind) or abort(404)
    return db.session.get(model, thing_id) or abort(404)


def _journey_of(thing) -> Journey:
    return thing if isinstance(thing, Journey) else thing.journey if isinstance(thing, Stage) else thing.stage.journey


@bp.post("/<kind>/<int:thing_id>/<any(retire,restore,up,down):verb>")
@designer
def change(kind: str, thing_id: int, verb: str):
    thing = _thing(kind, thing_id)
    if ConfirmForm().validate_on_submit():
        if verb in ("retire", "restore"):
            editing.set_retired(current_user, thing, verb == "retire")
        elif kind != "journey":
            editing.move(current_user, thing, -1 if verb == "up" else 1)
        db.session.commit()
    if kind == "journey":
        return redirect(url_for("workspace.journeys"))
    stage = thing.stage if kind == "touchpoint" else thing
    return redirect(url_for("workspace.journey", slug=stage.journey.slug) + f"#stage-{stage.id}")


@bp.route("/<any(stage,touchpoint):kind>/<int:thing_id>/edit", methods=["GET", "POST"])
@designer
def edit_thing(kind: str, thing_id: int):
    """Rename a stage or touchpoint (and change a touchpoint's kind)."""
    thing = _thing(kind, thing_id)
    form = RenameForm(obj=thing if request.method == "GET" else None)
    if kind == "stage":
        del form.kind
    if form.validate_on_submit():
        try:
            editing.rename(current_user, thing, form.name.data, getattr(form, "kind", None) and form.kind.data or None)
            db.session.commit()
            return redirect(url_for("workspace.journey", slug=_journey_of(thing).slug))
        except EditError as exc:
            db.session.rollback()
            show_errors(form, exc.errors)
    return render_template("workspace/rename.html", form=form, thing=thing, kind=kind,
                           journey=_journey_of(thing)), 422 if form.errors else 200


@bp.post("/stage/<int:stage_id>/touchpoints")
@designer
def add_touchpoint(stage_id: int):
    stage = db.session.get(Stage, stage_id) or abort(404)
    form = TouchpointForm(prefix="tp")
    if form.validate_on_submit():
        try:
            editing.add_touchpoint(current_user, stage, form.slug.data, form.name.data, form.kind.data)
            db.session.commit()
            return redirect(url_for("workspace.journey", slug=stage.journey.slug) + f"#stage-{stage.id}")
        except EditError as exc:
            db.session.rollback()
            show_errors(form, exc.errors)
    return render_template("workspace/touchpoint_new.html", form=form, stage=stage), 422


# Question sets --------------------------------------------------------------------------------

def _question_set(qs_id: int) -> QuestionSet:
    return db.session.get(QuestionSet, qs_id) or abort(404)


@bp.route("/question-sets/<int:qs_id>", methods=["GET", "POST"])
@designer
def question_set(qs_id: int):
    qs = _question_set(qs_id)
    locales = qs.stage.journey.locales
    form = ConfirmForm()
    doc = editing.working_copy(qs)
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        action = request.form.get("action", "save")
        revision = request.form.get("revision")
        if revision is not None and revision != content_hash(doc):
            # Another window (or a colleague) saved since this page was opened: the fields are
            # read by position, so saving them would blank or scramble that work.
            flash("This question set was changed in another window since you opened this page. Nothing was "
                  "saved: this is the latest version; make your change again.", "error")
            return render_template("workspace/question_set.html", **_editor(qs, doc, None)), 409
        if action == "discard":
            editing.discard_draft(current_user, qs)
            db.session.commit()
            flash("Draft discarded.")
            return redirect(url_for("workspace.question_set", qs_id=qs.id))
        doc = apply_action(doc_from_form(request.form, doc, locales), action, locales,
                           request.form.get("new_type", "rating"))
        editing.save_draft(current_user, qs, doc)
        if action == "publish":
            try:
                version = editing.publish(current_user, qs)
                db.session.commit()
                flash(f"Published as version {version.version}." if version else
                      "Nothing changed since the published version: nothing new to publish.")
                return redirect(url_for("workspace.question_set", qs_id=qs.id))
            except EditError as exc:
                db.session.commit()  # the draft is kept; it just cannot be published yet
                flash(f"Not published: {len(exc.errors)} problem(s) below.", "error")
                return render_template("workspace/question_set.html", **_editor(qs, doc, exc.errors)), 422
        db.session.commit()
        return redirect(url_for("workspace.question_set", qs_id=qs.id) + _anchor(action))
    return render_template("workspace/question_set.html", **_editor(qs, doc, None))


def _anchor(action: str) -> str:
    verb, _, rest = action.partition(":")
    index = rest.split(":")[0]
    return f"#q{index}" if index.isdigit() and verb != "delete" else ""


def _editor(qs: QuestionSet, doc: dict, errors: dict | None) -> dict:
    locales = qs.stage.journey.locales
    problems = errors if errors is not None else editing.publishing_errors(qs)
    return {"qs": qs, "doc": doc, "revision": content_hash(doc), "locales": locales, "form": ConfirmForm(),
            "problems": problems,
            "missing": {k: v for k, v in problems.items() if "missing translation" in v},
            "advice": guidance(doc, locales, current_app.config["FEEDBACK_READING_GRADE_TARGET"]),
            "versions": list(reversed(qs.versions)), "journey": qs.stage.journey,
            "rules": [r for r in qs.stage.journey.rules if r.question_set_id == qs.id]}


@bp.get("/question-sets/<int:qs_id>/preview")
@designer
def preview(qs_id: int):
    qs = _question_set(qs_id)
    locales = qs.stage.journey.locales
    locale = request.args.get("locale") if request.args.get("locale") in locales else locales[0]
    return render_template("workspace/preview.html", qs=qs, locale=locale, locales=locales,
                           journey=qs.stage.journey)


@bp.route("/question-sets/<int:qs_id>/preview/page", methods=["GET", "POST"])
@designer
@framed_by_us
def preview_page(qs_id: int):
    """The patient's page itself, built from the working copy by the same form and template; a
    submitted preview is checked like a real answer and nothing is stored."""
    qs = _question_set(qs_id)
    locales = qs.stage.journey.locales
    locale = request.args.get("locale") if request.args.get("locale") in locales else locales[0]
    doc = editing.working_copy(qs)
    questions = [q for q in doc["questions"] if isinstance(q.get("text"), dict)]
    t = texts_for(locale)
    form = build_survey_form(questions, locale)
    submitted = form.validate_on_submit()
    content = {**doc, "title": {locale: (doc.get("title") or {}).get(locale) or "(no title yet)"}}
    return render_template("survey/form.html", form=form, questions=questions, content=content, locale=locale,
                           t=t, token=None, preview_submitted=submitted,
                           csrf_failed=bool(form.errors.get("csrf_token")))


# Trigger rules --------------------------------------------------------------------------------

def _rule_fields(form: RuleForm, event: str) -> dict:
    channels = [form.first_channel.data] + ([form.second_channel.data] if form.second_channel.data else [])
    codes = [c.strip() for c in (form.exclude_codes.data or "").replace(",", "\n").splitlines() if c.strip()]
    return {"event": event, "question_set": form.question_set.data, "touchpoint": form.touchpoint.data,
            "delay_minutes": round(form.delay_hours.data * 60), "channels": channels,
            "reminder_hours": form.reminder_hours.data, "link_ttl_days": form.link_ttl_days.data,
            "fatigue_days": form.fatigue_days.data, "window_start": form.window_start.data or None,
            "window_end": form.window_end.data or None, "exclude_codes": codes, "hcahps": form.hcahps.data,
            "active": form.active.data}


def _rule_form(j: Journey, rule) -> RuleForm:
    data = None
    if rule is not None and request.method == "GET":
        d = editing.describe_rule(rule)
        data = {**d, "delay_hours": rule.delay_minutes / 60, "first_channel": d["channels"][0],
                "second_channel": d["channels"][1] if len(d["channels"]) > 1 else "",
                "exclude_codes": "\n".join(d["exclude_codes"])}
    form = RuleForm(prefix="rule", data=data)
    live = [s for s in j.stages if s.retired_at is None]
    form.question_set.choices = [
        SelectChoice(qs.key, f"{qs.key} ({s.name}{'' if qs.current else ', not yet published'})")
        for s in live for qs in s.question_sets]
    form.touchpoint.choices = [SelectChoice(t.slug, t.name, optgroup=s.name)
                               for s in live for t in s.touchpoints if t.retired_at is None]
    return form


@bp.route("/journeys/<slug>/rules/<event>", methods=["GET", "POST"])
@designer
def rule(slug: str, event: str):
    j = _journey(slug)
    if event not in EVENT_TYPES:
        abort(404)
    current = next((r for r in j.rules if r.event_type == event), None)
    form = _rule_form(j, current)
    trial_form = TrialForm(prefix="trial", data=None if request.form.get("form") == "trial" else {
        "occurred_at": datetime.now(ZoneInfo(current_app.config["FEEDBACK_DEFAULT_TIMEZONE"])).replace(
            second=0, microsecond=0, tzinfo=None),
        "timezone": current_app.config["FEEDBACK_DEFAULT_TIMEZONE"], "phone": "+15555550123",
        "email": "patient@example.org", "locale": j.locales[0]})
    outcome, status = None, 200
    if request.form.get("form") == "rule":
        if form.validate_on_submit():
            try:
                policy = _policy()
                editing.save_rule(current_user, j, _rule_fields(form, event), (policy.window_start, policy.window_end),
                                  policy.link_ttl_days)
                db.session.commit()
                flash(f"{EVENT_LABELS[event]} rule saved.")
                return redirect(url_for("workspace.rule", slug=slug, event=event))
            except EditError as exc:
                db.session.rollback()
                show_errors(form, exc.errors, RULE_FIELDS)
        status = 422
    elif request.form.get("form") == "trial":
        if current is None:
            abort(404)
        if trial_form.validate_on_submit():
            outcome = _try(current, trial_form)
        status = 422 if trial_form.errors else 200
    return render_template("workspace/rule.html", journey=j, event=event, label=EVENT_LABELS[event], form=form,
                           rule=current, trial=trial_form, outcome=outcome), status


def _try(rule, form: TrialForm):
    tz_name = (form.timezone.data or "").strip() or current_app.config["FEEDBACK_DEFAULT_TIMEZONE"]
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        form.timezone.errors = ["an IANA time zone, e.g. America/Chicago"]
        return None
    occurred = form.occurred_at.data.replace(tzinfo=tz)
    if abs(occurred - utcnow()) > timedelta(days=366):
        form.occurred_at.errors = ["within a year of today"]
        return None
    sample = Sample(occurred_at=occurred, phone=form.phone.data or None,
                    email=form.email.data or None, consent_sms=form.consent_sms.data,
                    consent_email=form.consent_email.data, locale=form.locale.data, timezone=tz_name,
                    codes=[c.strip() for c in (form.codes.data or "").split(",") if c.strip()])
    return try_rule(rule, sample, _policy(), utcnow(), partial(public_url, current_app.config))


# The library as YAML ----------------------------------------------------------------------------

@bp.route("/library", methods=["GET", "POST"])
@designer
def library():
    form, errors = ImportForm(), None
    if form.validate_on_submit():
        errors = _import_archive(form.archive.data)
        if errors is None:
            return redirect(url_for("workspace.journeys"))
    return render_template("workspace/library.html", form=form, errors=errors), 422 if form.errors or errors else 200


def _import_archive(upload) -> list[str] | None:
    """Import an uploaded zip of journey folders, all or nothing; the errors, or None."""
    try:
        data = upload.read(MAX_ARCHIVE_BYTES + 1)
    finally:
        upload.close()  # a big upload is spooled to a temporary file
    if len(data) > MAX_ARCHIVE_BYTES:
        return [f"the archive is larger than {MAX_ARCHIVE_BYTES // 1024 // 1024} MB"]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                files, errors = _library_files(archive)
        except zipfile.BadZipFile:
            return ["the file is not a zip archive"]
        if errors:
            return errors
        for (folder, name), content in files.items():
            Path(tmp, folder).mkdir(exist_ok=True)
            Path(tmp, folder, name).write_bytes(content)
        try:
            summary = import_library(Path(tmp))
        except LibraryError as exc:
            db.session.rollback()
            return [e.replace(tmp + "/", "") for e in exc.errors]
        record(current_user, "library.import", "library", None, summary)
        db.session.commit()
        flash(f"Imported {summary['journeys']} journeys; {summary['published']} question-set versions published.")
        return None


def _library_files(archive: zipfile.ZipFile) -> tuple[dict[tuple[str, str], bytes], list[str]]:
    """{(journey folder, file name): content} of the archive's YAML files, as the export lays them
    out (journey/file.yaml, or under one top folder), read within bounds; or the errors."""
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_ARCHIVE_MEMBERS:
        return {}, [f"the archive holds more than {MAX_ARCHIVE_MEMBERS} files"]
    paths = {m.filename: PurePosixPath(m.filename) for m in members}
    tops = {p.parts[0] for p in paths.values() if len(p.parts) == 3}
    files, errors, total = {}, [], 0
    for member in members:
        path = paths[member.filename]
        if path.suffix != ".yaml":
            continue
        if path.is_absolute() or ".." in path.parts or not (
                len(path.parts) == 2 or (len(path.parts) == 3 and len(tops) == 1)):
            errors.append(f"{member.filename}: not where a library file goes (journey-folder/file.yaml)")
            continue
        target = path.parts[-2:]
        if target in files:
            errors.append(f"{member.filename}: a second {'/'.join(target)}")
            continue
        # Read at most what is left of the budget: the sizes a zip declares can lie.
        with archive.open(member) as fh:
            content = fh.read(MAX_LIBRARY_BYTES - total + 1)
        total += len(content)
        if total > MAX_LIBRARY_BYTES:
            return {}, [f"the library unpacks to more than {MAX_LIBRARY_BYTES // 1024 // 1024} MB"]
        files[target] = content
    return files, errors


@bp.get("/library/export.zip")
@designer
def library_export():
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "surveys"
        files = export_library(root)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(files):
                archive.write(path, path.relative_to(root).as_posix())
    buffer.seek(0)
    return send_file(buffer, mimetype="application/zip", as_attachment=True,
                     download_name=f"surveys-{date.today().isoformat()}.zip")

