"""Outbound SMS and email through the real Twilio and SendGrid SDKs, against fake provider APIs
on 127.0.0.1 that record the exact requests and can fail, throttle or stall."""
from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from feedback_service import create_app
from feedback_service.channels.registry import build_channels
from feedback_service.extensions import db
from feedback_service.patients.services import is_opted_out
from feedback_service.scheduling.dispatch import dispatch_due
from feedback_service.scheduling.models import Invitation
from feedback_service.scheduling.rules import SendPolicy
from feedback_service.sqltypes import utcnow
from tests.conftest import (
    SENDER, SENDGRID_KEY, TWILIO_SERVICE, TWILIO_SID, TWILIO_TOKEN, event_body, invitation_row, post_event, run_jobs_of,
    twilio_post)


def dispatch(provider_app, now=None, **kwargs):
    with provider_app.app_context():
        return dispatch_due(SendPolicy.from_config(provider_app.config), "test", now=now, **kwargs)


def successor(app, inv_id) -> Invitation | None:
    with app.app_context():
        inv = db.session.query(Invitation).filter_by(replaces_id=inv_id).one_or_none()
        if inv is not None:
            db.session.expunge(inv)
        return inv


def twilio_error(code: int, status: int) -> dict:
    return {"code": code, "message": f"error {code}", "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


# -- what goes out -------------------------------------------------------------------------------

def test_a_booking_becomes_a_twilio_request_with_the_exact_fields(provider_app, provider_client, auth, fake_twilio,
                                                                   new_journey):
    body = event_body(journey=new_journey())
    inv = post_event(provider_client, auth, body)
    run_jobs_of(provider_app)
    [sent] = fake_twilio.sends(to=body["patient"]["phone"])
    assert sent.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    assert sent.headers["Authorization"] == "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    assert set(sent.form) == {"To", "Body", "MessagingServiceSid", "StatusCallback"}
    assert sent.form["MessagingServiceSid"] == TWILIO_SERVICE
    assert sent.form["StatusCallback"] == f"http://survey.test/webhooks/twilio/status?invitation={inv['id']}"
    text = sent.form["Body"]
    assert text.startswith("Hi Ana, Riverside Health") and text.endswith("Reply STOP to opt out.")
    assert re.search(r"http://survey\.test/s/[A-Za-z0-9_-]{43}\b", text)
    stored = invitation_row(provider_app, inv["id"])
    assert (stored.status, stored.provider_message_id, stored.delivery_status) == \
        ("sent", next(m["sid"] for m in fake_twilio.messages if m["to"] == body["patient"]["phone"]), "queued")
    assert stored.send_started_at is not None and stored.sent_at >= stored.send_started_at


def test_a_booking_is_texted_an_hour_later_not_before(provider_app, provider_client, auth, fake_twilio,
                                                    new_journey):
    booked = utcnow() - timedelta(minutes=5)
    body = event_body(journey=new_journey(), occurred_at=booked)
    inv = post_event(provider_client, auth, body)
    dispatch(provider_app)
    assert fake_twilio.sends(to=body["patient"]["phone"]) == []  # the rule waits an hour
    dispatch(provider_app, now=booked + timedelta(minutes=59))
    assert fake_twilio.sends(to=body["patient"]["phone"]) == []
    dispatch(provider_app, now=booked + timedelta(minutes=60))
    assert len(fake_twilio.sends(to=body["patient"]["phone"])) == 1
    assert invitation_row(provider_app, inv["id"]).status == "sent"


def test_a_from_number_is_used_when_there_is_no_messaging_service(provider_settings, provider_client, auth,
                                                                   fake_twilio, new_journey):
    app = create_app({"TESTING": True, **provider_settings, "TWILIO_MESSAGING_SERVICE_SID": "",
                      "TWILIO_FROM_NUMBER": "+15005550006"})
    body = event_body(journey=new_journey())
    post_event(provider_client, auth, body)
    dispatch(app)
    [sent] = fake_twilio.sends(to=body["patient"]["phone"])
    assert sent.form["From"] == "+15005550006" and "MessagingServiceSid" not in sent.form
    with app.app_context():
        db.engine.dispose()


def test_only_the_first_text_to_a_number_says_how_to_stop(provider_app, provider_client, auth, fake_twilio,
                                                          new_journey):
    first = event_body(journey=new_journey())
    phone = first["patient"]["phone"]
    post_event(provider_client, auth, first)
    dispatch(provider_app, now=utcnow() - timedelta(days=2))
    # Two days on, another journey's survey to the same handset (text limits allow one a day).
    inv = post_event(provider_client, auth, event_body(journey=new_journey(), phone=phone, consent_email=False))
    dispatch(provider_app)
    texts = [s.form["Body"] for s in fake_twilio.sends(to=phone)]
    assert len(texts) == 2 and invitation_row(provider_app, inv["id"]).status == "sent"
    assert "Reply STOP" in texts[0] and "STOP" not in texts[1]


def test_a_one_question_survey_asks_in_the_text_in_the_patients_language(provider_app, provider_client, auth,
                                                                         fake_twilio, new_journey):
    journey = new_journey(rules={"booking": {"question_set": "booking-pulse"}})
    en, es = event_body(journey=journey), event_body(journey=journey, locale="es-MX", first_name="José Luis")
    post_event(provider_client, auth, en)
    post_event(provider_client, auth, es)
    run_jobs_of(provider_app)
    [en_text] = [s.form["Body"] for s in fake_twilio.sends(to=en["patient"]["phone"])]
    [es_text] = [s.form["Body"] for s in fake_twilio.sends(to=es["patient"]["phone"])]
    assert "How easy was it to book your appointment? Reply 1 (Very hard) to 5 (Very easy)." in en_text
    assert es_text.startswith("Hola José, ")  # first name only
    assert "¿Qué tan fácil fue reservar su cita? Responda de 1 (Muy difícil) a 5 (Muy fácil)." in es_text
    assert "Responda STOP" in es_text


def test_an_email_goes_through_sendgrid_with_both_parts_unsubscribe_headers_and_custom_args(
        provider_app, provider_client, auth, fake_sendgrid, new_journey):
    body = event_body(journey=new_journey(), consent_sms=False, email="Rosa.Diaz@Example.org", first_name="Rosa")
    inv = post_event(provider_client, auth, body)
    run_jobs_of(provider_app)
    [sent] = fake_sendgrid.sends(to="rosa.diaz@example.org")
    assert sent.path == "/v3/mail/send" and sent.headers["Authorization"] == f"Bearer {SENDGRID_KEY}"
    mail = sent.json
    assert mail["from"] == {"email": SENDER}
    assert mail["personalizations"][0]["to"] == [{"email": "rosa.diaz@example.org"}]
    assert mail["subject"] == "How was your recent experience with Riverside Health?"
    parts = {c["type"]: c["value"] for c in mail["content"]}
    assert set(parts) == {"text/plain", "text/html"} and "Hi Rosa," in parts["text/plain"]
    token = re.search(r"/s/([A-Za-z0-9_-]{43})", parts["text/plain"]).group(1)
    unsubscribe = f"http://survey.test/unsubscribe/{token}"
    assert f'href="{unsubscribe}"' in parts["text/html"] and unsubscribe in parts["text/plain"]
    assert mail["headers"] == {"List-Unsubscribe": f"<{unsubscribe}>",
                               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert mail["custom_args"] == {"invitation_id": str(inv["id"])}
    assert mail["categories"] == ["survey-invitation"]
    # Survey links must not pass through SendGrid's click-tracking redirector.
    assert mail["tracking_settings"]["click_tracking"] == {"enable": False, "enable_text": False}
    assert invitation_row(provider_app, inv["id"]).provider_message_id  # X-Message-Id, for matching events


# -- when the provider says no -------------------------------------------------------------------

@pytest.mark.parametrize(("status", "code"), [(429, 20429), (500, 20500), (503, 20503)])
def test_throttling_and_server_errors_are_retried_with_backoff(provider_app, provider_client, auth, fake_twilio,
                                                              new_journey, status, code):
    body = event_body(journey=new_journey())
    phone = body["patient"]["phone"]
    inv = post_event(provider_client, auth, body)
    fake_twilio.reply_next(status, twilio_error(code, status), to=phone)
    before = utcnow()
    dispatch(provider_app)
    retry = invitation_row(provider_app, inv["id"])
    assert (retry.status, retry.attempts, retry.error_code) == ("scheduled", 1, str(code))
    assert timedelta(seconds=14) < retry.send_at - before < timedelta(seconds=50)  # 30 s, with jitter
    assert retry.token_hash is None and retry.send_started_at is None  # nothing of the try is kept
    dispatch(provider_app, now=retry.send_at)
    assert invitation_row(provider_app, inv["id"]).status == "sent"
    assert len(fake_twilio.sends(to=phone)) == 2 and len(fake_twilio.messages) >= 1


@pytest.mark.parametrize(("status", "code"), [(503, 20503), (401, 20003), (400, 21606)])
def test_a_provider_or_account_that_keeps_failing_fails_the_invitation_but_not_over_to_email(
        provider_app, provider_client, auth, fake_twilio, new_journey, status, code):
    # Twilio down, our credentials refused, our sender misconfigured: none of it is the patient's
    # number, so the patients are not moved to email wholesale.
    body = event_body(journey=new_journey())
    inv = post_event(provider_client, auth, body)
    fake_twilio.reply_next(status, twilio_error(code, status), times=2, to=body["patient"]["phone"])
    dispatch(provider_app, max_attempts=2)
    assert invitation_row(provider_app, inv["id"]).status == "scheduled"
    dispatch(provider_app, now=invitation_row(provider_app, inv["id"]).send_at, max_attempts=2)
    failed = invitation_row(provider_app, inv["id"])
    assert (failed.status, failed.attempts, failed.error_code) == ("failed", 2, str(code))
    assert successor(provider_app, inv["id"]) is None


@pytest.mark.parametrize("code", [21211, 21614, 21612])
def test_a_number_twilio_refuses_fails_with_its_code_and_falls_over_to_email(
        provider_app, provider_client, auth, fake_twilio, fake_sendgrid, new_journey, code):
    body = event_body(journey=new_journey(), email=f"falls.over.{code}@example.org")
    phone = body["patient"]["phone"]
    inv = post_event(provider_client, auth, body)
    error = twilio_error(code, 400)
    error["message"] = f"The 'To' number {phone} is not a valid phone number."  # as Twilio words it
    fake_twilio.reply_next(400, error, to=phone)
    dispatch(provider_app)
    failed = invitation_row(provider_app, inv["id"])
    assert (failed.status, failed.error_code, failed.attempts) == ("failed", str(code), 1)
    assert str(code) in failed.last_error and phone not in failed.last_error
    assert not is_opted_out_in(provider_app, "sms", phone)
    email = successor(provider_app, inv["id"])
    assert (email.channel, email.status, email.stage_id) == ("email", "scheduled", failed.stage_id)
    dispatch(provider_app)
    assert invitation_row(provider_app, email.id).status == "sent"
    assert len(fake_sendgrid.sends(to=f"falls.over.{code}@example.org")) == 1
    assert len(fake_twilio.sends(to=phone)) == 1  # the text is not tried again


def test_a_number_twilio_has_blocked_is_opted_out_and_no_channel_left_means_no_fall_over(
        provider_app, provider_client, auth, fake_twilio, new_journey):
    body = event_body(journey=new_journey(), consent_email=False)
    phone = body["patient"]["phone"]
    inv = post_event(provider_client, auth, body)
    fake_twilio.reply_next(400, twilio_error(21610, 400), to=phone)
    dispatch(provider_app)
    assert invitation_row(provider_app, inv["id"]).status == "failed" and successor(provider_app, inv["id"]) is None
    assert is_opted_out_in(provider_app, "sms", phone)
    again = post_event(provider_client, auth, event_body(journey=new_journey(), phone=phone, consent_email=False))
    assert (again["status"], again["reason"]) == ("skipped", "opted-out")


@pytest.mark.parametrize(("status", "outcome"), [(400, "failed"), (413, "failed"), (429, "scheduled"),
                                                 (500, "scheduled"), (401, "scheduled")])
def test_sendgrid_errors_are_sorted_into_retry_and_failure(provider_app, provider_client, auth, fake_sendgrid,
                                                          new_journey, status, outcome):
    body = event_body(journey=new_journey(), consent_sms=False, email=f"sg{status}@example.org")
    inv = post_event(provider_client, auth, body)
    fake_sendgrid.reply_next(status, {"errors": [{"message": "no"}]}, to=f"sg{status}@example.org")
    dispatch(provider_app)
    stored = invitation_row(provider_app, inv["id"])
    assert (stored.status, stored.error_code) == (outcome, str(status))
    assert successor(provider_app, inv["id"]) is None  # email is the rule's last channel


# -- when the answer never comes -----------------------------------------------------------------

def test_a_text_whose_answer_never_came_is_left_in_doubt_until_twilio_says_it_went(
        provider_app, provider_client, auth, fake_twilio, new_journey):
    body = event_body(journey=new_journey())
    phone = body["patient"]["phone"]
    inv = post_event(provider_client, auth, body)
    fake_twilio.accept_slowly(3.0, to=phone)  # Twilio takes it; its answer comes after our 2 s
    dispatch(provider_app)
    doubt = invitation_row(provider_app, inv["id"])
    assert (doubt.status, doubt.sent_at) == ("unknown", None)
    run_jobs_of(provider_app)
    dispatch(provider_app, now=utcnow() + timedelta(hours=2))
    assert len(fake_twilio.sends(to=phone)) == 1  # never sent again by itself
    # Twilio's status callback for it settles the doubt.
    [message] = [m for m in fake_twilio.messages if m["to"] == phone]
    r = twilio_post(provider_client, f"/webhooks/twilio/status?invitation={inv['id']}",
                    {"MessageSid": message["sid"], "MessageStatus": "delivered", "AccountSid": TWILIO_SID})
    assert r.status_code == 204
    settled = invitation_row(provider_app, inv["id"])
    assert (settled.status, settled.provider_message_id, settled.sent_at) == (
        "sent", message["sid"], doubt.send_started_at)


def test_a_text_in_doubt_is_resent_only_by_a_persons_decision(provider_app, provider_client, auth, fake_twilio,
                                                              new_journey):
    body = event_body(journey=new_journey())
    phone = body["patient"]["phone"]
    inv = post_event(provider_client, auth, body)
    fake_twilio.reply_next(500, twilio_error(20500, 500), delay=3.0, to=phone)  # stalls, takes nothing
    dispatch(provider_app)
    assert invitation_row(provider_app, inv["id"]).status == "unknown"
    runner = provider_app.test_cli_runner()
    listed = runner.invoke(args=["invitations", "in-doubt"])
    assert listed.exit_code == 0 and f"{inv['id']}\tsms\t" in listed.output and phone not in listed.output
    first_link = invitation_row(provider_app, inv["id"]).token_hash
    resent = runner.invoke(args=["invitations", "resend", str(inv["id"])])
    assert resent.exit_code == 0 and "1 of 1" in resent.output
    dispatch(provider_app)
    again = invitation_row(provider_app, inv["id"])
    assert again.status == "sent" and again.token_hash != first_link
    assert len(fake_twilio.sends(to=phone)) == 2
    assert runner.invoke(args=["invitations", "resend", str(inv["id"])]).output.startswith("0 of 1")


def test_an_email_whose_answer_never_came_is_left_in_doubt_and_never_resent(
        provider_app, provider_client, auth, fake_sendgrid, new_journey):
    email = "in.doubt@example.org"
    inv = post_event(provider_client, auth, event_body(journey=new_journey(), consent_sms=False, email=email))
    fake_sendgrid.accept_slowly(3.0, to=email)
    dispatch(provider_app)
    assert invitation_row(provider_app, inv["id"]).status == "unknown"
    run_jobs_of(provider_app)
    dispatch(provider_app, now=utcnow() + timedelta(hours=2))
    assert invitation_row(provider_app, inv["id"]).status == "unknown"
    assert len(fake_sendgrid.sends(to=email)) == 1


def test_an_unreachable_provider_is_retried(provider_settings, provider_client, auth, new_journey, fake_twilio):
    # A port nothing listens on: the connection is refused, so nothing can have been sent.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    app = create_app({"TESTING": True, **provider_settings, "TWILIO_API_BASE_URL": f"http://127.0.0.1:{closed_port}",
                      "SENDGRID_API_BASE_URL": f"http://127.0.0.1:{closed_port}"})
    # TLS to a server that does not speak it fails in the handshake: nothing was sent either.
    tls_app = create_app({"TESTING": True, **provider_settings,
                          "TWILIO_API_BASE_URL": fake_twilio.url.replace("http://", "https://")})
    tls_body = event_body(journey=new_journey())
    tls = post_event(provider_client, auth, tls_body)
    dispatch(tls_app)
    assert (invitation_row(tls_app, tls["id"]).status, invitation_row(tls_app, tls["id"]).error_code) == ("scheduled", "unreachable")
    assert fake_twilio.sends(to=tls_body["patient"]["phone"]) == []
    sms = post_event(provider_client, auth, event_body(journey=new_journey()))
    email = post_event(provider_client, auth, event_body(journey=new_journey(), consent_sms=False))
    dispatch(app)
    for inv in (sms, email):
        stored = invitation_row(app, inv["id"])
        assert (stored.status, stored.error_code) == ("scheduled", "unreachable")
    for each in (app, tls_app):
        with each.app_context():
            db.engine.dispose()


# -- pace and concurrency ------------------------------------------------------------------------

def test_sends_run_concurrently_but_never_faster_than_the_configured_rate(provider_settings, provider_client, auth,
                                                                         fake_twilio, new_journey):
    app = create_app({"TESTING": True, **provider_settings, "FEEDBACK_SMS_RATE_PER_SECOND": 20.0,
                      "FEEDBACK_SEND_CONCURRENCY": 8})
    journey = new_journey()
    bodies = [event_body(journey=journey) for _ in range(30)]
    r = provider_client.post("/api/v1/events", json=bodies, headers=auth)
    assert r.status_code == 202
    fake_twilio.latency = 0.25
    dispatch(app)
    ours = {b["patient"]["phone"] for b in bodies}
    arrivals = sorted(s.at for s in fake_twilio.sends() if s.form["To"] in ours)
    assert len(arrivals) == 30
    # 30 sends at 20 a second cannot start within less than 29/20 s of each other...
    assert arrivals[-1] - arrivals[0] >= 29 / 20 * 0.9
    # ...and with a quarter-second answer each, they only keep that pace by overlapping.
    assert fake_twilio.max_in_flight > 1
    with app.app_context():
        db.engine.dispose()


def test_emails_do_not_wait_behind_texts_paced_to_a_slow_number(provider_settings, provider_client, auth,
                                                                fake_twilio, fake_sendgrid, new_journey):
    app = create_app({"TESTING": True, **provider_settings, "FEEDBACK_SMS_RATE_PER_SECOND": 1.0,
                      "FEEDBACK_SEND_CONCURRENCY": 4})
    journey = new_journey()
    texts = [event_body(journey=journey) for _ in range(3)]
    emails = [event_body(journey=journey, consent_sms=False, email=f"hol{i}-{uuid.uuid4().hex[:6]}@example.org")
              for i in range(3)]
    r = provider_client.post("/api/v1/events", json=texts + emails, headers=auth)
    assert r.status_code == 202
    dispatch(app)
    text_times = sorted(s.at for b in texts for s in fake_twilio.sends(to=b["patient"]["phone"]))
    email_times = [s.at for b in emails for s in fake_sendgrid.sends(to=b["patient"]["email"])]
    assert len(text_times) == 3 and len(email_times) == 3
    # The texts take two seconds at one a second; every email is out before the last of them.
    assert text_times[-1] - text_times[0] >= 1.8
    assert max(email_times) < text_times[-1]
    with app.app_context():
        db.engine.dispose()


def test_provider_settings_that_cannot_work_stop_start_up(provider_settings):
    with pytest.raises(RuntimeError, match="TWILIO_AUTH_TOKEN"):
        create_app({"TESTING": True, **provider_settings, "TWILIO_AUTH_TOKEN": ""})
    with pytest.raises(RuntimeError, match="SENDGRID_WEBHOOK_PUBLIC_KEY"):
        create_app({"TESTING": True, **provider_settings, "SENDGRID_WEBHOOK_PUBLIC_KEY": "bm90LWEta2V5"})


# -- which channel carries what ------------------------------------------------------------------

def test_the_console_stays_the_default_without_credentials_and_providers_are_picked_with_them(
        app, provider_app, provider_settings):
    assert {m: c.name for m, c in app.extensions["feedback_channels"].items()} == {"sms": "console",
                                                                                   "email": "console"}
    assert {m: c.name for m, c in provider_app.extensions["feedback_channels"].items()} == {"sms": "twilio",
                                                                                            "email": "sendgrid"}
    config = {**provider_app.config, "FEEDBACK_EMAIL_CHANNEL": "twilio"}
    with pytest.raises(RuntimeError, match="cannot carry email"):
        build_channels(config)
    with pytest.raises(RuntimeError, match="TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER"):
        build_channels({**provider_app.config, "TWILIO_MESSAGING_SERVICE_SID": ""})


def is_opted_out_in(app, medium, address) -> bool:
    with app.app_context():
        return is_opted_out(medium, address)


def test_a_worker_talking_to_the_providers_logs_no_number_address_or_link(provider_settings, provider_client, auth,
                                                                         fake_twilio, fake_sendgrid, new_journey):
    text_ok = event_body(journey=new_journey())
    text_refused = event_body(journey=new_journey(), email="kept.quiet@example.org")
    for body in (text_ok, text_refused):
        post_event(provider_client, auth, body)
    fake_twilio.reply_next(400, twilio_error(21211, 400), to=text_refused["patient"]["phone"])  # error paths log too
    env = {**os.environ, **{k: str(v) for k, v in provider_settings.items()}, "FEEDBACK_LOG_LEVEL": "DEBUG"}
    cli = str(Path(sys.executable).parent / "feedback-service")
    done = subprocess.run([cli, "jobs", "run-once"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    logs = done.stdout + done.stderr
    assert "dispatch: worker=" in logs and "21211" in logs  # the logs do say what happened
    bodies = [s.form["Body"] for s in fake_twilio.sends(to=text_ok["patient"]["phone"])]
    token = re.search(r"/s/([A-Za-z0-9_-]{43})", bodies[0]).group(1)
    for secret in (text_ok["patient"]["phone"], text_refused["patient"]["phone"], "kept.quiet@example.org", token,
                   text_ok["patient"]["phone"][2:]):
        assert secret not in logs
