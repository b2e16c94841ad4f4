"""API views: parse, call one service, map the outcome to HTTP."""
from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date

from flask import Response, abort, current_app, g, jsonify, make_response, request
from sqlalchemy import select

from ..events import fhir, hl7v2
from ..events.inbound import MessageError
from ..events.intake import TransactionRefused, receive_fhir, receive_hl7
from ..events.schemas import parse_events
from ..events.services import EventRejected, record_events
from ..extensions import db
from ..insights.feed import csv_lines, csv_name, feed, json_chunks
from ..journeys.models import Journey
from ..rollups.filters import FilterError, parse_filters
from ..rollups.queries import INTERVALS, journey_scores, trends
from ..scheduling.rules import SendPolicy
from ..sqltypes import utcnow
from . import bp, error, fhir_error, require_api_key
from .openapi import OPENAPI


@bp.post("/events")
@require_api_key("events")
def post_events():
    try:
        # Read as JSON whatever the Content-Type says: `curl -d` sends form encoding by default.
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # absurdly deep nesting: a client mistake like any other
        body = None
    if body is None:
        return error(422, "the body must be a JSON event or list of events", {"body": "not valid JSON"})
    items, is_list, errors = parse_events(body)
    if errors:
        return error(422, "invalid event", errors)
    try:
        results = record_events(items, source=g.api_key.source, policy=SendPolicy.from_config(current_app.config),
                                default_journey=current_app.config["FEEDBACK_DEFAULT_JOURNEY"], indexed=is_list)
    except EventRejected as exc:
        return error(422, "invalid event", exc.errors)
    status = 200 if all(r.duplicate for r in results) else 202
    if is_list:
        return jsonify({"events": [asdict(r) for r in results]}), status
    return jsonify(asdict(results[0])), status


@bp.get("/journeys")
@require_api_key(None)
def list_journeys():
    journeys = db.session.scalars(select(Journey).order_by(Journey.slug))
    return jsonify({"journeys": [{
        "slug": j.slug, "name": j.name, "default": j.is_default, "locales": j.locales,
        "stages": [{"slug": s.slug, "name": s.name, "position": s.position,
                    "touchpoints": [{"slug": t.slug, "name": t.name, "kind": t.kind, "position": t.position}
                                    for t in s.touchpoints]} for s in j.stages],
    } for j in journeys]})


@bp.get("/journeys/<slug>/scores")
@require_api_key("scores")
def scores(slug: str):
    journey = db.session.scalar(select(Journey).where(Journey.slug == slug)) if "\x00" not in slug else None
    if journey is None:
        return error(404, f"no journey {slug!r}")
    errors, bounds = {}, {}
    for name in ("from", "to"):
        raw = request.args.get(name)
        try:
            bounds[name] = date.fromisoformat(raw) if raw else None
        except ValueError:
            errors[name] = "must be a date, YYYY-MM-DD"
    if not errors and bounds["from"] and bounds["to"] and bounds["from"] > bounds["to"]:
        errors["from"] = "must not be after 'to'"
    if errors:
        return error(422, "invalid query", errors)
    return jsonify(journey_scores(journey, bounds["from"], bounds["to"],
                                  current_app.config["FEEDBACK_MIN_REPORTING_N"]))


def _map_request(slug: str):
    """The journey, filters and interval of a map or trends request; a 404 or 422 otherwise."""
    journey = db.session.scalar(select(Journey).where(Journey.slug == slug)) if "\x00" not in slug else None
    if journey is None:
        abort(make_response(error(404, f"no journey {slug!r}")))
    interval = request.args.get("interval") or None
    errors = {} if interval in (None, *INTERVALS) else {"interval": f"must be one of {', '.join(INTERVALS)}"}
    try:
        filters = parse_filters(request.args, journey, utcnow().date())
    except FilterError as exc:
        errors.update(exc.errors)
    if errors:
        abort(make_response(error(422, "invalid query", errors)))
    return journey, filters, interval


@bp.get("/journeys/<slug>/map")
@require_api_key("scores")
def journey_map(slug: str):
    journey, filters, interval = _map_request(slug)
    docs = feed(journey, filters, current_app.config["FEEDBACK_MIN_REPORTING_N"], interval)
    return Response("".join(json_chunks(docs, interval)), mimetype="application/json")


@bp.get("/journeys/<slug>/map.csv")
@require_api_key("scores")
def journey_map_csv(slug: str):
    journey, filters, interval = _map_request(slug)
    docs = feed(journey, filters, current_app.config["FEEDBACK_MIN_REPORTING_N"], interval)
    # Built whole (a period is at most MAX_DAYS long): the map reads through the request's session.
    return Response("".join(csv_lines(docs)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{csv_name(journey, filters)}"'})


@bp.get("/journeys/<slug>/trends")
@require_api_key("scores")
def journey_trends(slug: str):
    journey, filters, interval = _map_request(slug)
    return jsonify(trends(journey, filters, interval or "week", current_app.config["FEEDBACK_MIN_REPORTING_N"]))


@bp.get("/openapi.json")
def openapi():
    return jsonify(OPENAPI)


@bp.post("/fhir")
@require_api_key("events")
def post_fhir():
    if request.mimetype not in ("application/fhir+json", "application/json", "application/json+fhir"):
        return fhir_error(415, "not-supported", "send FHIR JSON: Content-Type: application/fhir+json")
    raw = request.get_data()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return fhir_error(400, "structure", "the body is not valid JSON")
    settings = current_app.extensions["feedback_intake"]
    try:
        kind, results = receive_fhir(body, g.api_key.source, settings)
    except TransactionRefused as exc:
        response = jsonify(fhir.refusal(exc.entries))
        response.mimetype = "application/fhir+json"
        return response, 422
    except MessageError as exc:
        return fhir_error(422 if exc.reject else 400, "not-supported" if exc.reject else "invalid", exc.reason)
    status, answer = fhir.answer(kind, results)
    response = jsonify(answer)
    response.mimetype = "application/fhir+json"
    return response, status


@bp.post("/hl7v2")
@require_api_key("events")
def post_hl7v2():
    ack = receive_hl7(hl7v2.decode(request.get_data()), g.api_key.source, current_app.extensions["feedback_intake"])
    # HL7 over HTTP: the ACK is the answer; an AE or AR (the sender's mistake) is also a 400.
    status = 200 if hl7v2.accepted(ack) else 400
    return Response(ack, status=status, mimetype="x-application/hl7-v2+er7")
