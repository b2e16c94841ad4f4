"""Dashboard pages for managers (and admins). Thin: read the filters, call the rollup, insight and
alert functions, render."""
from __future__ import annotations

from dataclasses import replace
from datetime import date

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from ..alerts.models import Alert, AlertRule
from ..alerts.services import AlertError, acknowledge, alerts_query, recovery, resolve, save_rule
from ..extensions import db
from ..insights.charts import Marker, Point, Series, describe_trend, trend_svg
from ..insights.comments import search_comments, stage_themes
from ..insights.feed import csv_lines, csv_name, feed, map_with_themes
from ..insights.funnel import funnel
from ..journeys.models import Journey
from ..rollups.filters import FilterError, parse_filters
from ..rollups.models import DailyCounts, TouchpointDayCounts
from ..rollups.queries import INTERVALS, trends
from ..sqltypes import utcnow
from ..staff.auth import role_required
from ..staff.forms import show_errors
from ..staff.routes import forbidden
from ..staff.services import record
from ..insights.questions import question_scores
from .forms import AlertActionForm, AlertRuleForm, filter_form

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")
bp.register_error_handler(403, forbidden)
manager = role_required("manager", "admin")
ALERTS_SHOWN = 100


def _view(slug: str | None = None):
    """The chosen journey (`slug`, else the query's), its filters (the defaults where the query is
    wrong, with the errors shown), the filter form and the query string to carry to the other pages."""
    journeys = list(db.session.scalars(select(Journey).order_by(Journey.name)))
    if not journeys:
        abort(404)
    # Without a choice, the journey with the latest answers: the one a manager most likely means.
    latest = db.session.scalar(select(TouchpointDayCounts.journey_id).where(TouchpointDayCounts.responses > 0)
                               .order_by(TouchpointDayCounts.day.desc()).limit(1))
    journey = next((j for j in journeys if j.slug == (slug or request.args.get("journey"))), None) or next(
        (j for j in journeys if j.id == latest), None) or next((j for j in journeys if j.is_default), journeys[0])
    today = utcnow().date()
    try:
        filters, errors = parse_filters(request.args, journey, today), {}
    except FilterError as exc:
        filters, errors = parse_filters({}, journey, today), exc.errors
    sources = sorted(db.session.scalars(select(DailyCounts.source).where(DailyCounts.journey_id == journey.id)
                                        .distinct()))
    form = filter_form(request.args, journeys, journey, sources)
    form.date_from.data, form.date_to.data = filters.start, filters.end  # the period shown, defaults included
    for name, message in errors.items():
        field = {"from": form.date_from, "to": form.date_to}.get(name) or getattr(form, name)
        field.errors = [message]
    query = {"journey": journey.slug, **filters.as_query()}
    return journey, filters, form, query


def _min_n() -> int:
    return current_app.config["FEEDBACK_MIN_REPORTING_N"]


def heat(score: float | None, measure: str) -> str:
    """A cell's colour class, worst to best on one scale whatever the measure (100 = most friction)."""
    if score is None:
        return "heat-none"
    bad = score if measure == "friction" else 100 - score
    return f"heat-{min(int(bad // 20), 4)}"


@bp.app_template_global()
def with_query(endpoint: str, query: dict, **changes) -> str:
    return url_for(endpoint, **{**query, **changes})


@bp.get("")
@manager
def journey_map():
    journey, filters, form, query = _view()
    colour = "satisfaction" if request.args.get("colour") == "satisfaction" else "friction"
    doc = map_with_themes(journey, filters, _min_n())
    shown = [(tp["friction"]["score"], stage["name"], tp["name"]) for stage in doc["stages"]
             for tp in stage["touchpoints"] if not tp["friction"]["suppressed"]]
    worst = max(shown, key=lambda s: s[0], default=None)
    open_alerts = {r["slug"]: r["open"] for r in recovery(journey, filters)}
    return render_template("dashboard/map.html", journey=journey, filters=filters, form=form, query=query,
                           doc=doc, colour=colour, heat=heat, worst=worst, open_alerts=open_alerts, min_n=_min_n())


@bp.get("/map.csv")
@manager
def map_csv():
    journey, filters, _form, _query = _view()
    interval = request.args.get("interval") if request.args.get("interval") in INTERVALS else None
    return Response("".join(csv_lines(feed(journey, filters, _min_n(), interval))), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{csv_name(journey, filters)}"'})


def _interval() -> str:
    # Monthly unless asked: a stage's week rarely reaches the reporting threshold outside big hospitals.
    return request.args.get("interval") if request.args.get("interval") in INTERVALS else "month"


def _series(stage: dict) -> list[Series]:
    def points(measure):
        return tuple(Point(start=date.fromisoformat(p["start"]), value=None if p["suppressed"] else p["score"],
                           low=None if p["suppressed"] else p["ci95"][0],
                           high=None if p["suppressed"] else p["ci95"][1]) for p in stage["series"][measure])
    return [Series("Satisfaction", points("satisfaction")), Series("Friction", points("friction"))]


def _markers(stage: dict) -> list[Marker]:
    return [Marker(date.fromisoformat(c["date"]), c["label"]) for c in stage["version_changes"]]


@bp.get("/trends")
@manager
def trends_page():
    journey, filters, form, query = _view()
    interval = _interval()
    data = trends(journey, filters, interval, _min_n())
    alts = {s["slug"]: describe_trend(_series(s), _markers(s)) for s in data["stages"]}
    return render_template("dashboard/trends.html", journey=journey, filters=filters, form=form, query=query,
                           data=data, interval=interval, alts=alts, min_n=_min_n(),
                           questions=question_scores(journey, filters.start, _min_n()))


@bp.get("/journeys/<slug>/trends/<stage>.svg")
@manager
def trend_chart(slug: str, stage: str):
    journey, filters, _form, _query = _view(slug)
    if journey.slug != slug or journey.stage(stage) is None:
        abort(404)
    # Only this stage's series: the page asks for one chart per stage.
    data = trends(journey, replace(filters, stage=stage), _interval(), _min_n())
    found = next((s for s in data["stages"] if s["slug"] == stage), None) or abort(404)
    title = f"{found['name']}: {_interval()}ly satisfaction and friction, {filters.start} to {filters.end}"
    svg = trend_svg(title, _series(found), _markers(found))
    return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "private, max-age=300"})


@bp.get("/comments")
@manager
def comments():
    journey, filters, form, query = _view()
    text = (request.args.get("q") or "").strip()[:200]
    friction_only = request.args.get("friction") == "1"
    page = min(max(request.args.get("page", 1, type=int), 1), 10_000)
    found, more = search_comments(journey, filters, _min_n(), text, page, friction_only)
    names = {s.id: s.name for s in journey.stages}
    tp_names = {tp.id: tp.name for s in journey.stages for tp in s.touchpoints}
    return render_template("dashboard/comments.html", journey=journey, filters=filters, form=form, query=query,
                           comments=found, more=more, page=page, text=text, friction_only=friction_only,
                           themes=stage_themes(journey, filters, _min_n()), stage_names=names, tp_names=tp_names,
                           min_n=_min_n())


@bp.get("/funnel")
@manager
def funnel_page():
    journey, filters, form, query = _view()
    return render_template("dashboard/funnel.html", journey=journey, filters=filters, form=form, query=query,
                           stages=funnel(journey, filters, _min_n()), min_n=_min_n())


@bp.get("/alerts")
@manager
def alerts():
    journey, filters, form, query = _view()
    state = request.args.get("state") if request.args.get("state") in ("open", "acknowledged", "resolved") else None
    rows = db.session.scalars(alerts_query(journey, filters, (state,) if state else ("open", "acknowledged",
                                                                                    "resolved")).limit(ALERTS_SHOWN))
    return render_template("dashboard/alerts.html", journey=journey, filters=filters, form=form, query=query,
                           alerts=list(rows), state=state, stages=recovery(journey, filters), shown=ALERTS_SHOWN)


def _alert(alert_id: int) -> Alert:
    found = db.session.get(Alert, alert_id) if alert_id < 2**63 else None
    return found or abort(404)


def _alert_page(found: Alert, form: AlertActionForm, status: int = 200):
    return render_template("dashboard/alert.html", alert=found, form=form,
                           questions=found.response.question_set_version.questions_by_key,
                           locale=found.response.locale), status


@bp.get("/alerts/<int:alert_id>")
@manager
def alert(alert_id: int):
    return _alert_page(_alert(alert_id), AlertActionForm())


@bp.post("/alerts/<int:alert_id>/<any(acknowledge, resolve):action>")
@manager
def alert_action(alert_id: int, action: str):
    found, form = _alert(alert_id), AlertActionForm()
    if not form.validate_on_submit():
        return _alert_page(found, form, 400)
    before = {"state": found.state}
    try:
        if action == "acknowledge":
            acknowledge(found.id, current_user.email)
        else:
            resolve(found.id, current_user.email, form.note.data)
    except AlertError as exc:
        db.session.rollback()
        show_errors(form, exc.errors)
        if "state" in exc.errors:
            flash(f"Nothing changed: this alert is {exc.errors['state']}.", "error")
        return _alert_page(found, form, 409)
    record(current_user, f"alert.{action}", f"alert {found.id}", before,
           {"state": found.state, **({"note": found.note} if action == "resolve" else {})})
    db.session.commit()
    flash("Alert acknowledged." if action == "acknowledge" else "Alert resolved.", "success")
    return redirect(url_for("dashboard.alert", alert_id=found.id))


@bp.route("/alert-rules", methods=["GET", "POST"])
@manager
def alert_rules():
    journey, _filters, _form, query = _view()
    rules = {r.stage_id: r for r in db.session.scalars(select(AlertRule).where(AlertRule.journey_id == journey.id))}
    scopes = [(None, "Whole journey (stages without a rule of their own)")] + [(s, s.name) for s in journey.stages]
    forms = {}
    posted = request.form.get("scope") if request.method == "POST" else None
    for stage, _label in scopes:
        key = str(stage.id) if stage else "journey"
        rule = rules.get(stage.id if stage else None)
        defaults = {"owner_email": stage.owner_email if stage else None, "active": rule.active if rule else False,
                    "low_satisfaction": rule.low_satisfaction if rule else True,
                    "high_friction": rule.high_friction if rule else True,
                    "terms": ", ".join(rule.terms) if rule else ""}
        forms[key] = AlertRuleForm(prefix=key, formdata=request.form if posted == key else None, data=defaults)
    if posted in forms:
        form = forms[posted]
        stage = next((s for s, _ in scopes if s and str(s.id) == posted), None)
        if form.validate_on_submit():
            before = _rule_state(rules.get(stage.id if stage else None), stage)
            try:
                rule = save_rule(journey, stage, low_satisfaction=form.low_satisfaction.data,
                                 high_friction=form.high_friction.data, terms=(form.terms.data or "").split(","),
                                 active=form.active.data, owner_email=form.owner_email.data if stage else None)
            except AlertError as exc:
                db.session.rollback()
                show_errors(form, exc.errors)
            else:
                db.session.flush()
                record(current_user, "alert-rule.save", f"{journey.slug}/{stage.slug if stage else '*'}", before,
                       _rule_state(rule, stage))
                db.session.commit()
                flash("Alert rule saved.", "success")
                return redirect(url_for("dashboard.alert_rules", journey=journey.slug))
    return render_template("dashboard/alert_rules.html", journey=journey, query=query, scopes=scopes, forms=forms,
                           journeys=list(db.session.scalars(select(Journey).order_by(Journey.name))))


def _rule_state(rule: AlertRule | None, stage) -> dict | None:
    if rule is None:
        return None
    return {"active": rule.active, "low_satisfaction": rule.low_satisfaction, "high_friction": rule.high_friction,
            "terms": rule.terms, **({"owner": stage.owner_email} if stage else {})}
