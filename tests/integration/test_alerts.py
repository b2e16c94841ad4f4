"""Closing the loop: alert rules per journey and stage raise alerts on bad moments, the stage's
owner is emailed through the real SendGrid SDK (against the fake on 127.0.0.1), and staff
acknowledge and resolve alerts with a note; recovery times are medians from the journey moment."""
from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from feedback_service.alerts.models import Alert, AlertRule
from feedback_service.alerts.notify import LEASE
from feedback_service.alerts.services import (MAX_TERM_LENGTH, MAX_TERMS, AlertError, acknowledge, reasons_for,
                                              recovery, resolve, save_rule)
from feedback_service.extensions import db
from feedback_service.journeys.models import Journey, Stage
from feedback_service.responses.models import Response
from feedback_service.responses.services import record_response
from feedback_service.rollups.filters import parse_filters
from feedback_service.scheduling.dispatch import dispatch_due
from feedback_service.scheduling.models import Invitation
from feedback_service.scheduling.rules import SendPolicy
from feedback_service.sqltypes import utcnow
from tests.conftest import (SENDER, TWILIO_SID, csrf_of, event_body, invitation_row, post_event, run_jobs_of,
                            sendgrid_post, twilio_post, uid)

# Answers by stage that raise nothing under any rule: mid-scale everywhere, no comment.
MIDDLING = {"booking": {"booking_ease": "4", "booking_satisfaction": "3"},
            "discharge": {"discharge_smooth": "4", "home_information": "3", "recommend": "7"}}
EVENT_TYPE = {"booking": "booking", "discharge": "discharge"}


# -- helpers ---------------------------------------------------------------------------------

def new_email(prefix: str = "pat") -> str:
    """An address of the test's own: email opt-outs are global, by address."""
    return f"{uid(prefix)}@example.org"


def journey_of(slug: str) -> Journey:
    return db.session.scalar(select(Journey).where(Journey.slug == slug))


def set_rule(app, slug: str, stage: str | None = None, *, low_satisfaction=True, high_friction=True,
             terms=(), active=True, owner=None) -> None:
    """The journey's rule (stage None) or a stage's, saved and committed through the service."""
    with app.app_context():
        journey = journey_of(slug)
        save_rule(journey, journey.stage(stage) if stage else None, low_satisfaction=low_satisfaction,
                  high_friction=high_friction, terms=list(terms), active=active, owner_email=owner)
        db.session.commit()


def alert_for(app, invitation_id: int) -> Alert | None:
    """The alert the invitation's response raised, detached (None: no response or no alert)."""
    with app.app_context():
        alert = db.session.scalar(select(Alert).join(Response, Response.id == Alert.response_id)
                                  .where(Response.invitation_id == invitation_id))
        if alert is not None:
            db.session.expunge(alert)
        return alert


def answer_all(app, client, auth, slug: str, answers: list[tuple[str, dict]],
               occurred: list[datetime | None] | None = None) -> list[int]:
    """Post one event per (stage, answers) in one batch, send the invitations (console channel),
    record each response through the service; the invitation ids, in order."""
    bodies = [event_body(EVENT_TYPE[stage], journey=slug, email=new_email(),
                         occurred_at=(occurred or [None] * len(answers))[i])
              for i, (stage, _values) in enumerate(answers)]
    r = client.post("/api/v1/events", json=bodies, headers=auth)
    assert r.status_code == 202, r.get_json()
    ids = [e["invitations"][0]["id"] for e in r.get_json()["events"]]
    with app.app_context():
        dispatch_due(SendPolicy.from_config(app.config), "test-alerts", until_idle=True)
        for inv_id, (_stage, values) in zip(ids, answers):
            invitation = db.session.get(Invitation, inv_id)
            assert invitation.status == "sent", (invitation.status, invitation.skip_reason)
            record_response(invitation, values)
    return ids


def reasons(app, inv_id: int) -> list[dict] | None:
    alert = alert_for(app, inv_id)
    return None if alert is None else alert.reasons


# -- what raises an alert ------------------------------------------------------------------------

def test_bottom_box_satisfaction_top_box_friction_and_a_watched_term_raise_alerts_and_middling_answers_do_not(
        app, client, auth, new_journey):
    slug = new_journey()
    set_rule(app, slug, terms=["espere", "pain"])
    booking, discharge = MIDDLING["booking"], MIDDLING["discharge"]
    answers = [
        ("booking", {**booking, "booking_satisfaction": "1"}),  # bottom of the 1-5 scale
        # booking_ease is "better: high": 1 (strongly disagree that it was easy) is the worst end.
        ("booking", {**booking, "booking_ease": "1"}),
        ("booking", {**booking, "comment": "Esperé dos horas al teléfono."}),
        ("booking", {**booking, "comment": "The painting in the hall was lovely."}),
        ("booking", dict(booking)),
        ("booking", {"booking_ease": "2", "booking_satisfaction": "2"}),  # one step off the worst: nothing
        ("booking", {"booking_ease": "7", "booking_satisfaction": "5"}),  # the better end of each scale
        ("discharge", {**discharge, "recommend": "0"}),  # NPS at the bottom is a satisfaction answer
        ("discharge", dict(discharge)),
    ]
    ids = answer_all(app, client, auth, slug, answers)
    got = [reasons(app, i) for i in ids]
    assert got == [
        [{"kind": "low-satisfaction", "question": "booking_satisfaction", "value": "1"}],
        [{"kind": "high-friction", "question": "booking_ease", "value": "1"}],
        [{"kind": "term", "question": "comment", "terms": ["espere"]}],
        None, None, None, None,
        [{"kind": "low-satisfaction", "question": "recommend", "value": "0"}],
        None,
    ]
    alert = alert_for(app, ids[0])
    inv = invitation_row(app, ids[0])
    with app.app_context():
        event_time = db.session.get(Invitation, ids[0]).event.occurred_at
    assert (alert.state, alert.notify_status, alert.acknowledged_at, alert.resolved_at) == ("open", "pending", None,
                                                                                          None)
    assert (alert.journey_id, alert.stage_id, alert.touchpoint_id) == (inv.journey_id, inv.stage_id,
                                                                     inv.touchpoint_id)
    assert alert.moment_at == event_time  # the journey moment, not when the answer came


def test_a_worst_end_friction_answer_follows_the_question_sets_better_end(app, client, auth, new_journey):
    # discharge_smooth is "better: high" on 1-7: 1 is the most friction, 7 none at all.
    slug = new_journey()
    set_rule(app, slug, low_satisfaction=False)
    discharge = MIDDLING["discharge"]
    ids = answer_all(app, client, auth, slug, [("discharge", {**discharge, "discharge_smooth": "1"}),
                                               ("discharge", {**discharge, "discharge_smooth": "7"}),
                                               ("discharge", {**discharge, "home_information": "1"})])
    assert [reasons(app, i) for i in ids] == [
        [{"kind": "high-friction", "question": "discharge_smooth", "value": "1"}], None,
        None]  # low satisfaction is switched off in this rule


def test_several_reasons_in_one_response_make_one_alert(app, client, auth, new_journey):
    slug = new_journey()
    set_rule(app, slug, terms=["rude"])
    [inv_id] = answer_all(app, client, auth, slug, [("booking", {"booking_ease": "1", "booking_satisfaction": "1",
                                                                 "comment": "Rude on the phone"})])
    assert sorted(r["kind"] for r in reasons(app, inv_id)) == ["high-friction", "low-satisfaction", "term"]
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(Alert).join(Response).where(
            Response.invitation_id == inv_id)) == 1


def _rule(terms) -> AlertRule:
    return AlertRule(low_satisfaction=True, high_friction=True, terms=list(terms), active=True)


def _comment(text: str) -> list:
    return [SimpleNamespace(question_key="comment", value=text, measure=None, score=None)]


QUESTIONS = {"comment": {"key": "comment", "type": "text"}}


@pytest.mark.parametrize(("terms", "comment", "matched"), [
    (["espere"], "Esperé dos horas", ["espere"]),  # accents in the comment are ignored
    (["Esperé"], "espere dos horas", ["Esperé"]),  # ...and in the term
    (["espere"], "ESPERE!!", ["espere"]),  # case, and punctuation around a word
    (["pain"], "Pain, everywhere.", ["pain"]),
    (["pain"], "The painting was lovely", None),  # whole words only
    (["pain"], "Painful", None),
    (["long wait"], "a long   wait at the desk", ["long wait"]),  # a phrase, whatever the spacing
    (["long wait"], "long waiting times", None),
    (["rude", "pain", "cold"], "Cold room and a rude porter", ["rude", "cold"]),  # in the rule's order
    (["pain"], "", None),
])
def test_watched_terms_match_whole_words_without_case_or_accents(terms, comment, matched):
    got = reasons_for(_rule(terms), QUESTIONS, _comment(comment))
    assert got == ([{"kind": "term", "question": "comment", "terms": matched}] if matched else [])


def test_a_watched_term_with_an_apostrophe_or_hyphen_matches_the_same_words_in_a_comment():
    # A term is written as staff would write it; save_rule takes it as is.
    rule = _rule(["didn't listen", "wait-time"])
    got = reasons_for(rule, QUESTIONS, _comment("The doctor didn't listen, and the wait-time was awful."))
    assert got == [{"kind": "term", "question": "comment", "terms": ["didn't listen", "wait-time"]}]


def test_terms_are_only_looked_for_in_free_text_answers():
    answers = [SimpleNamespace(question_key="choice", value="pain", measure=None, score=None)]
    assert reasons_for(_rule(["pain"]), {"choice": {"key": "choice", "type": "single_choice"}}, answers) == []


def test_the_journey_rule_covers_stages_without_their_own_and_a_stage_rule_overrides_it(
        app, client, auth, new_journey):
    slug = new_journey()
    set_rule(app, slug, low_satisfaction=True, high_friction=False)  # the journey's rule
    set_rule(app, slug, "discharge", low_satisfaction=False, high_friction=True)  # discharge's own
    booking, discharge = MIDDLING["booking"], MIDDLING["discharge"]
    ids = answer_all(app, client, auth, slug, [
        ("booking", {**booking, "booking_satisfaction": "1"}),  # journey rule: alert
        ("booking", {**booking, "booking_ease": "1"}),  # journey rule has no friction alerts
        ("discharge", {**discharge, "home_information": "1"}),  # discharge's rule has no satisfaction alerts
        ("discharge", {**discharge, "discharge_smooth": "1"}),  # ...but friction ones
    ])
    assert [[r["kind"] for r in reasons(app, i)] if reasons(app, i) else None for i in ids] == [
        ["low-satisfaction"], None, None, ["high-friction"]]
    with app.app_context():
        journey = journey_of(slug)
        assert db.session.scalar(select(db.func.count()).select_from(AlertRule).where(
            AlertRule.journey_id == journey.id)) == 2


def test_an_inactive_rule_raises_nothing_even_over_an_active_journey_rule(app, client, auth, new_journey):
    slug = new_journey()
    set_rule(app, slug)  # active, for every stage...
    set_rule(app, slug, "booking", active=False)  # ...but booking's own rule is switched off
    worst_booking = {"booking_ease": "1", "booking_satisfaction": "1"}
    worst_discharge = {"discharge_smooth": "1", "home_information": "1", "recommend": "0"}
    ids = answer_all(app, client, auth, slug, [("booking", worst_booking), ("discharge", worst_discharge)])
    assert reasons(app, ids[0]) is None
    assert reasons(app, ids[1]) is not None  # the journey's rule still holds for discharge

    inactive = new_journey()
    set_rule(app, inactive, active=False, terms=["pain"])
    ids = answer_all(app, client, auth, inactive, [("booking", {**worst_booking, "comment": "pain"})])
    assert reasons(app, ids[0]) is None


def test_a_rating_texted_back_raises_an_alert_too(provider_app, provider_client, auth, fake_twilio, new_journey):
    # The one-question text survey: the answer comes as a reply to the text, not from the page.
    slug = new_journey(question_set="booking-pulse", touchpoint="phone-booking")
    set_rule(provider_app, slug)
    body = event_body(journey=slug, email=new_email())
    outcome = post_event(provider_client, auth, body)
    run_jobs_of(provider_app)
    assert len(fake_twilio.sends(to=body["patient"]["phone"])) == 1
    reply = {"From": body["patient"]["phone"], "To": "+15005550006", "Body": " 1 ", "AccountSid": TWILIO_SID,
             "MessageSid": "SM" + uuid.uuid4().hex, "NumMedia": "0"}
    assert twilio_post(provider_client, "/webhooks/twilio/sms", reply).status_code == 200
    assert invitation_row(provider_app, outcome["id"]).status == "answered"
    assert reasons(provider_app, outcome["id"]) == [{"kind": "low-satisfaction", "question": "booking_rating",
                                                     "value": "1"}]


def test_a_journey_without_rules_raises_nothing(app, client, auth, new_journey):
    slug = new_journey()
    ids = answer_all(app, client, auth, slug, [("booking", {"booking_ease": "1", "booking_satisfaction": "1",
                                                            "comment": "pain"})])
    assert reasons(app, ids[0]) is None
    assert invitation_row(app, ids[0]).status == "answered"  # the answer itself was taken


# -- the owner's email, through the real SendGrid SDK ----------------------------------------------

def alert_notices(fake_sendgrid, alert_id: int) -> list:
    """Mail Send requests the fake SendGrid got for this alert (by its custom arg)."""
    return [s for s in fake_sendgrid.sends()
            if (s.json or {}).get("custom_args", {}).get("alert_id") == str(alert_id)]


def bad_moments_by_text(provider_app, provider_client, auth, fake_twilio, slug: str, count: int = 1, *,
                        comment: str | None = None, **patient) -> list[tuple[dict, Invitation, Alert]]:
    """Bookings texted through the fake Twilio and answered on the survey page at the bottom of
    the scale, all before any further job run: (event body, invitation row, the alert it raised,
    not yet notified) for each."""
    bodies = [event_body(journey=slug, email=new_email(), **patient) for _ in range(count)]
    outcomes = [post_event(provider_client, auth, body) for body in bodies]
    assert all(o["channel"] == "sms" for o in outcomes), outcomes
    run_jobs_of(provider_app)
    out = []
    for body, outcome in zip(bodies, outcomes):
        [text] = fake_twilio.sends(to=body["patient"]["phone"])
        token = re.search(r"/s/([A-Za-z0-9_-]{43})", text.form["Body"]).group(1)
        page = provider_client.get(f"/s/{token}")
        assert page.status_code == 200
        values = {"booking_ease": "4", "booking_satisfaction": "1", **({"comment": comment} if comment else {})}
        done = provider_client.post(f"/s/{token}", data={"csrf_token": csrf_of(page.text), **values})
        assert done.status_code == 302, done.text
        alert = alert_for(provider_app, outcome["id"])
        assert alert is not None and alert.notify_status == "pending"
        out.append((body, invitation_row(provider_app, outcome["id"]), alert))
    return out


def bad_moment_by_text(provider_app, provider_client, auth, fake_twilio, slug: str, **kwargs):
    [one] = bad_moments_by_text(provider_app, provider_client, auth, fake_twilio, slug, 1, **kwargs)
    return one


def test_the_stage_owner_gets_one_sendgrid_email_with_ids_only_and_no_patient_detail(
        provider_app, provider_client, auth, fake_twilio, fake_sendgrid, new_journey):
    slug = new_journey()
    owner = new_email("owner")
    set_rule(provider_app, slug, "booking", terms=["quixotic"], owner=owner)
    comment = "Quixotic hold music for an hour, nobody answered"
    body, inv, alert = bad_moment_by_text(provider_app, provider_client, auth, fake_twilio, slug, comment=comment,
                                          first_name="Zebulon")
    first = run_jobs_of(provider_app)
    assert first["alerts"]["sent"] >= 1
    [sent] = fake_sendgrid.sends(to=owner)
    mail = sent.json
    assert sent.path == "/v3/mail/send" and sent.headers["Authorization"].startswith("Bearer SG.")
    assert mail["from"] == {"email": SENDER}
    assert mail["personalizations"] == [{"to": [{"email": owner}]}]
    assert mail["subject"] == "Patient feedback alert: Booking, Booking by phone"  # the stage and touchpoint
    assert mail["custom_args"] == {"alert_id": str(alert.id)}  # and no invitation_id
    assert mail["categories"] == ["staff-alert"]
    [part] = mail["content"]
    assert part["type"] == "text/plain"
    assert f"http://survey.test/dashboard/alerts/{alert.id}" in part["value"]
    assert "a satisfaction answer at the bottom of its scale" in part["value"]
    assert "a comment with a watched term" in part["value"]
    # Nothing of the patient or of what they said, anywhere in the request.
    raw = json.dumps(mail, ensure_ascii=False)
    patient = body["patient"]
    for secret in ("Zebulon", patient["phone"], patient["phone"][2:], patient["email"], patient["id"], comment,
                   "Quixotic", "quixotic", "Very dissatisfied", "booking_satisfaction", inv.sent_to):
        assert secret not in raw, secret
    assert re.search(r"/s/[A-Za-z0-9_-]{43}", raw) is None  # nor the survey link

    stored = alert_for(provider_app, inv.id)
    assert (stored.notify_status, stored.notified_to) == ("sent", owner)
    assert stored.notified_at is not None and stored.state == "open"

    run_jobs_of(provider_app)  # the job again: nothing more goes out
    assert len(fake_sendgrid.sends(to=owner)) == 1 and len(alert_notices(fake_sendgrid, alert.id)) == 1
    assert alert_for(provider_app, inv.id).notify_status == "sent"


def test_an_alert_in_a_stage_without_an_owner_is_marked_so_and_nothing_is_sent(
        provider_app, provider_client, auth, fake_twilio, fake_sendgrid, new_journey):
    slug = new_journey()
    set_rule(provider_app, slug)  # the journey's rule: no stage has an owner
    _body, inv, alert = bad_moment_by_text(provider_app, provider_client, auth, fake_twilio, slug)
    report = run_jobs_of(provider_app)
    assert report["alerts"]["no-owner"] >= 1
    assert alert_for(provider_app, inv.id).notify_status == "no-owner"
    run_jobs_of(provider_app)
    assert alert_notices(fake_sendgrid, alert.id) == []
    assert alert_for(provider_app, inv.id).notify_status == "no-owner"


def test_a_sendgrid_5xx_leaves_the_notice_pending_and_it_goes_once_sendgrid_recovers(
        provider_app, provider_client, auth, fake_twilio, fake_sendgrid, new_journey):
    slug = new_journey()
    owner = new_email("owner")
    set_rule(provider_app, slug, "booking", owner=owner)
    _body, inv, _alert = bad_moment_by_text(provider_app, provider_client, auth, fake_twilio, slug)
    fake_sendgrid.reply_next(503, {"errors": [{"message": "service unavailable"}]}, to=owner)
    report = run_jobs_of(provider_app)
    assert report["alerts"]["retry"] >= 1
    assert len(fake_sendgrid.sends(to=owner)) == 1  # tried once...
    assert alert_for(provider_app, inv.id).notify_status == "pending"  # ...and left for the next run
    run_jobs_of(provider_app)
    assert len(fake_sendgrid.sends(to=owner)) == 2
    assert alert_for(provider_app, inv.id).notify_status == "sent"
    run_jobs_of(provider_app)
    assert len(fake_sendgrid.sends(to=owner)) == 2  # accepted once, never again


def test_a_400_from_sendgrid_fails_the_notice_for_good(provider_app, provider_client, auth, fake_twilio,
                                                       fake_sendgrid, new_journey):
    slug = new_journey()
    owner = new_email("owner")
    set_rule(provider_app, slug, "booking", owner=owner)
    _body, inv, _alert = bad_moment_by_text(provider_app, provider_client, auth, fake_twilio, slug)
    fake_sendgrid.reply_next(400, {"errors": [{"message": "bad request"}]}, to=owner)
    assert run_jobs_of(provider_app)["alerts"]["failed"] >= 1
    run_jobs_of(provider_app)
    assert alert_for(provider_app, inv.id).notify_status == "failed"
    assert len(fake_sendgrid.sends(to=owner)) == 1


def test_a_notice_left_sending_past_its_lease_becomes_unknown_and_is_never_sent(
        provider_app, provider_client, auth, fake_twilio, fake_sendgrid, new_journey):
    slug = new_journey()
    owner = new_email("owner")
    set_rule(provider_app, slug, "booking", owner=owner)
    (_b1, stale_inv, stale), (_b2, fresh_inv, fresh) = bad_moments_by_text(
        provider_app, provider_client, auth, fake_twilio, slug, 2)
    now = utcnow()
    with provider_app.app_context():  # setup: two workers claimed these and died (or still send) mid-send
        for alert_id, claimed in ((stale.id, now - LEASE - timedelta(minutes=1)),
                                  (fresh.id, now - timedelta(minutes=1))):
            db.session.execute(update(Alert).where(Alert.id == alert_id).values(
                notify_status="sending", notify_claimed_at=claimed, notified_to=owner))
        db.session.commit()
    assert run_jobs_of(provider_app)["alerts"]["unknown"] >= 1
    assert alert_for(provider_app, stale_inv.id).notify_status == "unknown"
    assert alert_for(provider_app, fresh_inv.id).notify_status == "sending"  # still within its lease
    run_jobs_of(provider_app)
    assert alert_for(provider_app, stale_inv.id).notify_status == "unknown"
    assert fake_sendgrid.sends(to=owner) == []
    assert alert_notices(fake_sendgrid, stale.id) == [] and alert_notices(fake_sendgrid, fresh.id) == []


def test_sendgrid_events_about_an_alert_notice_change_no_invitation(
        provider_app, provider_client, auth, fake_twilio, fake_sendgrid, new_journey, sendgrid_signing_key):
    slug = new_journey()
    owner = new_email("owner")
    set_rule(provider_app, slug, "booking", owner=owner)
    _body, inv, alert = bad_moment_by_text(provider_app, provider_client, auth, fake_twilio, slug)
    # A patient's email invitation too, as SendGrid events could be mistaken for its own.
    patient_email = new_email()
    emailed = post_event(provider_client, auth, event_body(journey=slug, consent_sms=False, email=patient_email))
    run_jobs_of(provider_app)
    [notice] = fake_sendgrid.sends(to=owner)
    assert notice.json["custom_args"] == {"alert_id": str(alert.id)}
    emailed_inv = invitation_row(provider_app, emailed["id"])
    assert emailed_inv.status == "sent" and emailed_inv.sent_to == patient_email
    before = {i.id: _delivery(i) for i in (invitation_row(provider_app, inv.id), emailed_inv)}

    def event(kind: str, email: str, alert_id: int) -> dict:
        # As SendGrid posts them: custom args at the top level, with the categories.
        return {"email": email, "event": kind, "timestamp": int(time.time()), "alert_id": str(alert_id),
                "sg_event_id": uid("sgev"), "sg_message_id": f"{uuid.uuid4().hex[:22]}.filter0001",
                "category": ["staff-alert"]}
    events = [event("processed", owner, alert.id), event("delivered", owner, alert.id), event("open", owner, alert.id),
              # Alert and invitation ids are separate sequences: an alert's id can be an invitation's.
              event("delivered", patient_email, emailed_inv.id), event("open", patient_email, emailed_inv.id),
              event("delivered", owner, inv.id)]
    r = sendgrid_post(provider_client, events, sendgrid_signing_key)
    assert r.status_code == 200 and r.get_json() == {"received": len(events), "matched": 0}
    after = {i: _delivery(invitation_row(provider_app, i)) for i in before}
    assert after == before
    assert alert_for(provider_app, inv.id).notify_status == "sent"


def _delivery(inv: Invitation) -> tuple:
    return (inv.status, inv.delivery_status, inv.delivered_at, inv.email_opened_at, inv.opened_at, inv.error_code,
            inv.sent_at)


# -- acknowledging and resolving ----------------------------------------------------------------

def one_alert(app, client, auth, new_journey, stage: str = "booking", occurred: datetime | None = None) -> int:
    slug = new_journey()
    set_rule(app, slug)
    worst = {"booking": {"booking_ease": "4", "booking_satisfaction": "1"},
             "discharge": {**MIDDLING["discharge"], "home_information": "1"}}[stage]
    [inv_id] = answer_all(app, client, auth, slug, [(stage, worst)], occurred=[occurred])
    return alert_for(app, inv_id).id


def test_an_alert_is_acknowledged_then_resolved_with_a_note(app, client, auth, new_journey, ctx):
    alert_id = one_alert(app, client, auth, new_journey)
    t1 = utcnow().replace(microsecond=0)
    t2 = t1 + timedelta(hours=3)
    alert = acknowledge(alert_id, "nurse@staff.test", now=t1)
    db.session.commit()
    assert (alert.state, alert.acknowledged_at, alert.acknowledged_by) == ("acknowledged", t1, "nurse@staff.test")
    assert alert.resolved_at is None and alert.note is None

    with pytest.raises(AlertError) as twice:
        acknowledge(alert_id, "other@staff.test", now=t2)
    assert twice.value.errors == {"state": "already acknowledged"}
    db.session.rollback()

    for blank in ("", "   \n "):
        with pytest.raises(AlertError) as no_note:
            resolve(alert_id, "nurse@staff.test", blank, now=t2)
        assert set(no_note.value.errors) == {"note"}
    with pytest.raises(AlertError) as long_note:
        resolve(alert_id, "nurse@staff.test", "x" * 2001, now=t2)
    assert set(long_note.value.errors) == {"note"}
    db.session.rollback()
    assert db.session.get(Alert, alert_id).state == "acknowledged"  # nothing refused left a mark

    alert = resolve(alert_id, "lead@staff.test", "  Called the patient; booking line restaffed.  ", now=t2)
    db.session.commit()
    db.session.expire_all()
    alert = db.session.get(Alert, alert_id)
    assert (alert.state, alert.resolved_at, alert.resolved_by, alert.note) == (
        "resolved", t2, "lead@staff.test", "Called the patient; booking line restaffed.")
    # Who acknowledged it, and when, stays as it was.
    assert (alert.acknowledged_at, alert.acknowledged_by) == (t1, "nurse@staff.test")

    for change in (lambda: acknowledge(alert_id, "x@staff.test"), lambda: resolve(alert_id, "x@staff.test", "again")):
        with pytest.raises(AlertError) as done:
            change()
        assert done.value.errors == {"state": "already resolved"}
        db.session.rollback()


def test_resolving_an_open_alert_acknowledges_it_at_the_same_time(app, client, auth, new_journey, ctx):
    alert_id = one_alert(app, client, auth, new_journey)
    when = utcnow().replace(microsecond=0)
    resolve(alert_id, "lead@staff.test", "Apologised by phone", now=when)
    db.session.commit()
    db.session.expire_all()
    alert = db.session.get(Alert, alert_id)
    assert (alert.state, alert.resolved_at, alert.acknowledged_at) == ("resolved", when, when)
    assert (alert.resolved_by, alert.acknowledged_by) == ("lead@staff.test", "lead@staff.test")


def test_recovery_gives_median_hours_from_the_journey_moment_per_stage(app, client, auth, new_journey, ctx):
    slug = new_journey()
    set_rule(app, slug)
    base = (utcnow() - timedelta(hours=2)).replace(microsecond=0)
    worst_booking = {"booking_ease": "4", "booking_satisfaction": "1"}
    worst_discharge = {**MIDDLING["discharge"], "home_information": "1"}
    moments = [base - timedelta(days=2), base - timedelta(days=3), base - timedelta(days=1),
               base - timedelta(days=1), base - timedelta(days=3)]
    ids = answer_all(app, client, auth, slug, [("booking", worst_booking)] * 4 + [("discharge", worst_discharge)],
                     occurred=moments)
    a1, a2, a3, a4, _d1 = (alert_for(app, i).id for i in ids)
    m1, m2, m3, m4, _ = moments
    # By hand: hours from each moment.
    acknowledge(a1, "s@staff.test", now=m1 + timedelta(hours=4))
    resolve(a1, "s@staff.test", "done", now=m1 + timedelta(hours=30))
    acknowledge(a2, "s@staff.test", now=m2 + timedelta(hours=10))
    resolve(a2, "s@staff.test", "done", now=m2 + timedelta(hours=50))
    resolve(a3, "s@staff.test", "done", now=m3 + timedelta(hours=7))  # acknowledged by resolving: 7 h both
    acknowledge(a4, "s@staff.test", now=m4 + timedelta(hours=2, minutes=30))
    db.session.commit()

    journey = journey_of(slug)
    f = parse_filters({}, journey, datetime.now(timezone.utc).date())
    by_stage = {s["slug"]: s for s in recovery(journey, f)}
    assert list(by_stage) == [s.slug for s in journey.stages]
    # acknowledge: 4, 10, 7, 2.5 -> median (4 + 7) / 2 = 5.5; resolve: 30, 50, 7 -> 30
    assert by_stage["booking"] == {"slug": "booking", "name": "Booking", "owner": None, "open": 0,
                                   "acknowledged": 1, "resolved": 3, "hours_to_acknowledge": 5.5,
                                   "hours_to_resolve": 30.0}
    assert by_stage["discharge"] == {"slug": "discharge", "name": "Discharge", "owner": None, "open": 1,
                                     "acknowledged": 0, "resolved": 0, "hours_to_acknowledge": None,
                                     "hours_to_resolve": None}
    assert by_stage["visit"]["open"] == 0 and by_stage["visit"]["hours_to_acknowledge"] is None

    # A period that ends before the newest moment leaves that alert out.
    older = parse_filters({"from": (m2 - timedelta(days=1)).date().isoformat(), "to": m1.date().isoformat(),
                           "stage": "booking"}, journey, datetime.now(timezone.utc).date())
    [booking] = recovery(journey, older)
    # a1 (4 h, 30 h) and a2 (10 h, 50 h) only: medians 7 and 40.
    assert (booking["slug"], booking["resolved"], booking["acknowledged"]) == ("booking", 2, 0)
    assert (booking["hours_to_acknowledge"], booking["hours_to_resolve"]) == (7.0, 40.0)


# -- saving rules ------------------------------------------------------------------------------

def test_save_rule_refuses_a_bad_owner_email_and_too_many_or_too_long_terms_naming_the_field(
        app, new_journey, ctx):
    slug = new_journey()
    journey = journey_of(slug)
    stage = journey.stage("booking")
    ok = {"low_satisfaction": True, "high_friction": True, "active": True}
    with pytest.raises(AlertError) as bad_owner:
        save_rule(journey, stage, terms=["pain"], owner_email="not an address", **ok)
    assert set(bad_owner.value.errors) == {"owner_email"}
    with pytest.raises(AlertError) as too_many:
        save_rule(journey, stage, terms=[f"term{i}" for i in range(MAX_TERMS + 1)], **ok)
    assert set(too_many.value.errors) == {"terms"} and str(MAX_TERMS) in too_many.value.errors["terms"]
    with pytest.raises(AlertError) as too_long:
        save_rule(journey, stage, terms=["pain", "x" * (MAX_TERM_LENGTH + 1)], **ok)
    assert set(too_long.value.errors) == {"terms"} and str(MAX_TERM_LENGTH) in too_long.value.errors["terms"]
    with pytest.raises(AlertError) as both:
        save_rule(journey, stage, terms=["y" * (MAX_TERM_LENGTH + 1)], owner_email="owner@", **ok)
    assert set(both.value.errors) == {"terms", "owner_email"}
    db.session.rollback()
    assert db.session.scalar(select(AlertRule).where(AlertRule.journey_id == journey.id)) is None
    assert db.session.get(Stage, stage.id).owner_email is None  # nothing refused was kept

    # The limits themselves are allowed; blanks and repeats do not count against them.
    terms = [f"t{i:02d}" + "x" * (MAX_TERM_LENGTH - 3) for i in range(MAX_TERMS)] + ["  ", "t00" + "x" * 77]
    rule = save_rule(journey, stage, terms=terms, owner_email="  Owner.Name@Example.ORG ", **ok)
    db.session.commit()
    assert len(rule.terms) == MAX_TERMS and all(len(t) == MAX_TERM_LENGTH for t in rule.terms)
    # Kept trimmed (how the local part's case is kept is the staff address rules' business).
    assert db.session.get(Stage, stage.id).owner_email.lower() == "owner.name@example.org"
    # Saving again changes the one rule, and no owner clears the stage's owner.
    again = save_rule(journey, stage, terms=[" pain ", "pain", ""], **{**ok, "active": False})
    db.session.commit()
    assert again.id == rule.id and again.terms == ["pain"] and again.active is False
    assert db.session.get(Stage, stage.id).owner_email is None
