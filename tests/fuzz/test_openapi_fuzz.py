"""Schemathesis over the service's own OpenAPI document (/api/v1/openapi.json, read from the app,
no network): every operation, with cases that fit the schema and cases that break it, sent with
the session's API key, with none, with a revoked one and with wrong ones. No answer may be a 5xx
(or an exception), every answer must match what the document says of it (status, content type,
headers, body schema), and every 4xx must carry its error the way that endpoint's clients read it.

Each run draws new cases (no fixed seed, no example database)."""
from __future__ import annotations

import base64
import json
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.transport import Response
from schemathesis.generation.modes import GenerationMode

from feedback_service.api.openapi import OPENAPI
from tests.conftest import uid

ER7 = "x-application/hl7-v2+er7"
OPERATIONS = [(method.upper(), path) for path, item in OPENAPI["paths"].items() for method in item]
# Cases that break the schema, for the operations that take something to break.
CASES = [(method, path, mode) for method, path in OPERATIONS for mode in GenerationMode
         if mode.is_positive or {"parameters", "requestBody"} & set(OPENAPI["paths"][path][method.lower()])]
# Cases per operation and mode: 600 in all, 15 to 40 s for the file on SQLite or PostgreSQL.
MAX_EXAMPLES = 40
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))

# Left out: positive_data_acceptance expects every schema-valid request to be taken, but the
# document describes the shape of requests, not every rule behind them (a phone number valid in
# its numbering plan, an IANA zone name, a moment not in the future, a stage of that journey,
# 'from' not after 'to', a whole FHIR resource, an HL7 message's content): those answer a
# documented 422 (or an AE/AR ACK) with the field named, which is what the contract promises.
EXCLUDED_CHECKS = [positive_data_acceptance]


@schemathesis.serializer(ER7)
def _er7(ctx, value) -> bytes:
    """The ER7 text as is; what negative cases make of it (numbers, objects) as its JSON text."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def api_schema(app):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    # The Authorization header is this file's to choose (authorizations()), not schemathesis'.
    schema.config.generation.update(with_security_parameters=False)
    return schema


@pytest.fixture(scope="module")
def revoked_key(app) -> str:
    name = uid("revoked")
    created = app.test_cli_runner().invoke(args=["api-key", "create", name])
    assert created.exit_code == 0, created.output
    revoked = app.test_cli_runner().invoke(args=["api-key", "revoke", name])
    assert revoked.exit_code == 0, revoked.output
    return created.stdout.strip().splitlines()[0]


def authorizations(api_key: str, revoked_key: str):
    """The Authorization header of a case (None: none): the good key four times in five, else
    none, a revoked, cut or unknown key, or another scheme. (Drawn by number: Hypothesis tries
    each distinct value once, so one_of() of a few constants would give them half the cases.)"""
    good = f"Bearer {api_key}"
    bad = st.one_of(
        st.none(),
        st.just(f"Bearer {revoked_key}"),
        st.just(f"Bearer {api_key[:-2]}"),
        st.just("Basic " + base64.b64encode(b"hospital:" + api_key.encode()).decode()),
        st.just(api_key),  # no scheme
        st.from_regex(r"\ABearer [!-~]{0,60}\Z"),
    )
    return st.tuples(st.integers(0, 99), bad).map(lambda drawn: good if drawn[0] < 80 else drawn[1])


@pytest.fixture(scope="module")
def journeys(app, api_key) -> list[dict]:
    """The journeys `init` loaded, with their stages and touchpoints."""
    response = app.test_client().get("/api/v1/journeys", headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200, response.text
    return response.get_json()["journeys"]


def cases(operation, mode, journeys):
    """Cases for the operation; for a journey's feeds also cases of real journeys (and of one of
    their stages and touchpoints), since a made-up slug stops at the 404."""
    strategies = [operation.as_strategy(generation_mode=mode)]
    if "{slug}" in operation.path:
        for journey in journeys:
            slug = {"slug": journey["slug"]}
            strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=slug))
            if "stage" in {p.name for p in operation.query} and mode.is_positive:
                stage = journey["stages"][-1]
                query = {"stage": stage["slug"], "touchpoint": stage["touchpoints"][0]["slug"]}
                strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=slug, query=query))
    return st.one_of(strategies)


def check_error_body(path: str, response) -> None:
    """A 4xx carries its error as the endpoint's clients read it: JSON with "error" (plus
    "errors" by field), an OperationOutcome naming each issue on the FHIR endpoint, and on the
    HL7 endpoint the AE or AR ACK with the reason in ERR (its other errors are JSON)."""
    status, ctype = response.status_code, (response.headers.get("content-type") or [""])[0]
    if not 400 <= status < 500:
        return
    if path == "/api/v1/hl7v2" and status == 400:
        assert ctype.startswith(ER7), ctype
        segments = response.content.decode("utf-8").rstrip("\r").split("\r")
        field = segments[0][3]  # the sender's own field separator
        assert segments[1].startswith(f"MSA{field}AE") or segments[1].startswith(f"MSA{field}AR"), segments
        assert segments[2].startswith(f"ERR{field}") and segments[2].rsplit(field, 1)[1], segments
        return
    body = response.json()
    if path == "/api/v1/fhir":
        assert ctype.startswith("application/fhir+json"), ctype
        assert body["resourceType"] == "OperationOutcome", body
        assert body["issue"] and all(i["severity"] == "error" and i["diagnostics"] for i in body["issue"]), body
        return
    assert ctype.startswith("application/json"), ctype
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("errors", {}), dict), body


def test_the_document_describes_every_api_route(app):
    """Fuzzing 'every operation' means every route under /api/v1 (but the document) is in it."""
    routes = {(method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
              for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes - set(OPERATIONS) == {("GET", "/api/v1/openapi.json")}
    assert set(OPERATIONS) <= routes


# Cases the fuzz run found, kept so that every run tries them: a period reaching past year 1 or
# 9999 (the default 90 days before 'to', the week or month around a day), and NUL characters,
# which PostgreSQL refuses in any text parameter. None: a journey of the library.
FOUND = [(None, "to=0001-01-01"), (None, "to=0001-02-01&interval=week"), (None, "to=9999-12-31"),
         (None, "from=9999-12-01&to=9999-12-31&interval=month"), (None, "locale=%00"), (None, "source=a%00b"),
         (None, "stage=%00"), ("a%00b", "")]


@pytest.mark.parametrize(("slug", "query"), FOUND)
def test_what_the_fuzz_run_found(app, api_key, journeys, slug, query):
    """Each journey feed answers such a request with its answer, or a 404 or 422 that says why."""
    client, headers = app.test_client(), {"Authorization": f"Bearer {api_key}"}
    for feed in ("scores", "map", "map.csv", "trends"):
        response = client.get(f"/api/v1/journeys/{slug or journeys[0]['slug']}/{feed}?{query}", headers=headers)
        assert response.status_code in (200, 404, 422), (feed, response.status_code)
        check_error_body(f"/api/v1/journeys/{{slug}}/{feed}", Response.from_any(response))


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode}" for m, p, mode in CASES])
def test_operation(api_schema, api_key, revoked_key, journeys, fuzz_cases, method, path, mode):
    """Generated requests for one operation: no 5xx, answers as documented, errors as readable."""
    operation = api_schema[path][method]
    good = f"Bearer {api_key}"

    @given(case=cases(operation, mode, journeys), authorization=authorizations(api_key, revoked_key))
    @FUZZ
    def run(case, authorization):
        fuzz_cases["schemathesis"] += 1
        headers = {"Authorization": authorization} if authorization is not None else {}
        response = case.call_and_validate(headers=headers, excluded_checks=EXCLUDED_CHECKS)
        event(str(response.status_code))  # how the cases split: pytest --hypothesis-show-statistics
        check_error_body(path, response)
        if authorization != good:
            # A refused key answers before anything is read; only a path that matches no route
            # (a slug with a "/") is a 404 first.
            assert response.status_code in (401, 404), response.status_code
            if response.status_code == 401:
                assert response.headers["www-authenticate"][0].startswith("Bearer"), response.headers
        else:
            assert response.status_code != 401, response.content

    run()
