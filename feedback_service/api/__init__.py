"""The JSON API under /api/v1: events in, journeys and scores out."""
from __future__ import annotations

from functools import wraps

from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import HTTPException

from .keys import authenticate

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def error(status: int, message: str, errors: dict | None = None):
    body = {"error": message}
    if errors is not None:
        body["errors"] = errors
    return jsonify(body), status


def fhir_error(status: int, code: str, message: str, path: str | None = None):
    """An error as a FHIR OperationOutcome, for the FHIR endpoint's clients."""
    from ..events.fhir import outcome
    response = jsonify(outcome([("error", code, message, path)]))
    response.mimetype = "application/fhir+json"
    return response, status


def require_api_key(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        api_key = authenticate(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
        if api_key is None:
            message = "a valid API key is required: Authorization: Bearer <key>"
            response, status = fhir_error(401, "login", message) if _is_fhir() else error(401, message)
            response.headers["WWW-Authenticate"] = 'Bearer realm="feedback-service"'
            return response, status
        g.api_key = api_key
        return view(*args, **kwargs)
    return wrapper


def _is_fhir() -> bool:
    return request.path.rstrip("/") == "/api/v1/fhir"


def http_error(exc: HTTPException):
    """An HTTP error as JSON (FHIR: an OperationOutcome), keeping its own headers (Allow on a 405)."""
    if _is_fhir():
        response, status = fhir_error(exc.code or 500, "processing" if (exc.code or 500) >= 500 else "invalid",
                                      exc.description or exc.name)
    else:
        response, status = error(exc.code or 500, exc.description or exc.name)
    response.headers.extend((k, v) for k, v in exc.get_headers() if k.lower() != "content-type")
    return response, status


from . import routes  # noqa: E402,F401  (registers the views on bp)
