"""The response funnel per stage, on a journey of this module's own built through the events API,
FHIR intake, the dispatcher (real Twilio and SendGrid SDKs against the fakes), the providers'
webhooks and the survey page; each step checked against the raw Event and Invitation rows, under
each filter, and the cell suppression rules on their own."""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from sqlalchemy import select

from feedback_service.config import PROJECT_ROOT
from feedback_service.events.mapping import Mapping, MappingDoc
from feedback_service.events.models import Event
from feedback_service.extensions import db
from feedback_service.insights.funnel import STEPS, funnel, suppress_steps
from feedback_service.journeys.models import Journey
from feedback_service.rollups.filters import Filters, parse_filters
from feedback_service.scheduling.models import Invitation
from tests.conftest import (TWILIO_SID, csrf_of, event_body, load_journey_copy, new_phone, run_jobs_of,
                            sendgrid_post, twilio_post, uid)

MIN_N = 11


# -- a journey of the module's own -------------------------------------------------------------

def load_journey(app, directory) -> str:
    """A copy of general-care under a fresh slug (what the `new_journey` fixture does, once per module)."""
    return load_journey_copy(app, directory, "funnel")


def new_source(app, prefix: str) -> tuple[str, dict]:
    """An API key for a source of the module's own: (source, auth headers)."""
    source = uid(prefix)
    result = app.test_cli_runner().invoke(args=["api-key", "create", source])
    assert result.exit_code == 0, result.output
    return source, {"Authorization": f"Bearer {result.stdout.strip().splitlines()[0]}"}


def post_events(client, auth, bodies) -> list[int]:
    r = client.post("/api/v1/events", json=bodies, headers=auth)
    assert r.status_code == 202, r.get_json()
    return [e["invitations"][0]["id"] if e["invitations"] else None for e in r.get_json()["events"]]


def rows(app, ids) -> list[Invitation]:
    with app.app_context():
        found = [db.session.get(Invitation, i) for i in ids]
        db.session.expunge_all()
        return found


def successor_of(app, inv_id: int) -> Invitation:
    with app.app_context():
        inv = db.session.scalar(select(Invitation).where(Invitation.replaces_id == inv_id))
        db.session.expunge_all()
        return inv


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def fhir_booking(location: str, *, service_type: str | None = None) -> tuple[dict, dict]:
    """A FHIR Patient and the Appointment booked for them just now (not due for an hour)."""
    pid = uid("p")
    patient = {"resourceType": "Patient", "id": pid,
               "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                    "code": "MR"}]}, "value": uid("mrn")}],
               "name": [{"given": ["Ana"], "family": "Test"}], "birthDate": "1970-05-01",
               "telecom": [{"system": "phone", "use": "mobile", "value": new_phone()},
                           {"system": "email", "value": f"{uid('fhir')}@example.org"}]}
    now = datetime.now(timezone.utc).replace(microsecond=0)
    appointment = {"resourceType": "Appointment", "id": uid("a"), "status": "booked",
                   "created": iso(now - timedelta(minutes=10)), "start": iso(now + timedelta(days=7)),
                   "end": iso(now + timedelta(days=7, hours=1)),
                   "participant": [{"actor": {"reference": f"Patient/{pid}"}, "status": "accepted"},
                                   {"actor": {"reference": f"Location/{location}"}, "status": "accepted"}]}
    if service_type:
        appointment["serviceType"] = [{"coding": [{"system": "urn:test", "code": service_type}]}]
    return patient, appointment


def fhir_post(client, auth, resources) -> None:
    body = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": r} for r in resources]}
    r = client.post("/api/v1/fhir", data=json.dumps(body), headers={**auth, "Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.get_data(as_text=True)
    outcomes = [e["response"]["status"] for e in r.get_json()["entry"]]
    assert all(s.startswith(("200", "201")) for s in outcomes), outcomes


def twilio_error(code: int, status: int) -> dict:
    return {"code": code, "message": f"error {code}", "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


# -- the world: one journey, built once for the module -------------------------------------------
#
# Booking stage, from the JSON feed (source "json-..."), moments 3 days ago unless said:
#   answered    12 texts: delivered (Twilio callback), survey page opened, answered
#   delivered   11 texts: delivered, never opened
#   page_opened 11 texts: no word from Twilio; the survey page opened, not answered
#   email       11 emails (no text consent): delivered and opened (SendGrid events)
#   failover    11 texts Twilio refused (21211): each fell over to an email, sent and delivered
#   no_consent  12 patients with no consent: skipped, no-consent
#   older       11 texts for moments 6 days ago: sent, no word since
#   fatigue     11 second bookings of the "delivered" patients: skipped, fatigue-journey
# Booking stage, from a FHIR feed (source "fhir-..."), booked ten minutes ago:
#   scheduled   11 invitations not due yet
#   cancelled    3 cancelled by the hospital before sending
#   sensitive    2 sensitive service line: no invitation (skipped at event level)
# Discharge stage, JSON feed: 11 emails sent, no word since.

@pytest.fixture(scope="module")
def world(app, provider_app, fakes, sendgrid_signing_key, tmp_path_factory):
    """The journey above, built through the API, FHIR intake, the jobs and the webhooks."""
    fake_twilio, fake_sendgrid = fakes
    fake_twilio.reset()
    fake_sendgrid.reset()
    slug = load_journey(app, tmp_path_factory.mktemp("funnel-journey"))
    json_source, json_auth = new_source(app, "json")
    fhir_source, fhir_auth = new_source(app, "fhir")
    client = provider_app.test_client()
    now = datetime.now(timezone.utc)

    def bodies(n, type_="booking", **patient):
        return [event_body(type_, journey=slug, email=f"{uid('f')}@example.org", **patient) for _ in range(n)]

    groups = {"answered": bodies(12), "delivered": bodies(11), "page_opened": bodies(11),
              "email": bodies(11, consent_sms=False),
              "failover": bodies(11), "no_consent": bodies(12, consent_sms=False, consent_email=False),
              "older": bodies(11, occurred_at=now - timedelta(days=6)),
              "discharge": bodies(11, "discharge", consent_sms=False)}
    for body in groups["failover"]:
        fake_twilio.reply_next(400, twilio_error(21211, 400), to=body["patient"]["phone"])
    ids = {name: post_events(client, json_auth, group) for name, group in groups.items()}
    assert all(i is not None for i in ids["no_consent"])  # skipped invitations are rows too
    for _ in range(3):  # the fall-over emails go out on a later pass, if not on the same one
        run_jobs_of(provider_app)
        if all(successor_of(provider_app, i) and successor_of(provider_app, i).status == "sent"
               for i in ids["failover"]):
            break
    # The same patients again, within the fatigue window: one request each (in one batch only the
    # first is skipped; see test_repeat_moments_posted_in_one_batch_are_each_skipped_for_fatigue).
    groups["fatigue"] = [{**b, "external_id": uid("evt")} for b in groups["delivered"]]
    ids["fatigue"] = [post_events(client, json_auth, [b])[0] for b in groups["fatigue"]]

    # What the providers said since.
    for inv in rows(provider_app, ids["answered"] + ids["delivered"]):
        form = {"MessageSid": inv.provider_message_id, "MessageStatus": "delivered", "AccountSid": TWILIO_SID,
                "To": inv.sent_to, "ApiVersion": "2010-04-01"}
        assert twilio_post(client, f"/webhooks/twilio/status?invitation={inv.id}", form).status_code == 204
    successors = [successor_of(provider_app, i).id for i in ids["failover"]]
    ids["failover_email"] = successors
    events = []
    for kinds, group in ((("delivered", "open"), ids["email"]), (("delivered",), successors)):
        for inv in rows(provider_app, group):
            events += [{"email": inv.sent_to, "event": kind, "timestamp": int(now.timestamp()),
                        "invitation_id": str(inv.id), "sg_event_id": uid("sgev"),
                        "sg_message_id": f"{inv.provider_message_id}.filter0001", "category": ["survey-invitation"]}
                       for kind in kinds]
    r = sendgrid_post(client, events, sendgrid_signing_key)
    assert r.status_code == 200 and r.get_json()["matched"] == len(events)

    # Patients open their link; some answer.
    for body in groups["answered"] + groups["page_opened"]:
        [text] = fake_twilio.sends(to=body["patient"]["phone"])
        token = re.search(r"/s/([A-Za-z0-9_-]{43})", text.form["Body"]).group(1)
        page = client.get(f"/s/{token}")
        assert page.status_code == 200
        if body in groups["answered"]:
            done = client.post(f"/s/{token}", data={"csrf_token": csrf_of(page.text), "booking_ease": "6",
                                                    "booking_satisfaction": "4"})
            assert done.status_code == 302, done.text

    # The FHIR feed, routed to the journey by a location code of its own.
    location = uid("LOC")
    shipped = yaml.safe_load((PROJECT_ROOT / "config" / "mapping.yaml").read_text())
    mapping = Mapping(MappingDoc.model_validate({**shipped, "routes": [
        {"match": {"location": [location]}, "journey": slug}, *shipped["routes"]]}))
    fhir_client = app.test_client()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(app.extensions, "feedback_intake", replace(app.extensions["feedback_intake"], mapping=mapping))
        scheduled = [fhir_booking(location) for _ in range(11)]
        cancelled = [fhir_booking(location) for _ in range(3)]
        sensitive = [fhir_booking(location, service_type="SUB") for _ in range(2)]
        fhir_post(fhir_client, fhir_auth, [r for pair in scheduled + cancelled + sensitive for r in pair])
        fhir_post(fhir_client, fhir_auth, [{**a, "status": "cancelled"} for _p, a in cancelled])

    with app.app_context():
        journey_id = db.session.scalar(select(Journey.id).where(Journey.slug == slug))
        fhir_statuses = Counter(
            (i.status if i else e.skip_reason) for e in db.session.scalars(
                select(Event).where(Event.source == fhir_source, Event.journey_id == journey_id))
            for i in (e.invitations[-1:] or [None]))
    assert fhir_statuses == {"scheduled": 11, "cancelled": 3, "sensitive-service-line": 2}
    # Setup as intended: the invitation rows the groups were meant to leave.
    expected_status = {"answered": "answered", "delivered": "sent", "page_opened": "sent", "email": "sent",
                       "failover": "failed", "failover_email": "sent", "older": "sent", "discharge": "sent",
                       "no_consent": "skipped", "fatigue": "skipped"}
    for name, status in expected_status.items():
        assert {i.status for i in rows(provider_app, ids[name])} == {status}, name
    assert all(i.opened_at is not None and i.delivery_status == "queued"
               for i in rows(provider_app, ids["page_opened"]))
    assert all(i.opened_at is None for i in rows(provider_app, ids["delivered"] + ids["email"]))
    return {"slug": slug, "json_source": json_source, "fhir_source": fhir_source, "ids": ids, "now": now}


def journey_of(slug: str) -> Journey:
    return db.session.scalar(select(Journey).where(Journey.slug == slug))


def filters(journey: Journey, **args) -> Filters:
    return parse_filters(args, journey, datetime.now(timezone.utc).date())


def recount(journey: Journey, f: Filters) -> dict[str, dict]:
    """The funnel from the raw rows, moment by moment: per stage slug, the step counts and the
    skip reasons (the moment's last invitation stands for it)."""
    stage_of = {tp.id: s.slug for s in journey.stages for tp in s.touchpoints}
    out = {s.slug: {"steps": dict.fromkeys(STEPS, 0), "skipped": Counter()} for s in journey.stages}
    for event in db.session.scalars(select(Event).where(Event.journey_id == journey.id)):
        day = event.occurred_at.astimezone(timezone.utc).date()
        if not f.start <= day <= f.end or (f.source and event.source != f.source):
            continue
        invitations = sorted(event.invitations, key=lambda i: i.id)
        last = invitations[-1] if invitations else None
        if last is None:
            if f.channel or f.locale or event.skip_reason is None or event.touchpoint_id is None:
                continue  # a moment without an invitation has no channel
            cell = out[stage_of[event.touchpoint_id]]
            cell["steps"]["events"] += 1
            cell["skipped"][event.skip_reason] += 1
            continue
        if (f.channel and last.channel != f.channel) or (f.locale and last.locale != f.locale):
            continue
        cell = out[stage_of[last.touchpoint_id]]
        steps = cell["steps"]
        steps["events"] += 1
        sent = last.sent_at is not None and last.status != "failed"
        if last.status in ("skipped", "cancelled") or (last.status == "expired" and not sent):
            cell["skipped"][last.skip_reason or {"expired": "expired-before-sending",
                                                 "cancelled": "cancelled-by-hospital"}[last.status]] += 1
            continue
        answered = last.status == "answered"
        steps["invited"] += 1
        steps["sent"] += sent
        steps["delivered"] += sent and (answered or last.delivery_status == "delivered")
        steps["opened"] += sent and (answered or last.opened_at is not None or last.email_opened_at is not None)
        steps["answered"] += answered
    if f.stage:
        out = {f.stage: out[f.stage]}
    return out


def as_recount(report: list[dict]) -> dict[str, dict]:
    """funnel()'s answer at min_n 1 (nothing hidden) in recount()'s shape."""
    return {s["slug"]: {"steps": s["steps"], "skipped": Counter({r["reason"]: r["count"] for r in s["skip_reasons"]})}
            for s in report}


def steps(*values) -> dict:
    return dict(zip(STEPS, values))


# -- counts against the raw rows ---------------------------------------------------------------

def test_every_step_counts_each_moment_once_as_built(app, world, ctx):
    journey = journey_of(world["slug"])
    report = {s["slug"]: s for s in funnel(journey, filters(journey), MIN_N)}
    assert list(report) == [s.slug for s in journey.stages]
    booking = report["booking"]
    # 106 moments; 28 skipped (12 no consent, 11 fatigue, 3 cancelled, 2 sensitive); 11 FHIR not yet
    # sent; 11 older and 11 opened texts with no word from Twilio; 12 + 11 + 11 opened (survey page
    # or email); 12 answered. Each fall-over counts once, as its email.
    assert booking["steps"] == steps(106, 78, 67, 45, 34, 12)
    assert booking["skipped"] == 28
    # Cancelled (3) and sensitive (2) are too few to show, even summed: the smallest shown reason
    # joins them, so that the hidden sum is not a small count either.
    assert booking["skip_reasons"] == [{"reason": "no-consent", "count": 12}, {"reason": "other reasons", "count": 16}]
    assert report["discharge"]["steps"] == steps(11, 11, 11, 0, 0, 0)  # zeros are shown
    assert report["discharge"]["skip_reasons"] == []
    for quiet in ("awareness", "pre-visit", "visit", "follow-up"):
        assert report[quiet]["steps"] == steps(0, 0, 0, 0, 0, 0) and report[quiet]["skipped"] == 0

    # Nothing hidden: exactly the raw rows, reasons and all.
    exact = funnel(journey, filters(journey), 1)
    assert as_recount(exact) == recount(journey, filters(journey))
    assert as_recount(exact)["booking"]["skipped"] == {"no-consent": 12, "fatigue-journey": 11,
                                                       "cancelled-by-hospital": 3, "sensitive-service-line": 2}


@pytest.mark.parametrize(("args", "booking"), [
    ({"channel": "sms"}, steps(59, 56, 45, 23, 23, 12)),  # texts, and the FHIR ones planned as texts
    ({"channel": "email"}, steps(22, 22, 22, 22, 11, 0)),  # emails, fall-overs included
    ({"source": "json"}, steps(90, 67, 67, 45, 34, 12)),
    ({"source": "fhir"}, steps(16, 11, 0, 0, 0, 0)),
    ({"period": "recent"}, steps(95, 67, 56, 45, 34, 12)),  # the older texts fall out
    ({"period": "older"}, steps(11, 11, 11, 0, 0, 0)),
    ({"stage": "booking"}, steps(106, 78, 67, 45, 34, 12)),
    ({"stage": "discharge"}, None),
    ({"channel": "email", "source": "json", "period": "recent", "stage": "booking"}, steps(22, 22, 22, 22, 11, 0)),
])
def test_filters_change_the_counts_as_the_raw_rows_say(app, world, ctx, args, booking):
    journey = journey_of(world["slug"])
    today = datetime.now(timezone.utc).date()
    query = dict(args)
    if "source" in query:
        query["source"] = world[f"{query['source']}_source"]
    period = query.pop("period", None)
    if period == "recent":
        query.update({"from": (today - timedelta(days=4)).isoformat(), "to": today.isoformat()})
    elif period == "older":
        six_days_ago = (world["now"] - timedelta(days=6)).date()
        query.update({"from": six_days_ago.isoformat(), "to": six_days_ago.isoformat()})
    f = filters(journey, **query)
    got = as_recount(funnel(journey, f, 1))
    assert got == recount(journey, f)
    if booking is not None:
        assert got["booking"]["steps"] == booking
    if "stage" in args:
        assert list(got) == [args["stage"]]
    if args == {"stage": "discharge"}:
        assert got["discharge"]["steps"] == steps(11, 11, 11, 0, 0, 0)


def test_a_source_filter_counts_event_level_skips_only_from_that_source(app, world, ctx):
    journey = journey_of(world["slug"])
    fhir = as_recount(funnel(journey, filters(journey, source=world["fhir_source"]), 1))["booking"]["skipped"]
    assert fhir == {"cancelled-by-hospital": 3, "sensitive-service-line": 2}
    json_ = as_recount(funnel(journey, filters(journey, source=world["json_source"]), 1))["booking"]["skipped"]
    assert json_ == {"no-consent": 12, "fatigue-journey": 11}
    # A channel filter leaves out what has no channel: event-level skips and skipped invitations.
    sms = as_recount(funnel(journey, filters(journey, channel="sms"), 1))["booking"]["skipped"]
    assert sms == {"cancelled-by-hospital": 3}


def test_suppression_with_the_reporting_minimum_matches_the_raw_counts(app, world, ctx):
    journey = journey_of(world["slug"])
    f = filters(journey, source=world["fhir_source"])
    [booking] = [s for s in funnel(journey, f, MIN_N) if s["slug"] == "booking"]
    # 16 moments, 11 invited: the 5 skipped is a small count, so invited is hidden, and with it
    # the skipped total; each reason is small, and so is their sum.
    assert booking["steps"]["events"] == 16 and booking["steps"]["invited"] is None
    assert booking["skipped"] is None
    assert booking["skip_reasons"] == [{"reason": "reasons suppressed", "count": None}]
    raw = recount(journey, f)["booking"]["steps"]
    assert_no_small_count_derivable(raw, booking["steps"], MIN_N)


def test_repeat_moments_posted_in_one_batch_are_each_skipped_for_fatigue(app, client, auth, new_journey, run_jobs,
                                                                        ctx):
    slug = new_journey()
    first = [event_body(journey=slug, email=f"{uid('f')}@example.org") for _ in range(3)]
    post_events(client, auth, first)
    run_jobs()
    # The same three patients again, a day later, in one batch: each was surveyed within 30 days.
    later = (datetime.now(timezone.utc) - timedelta(days=2)).isoformat()
    again = post_events(client, auth, [{**b, "external_id": uid("evt"), "occurred_at": later} for b in first])
    got = [(i.status, i.skip_reason) for i in rows(app, again)]
    assert got == [("skipped", "fatigue-journey")] * 3
    journey = journey_of(slug)
    [booking] = [s for s in funnel(journey, filters(journey), 1) if s["slug"] == "booking"]
    assert booking["steps"]["events"] == 6 and booking["skip_reasons"] == [{"reason": "fatigue-journey", "count": 3}]


# -- skip reasons: small ones fold into "other reasons" -----------------------------------------

def test_small_skip_reasons_fold_into_other_reasons_whose_sum_is_never_a_small_count(app, client, auth,
                                                                                    new_journey, ctx):
    slug = new_journey()
    now = datetime.now(timezone.utc)

    def skipped(n, type_="booking", **kwargs):
        occurred = kwargs.pop("occurred_at", None)
        return [event_body(type_, journey=slug, occurred_at=occurred, **kwargs) for _ in range(n)]
    bodies = (skipped(14, consent_sms=False, consent_email=False)  # no-consent
              + skipped(6, phone=None, email=None)  # no-contact
              + skipped(5, occurred_at=now - timedelta(days=10))  # too-late
              + skipped(4, "discharge", consent_sms=False, consent_email=False)
              + skipped(2, "discharge", phone=None, email=None))
    assert all(i is not None for i in post_events(client, auth, bodies))
    journey = journey_of(slug)
    f = filters(journey)
    assert recount(journey, f)["booking"]["skipped"] == {"no-consent": 14, "no-contact": 6, "too-late": 5}
    report = {s["slug"]: s for s in funnel(journey, f, MIN_N)}
    # 6 and 5 are hidden; together they are 11, which may be shown.
    assert report["booking"]["skip_reasons"] == [{"reason": "no-consent", "count": 14},
                                                 {"reason": "other reasons", "count": 11}]
    assert report["booking"]["steps"]["events"] == 25 and report["booking"]["skipped"] == 25
    # Four and two: nothing can be shown, not even their sum.
    assert report["discharge"]["skip_reasons"] == [{"reason": "reasons suppressed", "count": None}]
    assert report["discharge"]["steps"]["events"] is None and report["discharge"]["skipped"] is None

    # With a minimum of 5: 6 and 5 show, nothing is folded.
    at5 = {s["slug"]: s for s in funnel(journey, f, 5)}
    assert at5["booking"]["skip_reasons"] == [{"reason": "no-consent", "count": 14},
                                              {"reason": "no-contact", "count": 6},
                                              {"reason": "too-late", "count": 5}]
    # 4 hidden alone would be worked out from the total of 6: 2 joins it, and 6 may be shown.
    assert at5["discharge"]["skip_reasons"] == [{"reason": "other reasons", "count": 6}]
    for report_ in (report, at5):
        for stage in report_.values():
            for reason in stage["skip_reasons"]:
                assert reason["count"] is None or reason["count"] >= (MIN_N if report_ is report else 5)


# -- suppress_steps on its own ------------------------------------------------------------------

# Which steps are part of which: each later one is a subset of the earlier one, by the funnel's own
# definitions (an answered moment counts as delivered and as opened). Any difference between two
# of them is a count of moments, so a small one must not be derivable from what is shown.
CONTAINS = {"events": ("invited", "sent", "delivered", "opened", "answered"),
            "invited": ("sent", "delivered", "opened", "answered"),
            "sent": ("delivered", "opened", "answered"),
            "delivered": ("answered",),
            "opened": ("answered",)}


def assert_no_small_count_derivable(raw: dict, shown: dict, min_n: int) -> None:
    assert set(shown) == set(raw)
    for step, value in shown.items():
        assert value is None or value == raw[step], f"{step} shown as {value}, is {raw[step]}"
        assert value is None or not 0 < value < min_n, f"{step} = {value} is shown"
    for earlier, laters in CONTAINS.items():
        for later in laters:
            a, b = shown[earlier], shown[later]
            if a is not None and b is not None:
                assert not 0 < a - b < min_n, f"{earlier} - {later} = {a - b} can be worked out"


@pytest.mark.parametrize(("raw", "expected"), [
    (steps(40, 40, 40, 40, 40, 40), steps(40, 40, 40, 40, 40, 40)),
    (steps(60, 60, 60, 60, 30, 5), steps(60, 60, 60, 60, 30, None)),  # a step of 5
    (steps(60, 60, 49, 46, 30, 15), steps(60, 60, 49, None, 30, 15)),  # sent - delivered = 3
    (steps(0, 0, 0, 0, 0, 0), steps(0, 0, 0, 0, 0, 0)),  # zeros are shown
    (steps(30, 30, 30, 0, 0, 0), steps(30, 30, 30, 0, 0, 0)),
    (steps(30, 19, 19, 0, 0, 0), steps(30, 19, 19, 0, 0, 0)),  # a difference of exactly the minimum
    (steps(8, 8, 8, 8, 8, 8), steps(None, None, None, None, None, None)),
    (steps(41, 30, 30, 30, 19, 19), steps(41, 30, 30, 30, 19, 19)),  # differences of 11 and 0
    (steps(40, 40, 29, 12, 3, 2), steps(40, 40, 29, 12, None, None)),
])
def test_suppress_steps_hides_small_counts_and_small_differences(raw, expected):
    shown = suppress_steps(raw, MIN_N)
    assert_no_small_count_derivable(raw, shown, MIN_N)
    assert shown == expected


@pytest.mark.parametrize("raw", [
    # invited is hidden (40 - 34 = 6 skipped), yet 40 - 30 sent = 10 moments not sent shows.
    steps(40, 34, 30, 30, 15, 0),
    # invited hidden for its 5 skipped, and sent equal to invited gives those 5 right back.
    steps(25, 20, 20, 20, 20, 20),
    # sent is hidden (3 not sent), yet invited - delivered = 10 shows.
    steps(40, 40, 37, 30, 30, 12),
    # sent is hidden (5 not sent): delivered, opened and answered equal to it must not show it either.
    steps(40, 40, 35, 35, 35, 35),
])
def test_a_hidden_step_is_not_given_away_by_the_steps_around_it(raw):
    shown = suppress_steps(raw, MIN_N)
    assert shown["events"] == raw["events"]  # the first step is no secret
    assert_no_small_count_derivable(raw, shown, MIN_N)


def test_a_small_gap_between_opened_or_delivered_and_answered_is_not_shown():
    # Every answered moment is opened and delivered too: 25 opened and 22 answered tell that 3
    # opened the survey and left it.
    raw = steps(50, 50, 50, 50, 25, 22)
    shown = suppress_steps(raw, MIN_N)
    assert_no_small_count_derivable(raw, shown, MIN_N)
    raw = steps(50, 50, 50, 24, 40, 20)  # 24 delivered (an answer counts as delivered), 20 answered
    assert_no_small_count_derivable(raw, suppress_steps(raw, MIN_N), MIN_N)


def test_suppress_steps_changes_nothing_when_every_count_may_be_shown():
    raw = steps(200, 150, 120, 100, 80, 50)
    assert suppress_steps(raw, MIN_N) == raw
    assert suppress_steps(steps(5, 4, 3, 2, 1, 0), 1) == steps(5, 4, 3, 2, 1, 0)  # a minimum of 1 hides nothing
