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


def require_api_key(scope: str | None):
    """A live API key with `scope` ("events" in, "scores" out; None: any live key)."""
    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            scheme, _, key = header.partition(" ")
            api_key = authenticate(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
            if api_key is None:
                return _refused(401, "login", "a valid API key is required: Authorization: Bearer <key>",
                                'Bearer realm="feedback-service"')
            if scope is not None and not api_key.allows(scope):
                return _refused(403, "forbidden", f"this API key lacks the {scope!r} scope",
                                f'Bearer realm="feedback-service", error="insufficient_scope", scope="{scope}"')
            g.api_key = api_key
            return view(*args, **kwargs)
        return wrapper
    return decorator


def _refused(status: int, fhir_code: str, message: str, challenge: str):
    response, status = fhir_error(status, fhir_code, message) if _is_fhir() else error(status, message)
    response.headers["WWW-Authenticate"] = challenge
    return response, status


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
