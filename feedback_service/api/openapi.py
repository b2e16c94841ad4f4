"""The OpenAPI 3.1 document of /api/v1. Request schemas come from the pydantic models themselves."""
from __future__ import annotations

from pydantic.json_schema import models_json_schema

from ..events.schemas import MAX_BATCH, EventIn

_defs = models_json_schema([(EventIn, "validation")], ref_template="#/components/schemas/{model}")[1]["$defs"]

_error = {"$ref": "#/components/schemas/Error"}
_cell = {
    "type": "object",
    "description": "Suppressed cells carry only suppressed: true: those with fewer responses than "
                   "min_reporting_n, and siblings hidden so that such a count cannot be worked out. A "
                   "null sent or response_rate hides a count of 1 to min_reporting_n - 1 non-responders.",
    "properties": {
        "suppressed": {"type": "boolean"},
        "responses": {"type": "integer"}, "sent": {"type": ["integer", "null"]},
        "response_rate": {"type": ["number", "null"], "description": "responses / sent"},
        "satisfaction": {"$ref": "#/components/schemas/Measure"},
        "friction": {"$ref": "#/components/schemas/Measure"},
        "nps": {"$ref": "#/components/schemas/Measure",
                "description": "Net Promoter Score, -100 to 100, where an NPS question was asked"},
    },
    "required": ["suppressed"],
}
_slug = {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}}


def _or_blank(schema: dict) -> dict:
    """A query value that may also be left empty (as a form sends it): empty means not given."""
    return {"anyOf": [{"type": "string", **schema}, {"type": "string", "maxLength": 0}]}


_filters = [
    {"name": "from", "in": "query", "schema": _or_blank({"format": "date"}),
     "description": "first day of journey moments (UTC), inclusive; default: 89 days before 'to'"},
    {"name": "to", "in": "query", "schema": _or_blank({"format": "date"}),
     "description": "last day, inclusive; default: today (UTC)"},
    {"name": "stage", "in": "query", "schema": {"type": "string"}, "description": "a stage slug"},
    {"name": "touchpoint", "in": "query", "schema": {"type": "string"}, "description": "a touchpoint slug"},
    {"name": "channel", "in": "query", "schema": _or_blank({"enum": ["sms", "email"]}),
     "description": "the channel the invitation went by"},
    {"name": "locale", "in": "query", "schema": {"type": "string", "maxLength": 80}},
    {"name": "source", "in": "query", "schema": {"type": "string", "maxLength": 80},
     "description": "the events' source"},
    {"name": "interval", "in": "query", "schema": _or_blank({"enum": ["week", "month"]})},
]
_map_errors = {
    "404": {"description": "no such journey", "content": {"application/json": {"schema": _error}}},
    "422": {"description": "bad filters, each named in errors", "content": {"application/json": {"schema": _error}}},
}
_invitation = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "status": {"type": "string", "enum": ["scheduled", "sending", "sent", "answered", "failed", "expired",
                                               "skipped", "unknown", "cancelled"]},
        "reason": {"type": ["string", "null"]}, "stage": {"type": "string"}, "touchpoint": {"type": "string"},
        "channel": {"type": ["string", "null"]}, "question_set": {"type": "string"},
        "question_set_version": {"type": "integer"}, "send_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
_recorded = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"}, "external_id": {"type": "string"}, "duplicate": {"type": "boolean"},
        "journey": {"type": "string"}, "type": {"type": "string"},
        "invitations": {"type": "array", "items": {"$ref": "#/components/schemas/Invitation"}},
        "reason": {"type": ["string", "null"], "description": "why no survey will be sent, if none will"},
    },
    "required": ["id", "external_id", "duplicate", "journey", "type", "invitations", "reason"],
}
_recorded_answer = {"application/json": {"schema": {"oneOf": [
    {"$ref": "#/components/schemas/RecordedEvent"},
    {"type": "object", "properties": {"events": {"type": "array", "items": {
        "$ref": "#/components/schemas/RecordedEvent"}}}, "required": ["events"]}]}}}
# Every operation reads the database: while it is away, a 503 at once (JSON, the FHIR endpoint's too).
_unavailable = {"503": {"description": "the database is unavailable; nothing was stored, retry after Retry-After "
                                       "seconds", "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": {"application/json": {"schema": _error}}}}
_auth = {"401": {"description": "missing or wrong API key", "content": {"application/json": {"schema": _error}}},
         "403": {"description": "the API key lacks the scope this operation needs",
                 "content": {"application/json": {"schema": _error}}},
         **_unavailable}
_too_large = {"413": {"description": "body over 8 MB", "content": {"application/json": {"schema": _error}}}}
_outcome = {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}
# The FHIR endpoint answers its errors, refused keys included, as OperationOutcomes.
_fhir_errors = {
    "400": {"description": "not JSON, or not a FHIR resource (OperationOutcome)", "content": _outcome},
    "401": {"description": "missing or wrong API key (OperationOutcome)", "content": _outcome},
    "403": {"description": "the API key lacks the events scope (OperationOutcome)", "content": _outcome},
    "413": {"description": "body over 8 MB (OperationOutcome)", "content": _outcome},
    "415": {"description": "not FHIR JSON (OperationOutcome)", "content": _outcome},
    "422": {"description": "invalid resource, or a transaction with an invalid entry (OperationOutcome)",
            "content": _outcome},
    **_unavailable,
}
_er7 = {"x-application/hl7-v2+er7": {"schema": {"type": "string", "pattern": "^MSH"}}}
_fhir_in = {
    "type": "object",
    "description": "a FHIR R4 resource (validated with the R4B models of fhir.resources)",
    "properties": {
        "resourceType": {"type": "string", "enum": ["Appointment", "Encounter", "Patient", "Bundle"]},
        "type": {"type": "string", "description": "Bundle.type",
                 "enum": ["transaction", "batch", "collection", "subscription-notification", "history", "searchset"]},
        # Entries are judged one by one: in a batch a bad entry gets its own 422 in a 200 answer.
        "entry": {"type": "array", "description": "Bundle.entry: {fullUrl, resource}, at most 1000"},
    },
    "required": ["resourceType"],
}

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "Patient feedback service", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            **_defs,
            "Error": {"type": "object", "properties": {
                "error": {"type": "string"},
                "errors": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "message per bad field, keyed by its path"}},
                "required": ["error"]},
            "OperationOutcome": {"type": "object", "properties": {
                "resourceType": {"const": "OperationOutcome"},
                "issue": {"type": "array", "minItems": 1, "items": {"type": "object", "properties": {
                    "severity": {"type": "string", "enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"}, "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}}},
                    "required": ["severity", "code"]}}},
                "required": ["resourceType", "issue"]},
            "Invitation": _invitation,
            "RecordedEvent": _recorded,
            "Measure": {"type": "object", "properties": {
                "suppressed": {"type": "boolean"}, "score": {"type": "number"}, "n": {"type": "integer"},
                "responses": {"type": "integer"}, "top_box_pct": {"type": ["number", "null"]},
                "ci95": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}},
                "required": ["suppressed"]},
            "Cell": _cell,
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/events": {"post": {
            "summary": "Record journey events; each may schedule a survey invitation",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                {"$ref": "#/components/schemas/EventIn"},
                {"type": "array", "items": {"$ref": "#/components/schemas/EventIn"}, "minItems": 1,
                 "maxItems": MAX_BATCH}]}}}},
            "responses": {
                "202": {"description": "stored (a list answers {events: [...]})", "content": _recorded_answer},
                "200": {"description": "every event was a duplicate; nothing changed", "content": _recorded_answer},
                **_too_large,
                "422": {"description": "invalid or not JSON; nothing stored",
                        "content": {"application/json": {"schema": _error}}},
                **_auth,
            },
        }},
        "/api/v1/fhir": {"post": {
            "summary": "FHIR R4 in: an Appointment, Encounter or Patient, or a transaction, batch, collection "
                       "or subscription-notification Bundle of them",
            "requestBody": {"required": True, "content": {"application/fhir+json": {"schema": _fhir_in}}},
            "responses": {
                "200": {"description": "a batch- or transaction-response Bundle (one entry per entry), or an "
                                       "OperationOutcome for a single resource that made no new event",
                        "content": {"application/fhir+json": {"schema": {"type": "object", "properties": {
                            "resourceType": {"enum": ["Bundle", "OperationOutcome"]}}, "required": ["resourceType"]}}}},
                "201": {"description": "a single resource made an event (OperationOutcome)", "content": _outcome},
                **_fhir_errors,
            },
        }},
        "/api/v1/hl7v2": {"post": {
            "summary": "HL7 v2 in: one ER7 message (SIU^S12, SIU^S15, ADT^A03, ADT^A08, ADT^A13; others are "
                       "acknowledged and ignored)",
            "requestBody": {"required": True, "content": _er7},
            "responses": {
                "200": {"description": "the ACK, MSA|AA: stored", "content": _er7},
                "400": {"description": "the ACK, MSA|AE or MSA|AR, with the reason in MSA-3 and ERR-8",
                        "content": _er7},
                **_too_large, **_auth,
            },
        }},
        "/api/v1/journeys": {"get": {
            "summary": "Journeys with their ordered stages and touchpoints",
            "responses": {"200": {"description": "journeys", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"journeys": {"type": "array", "items": {
                    "type": "object", "required": ["slug", "name", "default", "locales", "stages"], "properties": {
                        "slug": {"type": "string"}, "name": {"type": "string"}, "default": {"type": "boolean"},
                        "locales": {"type": "array", "items": {"type": "string"}},
                        "stages": {"type": "array", "items": {"type": "object", "properties": {
                            "slug": {"type": "string"}, "name": {"type": "string"}, "position": {"type": "integer"},
                            "touchpoints": {"type": "array", "items": {"type": "object"}}}}}}}}},
                "required": ["journeys"]}}}}, **_auth},
        }},
        "/api/v1/journeys/{slug}/scores": {"get": {
            "summary": "Per-stage and per-touchpoint scores for journey moments in a period",
            "parameters": [
                {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "from", "in": "query", "schema": _or_blank({"format": "date"}),
                 "description": "first day of journey moments (UTC), inclusive"},
                {"name": "to", "in": "query", "schema": _or_blank({"format": "date"}),
                 "description": "last day, inclusive"},
            ],
            "responses": {
                "200": {"description": "scores", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "journey": {"type": "string"}, "min_reporting_n": {"type": "integer"},
                        "stages": {"type": "array", "items": {"allOf": [{"$ref": "#/components/schemas/Cell"}, {
                            "type": "object", "properties": {"touchpoints": {"type": "array", "items": {
                                "$ref": "#/components/schemas/Cell"}}}}]}}}}}}},
                "404": {"description": "no such journey", "content": {"application/json": {"schema": _error}}},
                "422": {"description": "bad dates", "content": {"application/json": {"schema": _error}}},
                **_auth,
            },
        }},
        "/api/v1/journeys/{slug}/map": {"get": {
            "summary": "The journey map of a period: each stage and touchpoint in order with satisfaction, friction, "
                       "top-box %, NPS, n, response rate, 95% interval and the change against the period of the "
                       "same length before; per stage the top friction themes; with interval, also one map per "
                       "week or month (periods)",
            "parameters": [_slug, *_filters],
            "responses": {"200": {"description": "the map", "content": {"application/json": {"schema": {
                "type": "object", "properties": {
                    "journey": {"type": "string"}, "from": {"type": "string", "format": "date"},
                    "to": {"type": "string", "format": "date"}, "min_reporting_n": {"type": "integer"},
                    "stages": {"type": "array", "items": {"$ref": "#/components/schemas/Cell"}},
                    "periods": {"type": "array", "items": {"type": "object"}}}}}}},
                **_map_errors, **_auth},
        }},
        "/api/v1/journeys/{slug}/map.csv": {"get": {
            "summary": "The same map as CSV for journey-mapping tools: one row per stage or touchpoint, period and "
                       "metric, with value, n and date (the period's last day); suppressed values are empty",
            "parameters": [_slug, *_filters],
            "responses": {"200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
                          **_map_errors, **_auth},
        }},
        "/api/v1/journeys/{slug}/trends": {"get": {
            "summary": "Per stage, weekly (default) or monthly satisfaction, friction and NPS with 95% intervals, "
                       "and the dates question-set versions changed",
            "parameters": [_slug, *_filters],
            "responses": {"200": {"description": "trends", "content": {"application/json": {"schema": {
                "type": "object"}}}}, **_map_errors, **_auth},
        }},
    },
}
