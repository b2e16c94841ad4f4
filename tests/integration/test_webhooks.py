"""Provider webhooks through HTTP, signed by the providers' own SDK code: Twilio inbound texts and
status callbacks, SendGrid's event webhook, and the unsubscribe links, on the real database with
the real dispatcher sending to the fake provider APIs."""
from __future__ import annotations

import base64
import json
import re
import time
import uuid
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select, update
from twilio.request_validator import RequestValidator

from feedback_service import create_app
from feedback_service.extensions import db
from feedback_service.journeys.models import Journey
from feedback_service.patients.models import OptOut
from feedback_service.patients.services import is_opted_out
from feedback_service.responses.models import Response
from feedback_service.rollups.models import DailyCounts, DailyScores
from feedback_service.scheduling.models import Invitation
from feedback_service.security import new_token
from tests.conftest import (
    TWILIO_SID, TWILIO_TOKEN, event_body, invitation_row, new_phone, post_event, run_jobs_of, sendgrid_post,
    twilio_post, uid)

SMS_PATH = "/webhooks/twilio/sms"
OUR_NUMBER = "+15005550006"
ONE_CLICK = "List-Unsubscribe=One-Click"


# -- helpers ---------------------------------------------------------------------------------

def new_email() -> str:
    """An address of the test's own: email opt-outs are global, by address."""
    return f"{uid('ana')}@example.org"


def successors(app, inv_id: int) -> list[Invitation]:
    with app.app_context():
        found = db.session.scalars(select(Invitation).where(Invitation.replaces_id == inv_id)).all()
        db.session.expunge_all()
        return list(found)


def opted_out(app, medium: str, address: str) -> bool:
    with app.app_context():
        return is_opted_out(medium, address)


def text(client, number: str, body: str):
    """A text from a patient, posted and signed as Twilio does."""
    return twilio_post(client, SMS_PATH, {"From": number, "To": OUR_NUMBER, "Body": body, "AccountSid": TWILIO_SID,
                                          "MessageSid": "SM" + uuid.uuid4().hex, "NumMedia": "0"})


def status_path(inv_id: int) -> str:
    return f"/webhooks/twilio/status?invitation={inv_id}"


def status_form(inv: Invitation, status: str, error_code: str | None = None, sid: str | None = None) -> dict:
    sid = sid or inv.provider_message_id
    form = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status,
            "SmsStatus": status, "AccountSid": TWILIO_SID, "To": inv.sent_to, "ApiVersion": "2010-04-01"}
    if error_code:
        form["ErrorCode"] = error_code
    return form


def callback(client, inv: Invitation, status: str, error_code: str | None = None, sid: str | None = None):
    """A Twilio status callback about this invitation's text, signed for the URL we gave Twilio."""
    r = twilio_post(client, status_path(inv.id), status_form(inv, status, error_code, sid))
    assert r.status_code == 204, r.data
    return r


def twiml_messages(response) -> list[str]:
    """The texts a TwiML answer sends back (none for an empty <Response/>)."""
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/xml"
    root = ET.fromstring(response.data)
    assert root.tag == "Response"
    return [m.text or "" for m in root.iter("Message")]


def sent_text(provider_app, provider_client, auth, fake_twilio, journey: str, **patient):
    """An event whose invitation the dispatcher has texted through the fake Twilio:
    (event body, invitation row, the request Twilio got)."""
    body = event_body(journey=journey, email=new_email(), **patient)
    outcome = post_event(provider_client, auth, body)
    assert outcome["channel"] == "sms", outcome
    run_jobs_of(provider_app)
    [request] = fake_twilio.sends(to=body["patient"]["phone"])
    inv = invitation_row(provider_app, outcome["id"])
    assert inv.status == "sent" and inv.provider_message_id == request_sid(fake_twilio, request)
    return body, inv, request


def wait_for_message(fake_twilio, phone: str, timeout: float = 5.0) -> dict:
    """The text Twilio took for this number, as soon as it has it (before it answers the API call)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in fake_twilio.messages if m["to"] == phone]
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"Twilio got no text for {phone} within {timeout}s")


def request_sid(fake_twilio, request) -> str:
    [message] = [m for m in fake_twilio.messages if m["to"] == request.form["To"]]
    return message["sid"]


def sent_email(provider_app, provider_client, auth, fake_sendgrid, journey: str, **patient):
    """An event whose invitation the dispatcher has emailed through the fake SendGrid:
    (event body, invitation row, the Mail Send JSON SendGrid got)."""
    patient = {"consent_sms": False, "email": new_email(), **patient}
    body = event_body(journey=journey, **patient)
    outcome = post_event(provider_client, auth, body)
    assert outcome["channel"] == "email", outcome
    run_jobs_of(provider_app)
    [request] = fake_sendgrid.sends(to=patient["email"])
    inv = invitation_row(provider_app, outcome["id"])
    assert inv.status == "sent" and request.json["custom_args"]["invitation_id"] == str(inv.id)
    return body, inv, request.json


def survey_token(mail: dict) -> str:
    found = {m for c in mail["content"] for m in re.findall(r"/s/([A-Za-z0-9_-]+)", c["value"])}
    assert len(found) == 1, found
    return found.pop()


def sg_event(inv: Invitation, kind: str, **extra) -> dict:
    """One SendGrid event about this invitation's email, custom args at the top level as SendGrid posts them."""
    return {"email": inv.sent_to, "event": kind, "timestamp": int(time.time()), "invitation_id": str(inv.id),
            "sg_event_id": uid("sgev"), "sg_message_id": f"{inv.provider_message_id}.filter0001",
            "category": ["survey-invitation"], **extra}


def sendgrid_headers(key, raw: str, timestamp: str) -> dict:
    """The signature headers SendGrid would send with this body (to post another body under them)."""
    signature = base64.b64encode(key.sign((timestamp + raw).encode(), ec.ECDSA(hashes.SHA256()))).decode()
    return {"X-Twilio-Email-Event-Webhook-Signature": signature, "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


def sg_post(client, events, key):
    r = sendgrid_post(client, events, key)
    assert r.status_code == 200, r.data
    return r.get_json()


def delivery_fields(inv: Invitation) -> tuple:
    return (inv.status, inv.delivery_status, inv.delivered_at, inv.email_opened_at, inv.error_code, inv.sent_at)


@pytest.fixture
def text_journey(new_journey):
    """A journey whose rules send the one-question rating survey `booking-pulse` by text."""
    # Every rule uses the set; it belongs to the booking stage, so the touchpoint must be one of it.
    return new_journey(question_set="booking-pulse", touchpoint="phone-booking")


@pytest.fixture(scope="module")
def reporting_client(app, settings):
    """The API of a deployment that reports any count (FEEDBACK_MIN_REPORTING_N=1), same database."""
    rapp = create_app({"TESTING": True, **settings, "FEEDBACK_MIN_REPORTING_N": 1})
    yield rapp.test_client()
    with rapp.app_context():
        db.engine.dispose()


# -- Twilio signatures -----------------------------------------------------------------------

def test_twilio_posts_without_a_valid_signature_are_refused_and_change_nothing(
        app, provider_app, provider_client, auth, fake_twilio, new_journey):
    _body, inv, _ = sent_text(provider_app, provider_client, auth, fake_twilio, new_journey())
    phone = inv.sent_to
    stop = {"From": phone, "To": OUR_NUMBER, "Body": "STOP", "AccountSid": TWILIO_SID, "MessageSid": "SM" + uuid.uuid4().hex}
    forged = [
        twilio_post(provider_client, SMS_PATH, stop, signature="not-a-signature"),
        provider_client.post(SMS_PATH, data=stop),  # no X-Twilio-Signature at all
        twilio_post(provider_client, SMS_PATH, stop, token="some-other-auth-token"),
        twilio_post(provider_client, SMS_PATH, stop, base="http://attacker.test"),  # signed for another host
    ]
    assert [r.status_code for r in forged] == [403] * 4
    assert not opted_out(provider_app, "sms", phone)

    before = invitation_row(provider_app, inv.id)
    delivered = status_form(inv, "delivered")
    validator = RequestValidator(TWILIO_TOKEN)
    other_query = validator.compute_signature("http://survey.test" + status_path(inv.id + 1), delivered)
    other_form = validator.compute_signature("http://survey.test" + status_path(inv.id), status_form(inv, "sent"))
    no_query = validator.compute_signature("http://survey.test/webhooks/twilio/status", delivered)
    forged = [
        twilio_post(provider_client, status_path(inv.id), delivered, signature=other_query),  # other invitation
        twilio_post(provider_client, status_path(inv.id), delivered, signature=other_form),  # other status
        twilio_post(provider_client, status_path(inv.id), delivered, signature=no_query),  # without the query
        provider_client.post(status_path(inv.id), data=delivered),
    ]
    assert [r.status_code for r in forged] == [403] * 4
    assert delivery_fields(invitation_row(provider_app, inv.id)) == delivery_fields(before)
    assert before.delivery_status == "queued" and before.delivered_at is None

    # Without TWILIO_AUTH_TOKEN (the console deployment) nothing can be verified: all refused.
    console = app.test_client()
    assert twilio_post(console, SMS_PATH, stop).status_code == 403
    assert twilio_post(console, status_path(inv.id), delivered).status_code == 403
    assert not opted_out(provider_app, "sms", phone)
    assert invitation_row(provider_app, inv.id).delivered_at is None

    # The same posts, properly signed, do act: the refusals above were the signature's doing.
    assert twiml_messages(twilio_post(provider_client, SMS_PATH, stop)) == []
    assert opted_out(provider_app, "sms", phone)
    callback(provider_client, inv, "delivered")
    assert invitation_row(provider_app, inv.id).delivery_status == "delivered"


# -- opt-out, opt-in and HELP by text --------------------------------------------------------

STOP_REPLIES = ["STOP", "  stopall ", "Unsubscribe", "cancel.", "END!", "QuIt\n", "Opt-Out", "revoke"]


def test_stop_keywords_opt_the_number_out_also_for_invitations_already_scheduled(
        provider_app, provider_client, auth, fake_twilio, new_journey):
    journey = new_journey()
    cases = []
    for reply in STOP_REPLIES:
        phone = new_phone()
        # No email consent: the only channel is the text, so its opt-out is the reason given.
        earlier = post_event(provider_client, auth, event_body(journey=journey, phone=phone, consent_email=False))
        assert earlier["status"] == "scheduled" and earlier["channel"] == "sms"
        assert twiml_messages(text(provider_client, phone, reply)) == [], reply  # Twilio confirms STOP itself
        assert opted_out(provider_app, "sms", phone), reply
        # Another patient record with the same handset: opt-outs go by address.
        later = post_event(provider_client, auth, event_body(journey=journey, phone=phone, consent_email=False))
        assert (later["status"], later["reason"], later["channel"]) == ("skipped", "opted-out", None), reply
        cases.append((reply, phone, earlier["id"]))

    run_jobs_of(provider_app)
    for reply, phone, earlier_id in cases:
        inv = invitation_row(provider_app, earlier_id)
        assert (inv.status, inv.skip_reason) == ("skipped", "opted-out"), reply  # re-checked at send time
        assert fake_twilio.sends(to=phone) == [], reply


@pytest.mark.parametrize("reply", ["START", " unstop ", "Yes"])
def test_start_unstop_and_yes_opt_an_opted_out_number_back_in(provider_app, provider_client, auth, new_journey,
                                                               reply):
    phone = new_phone()
    assert twiml_messages(text(provider_client, phone, "stop")) == []
    assert opted_out(provider_app, "sms", phone)
    assert twiml_messages(text(provider_client, phone, reply)) == []
    assert not opted_out(provider_app, "sms", phone)
    again = post_event(provider_client, auth, event_body(journey=new_journey(), phone=phone, consent_email=False))
    assert (again["status"], again["channel"], again["reason"]) == ("scheduled", "sms", None)


def test_keywords_twilio_advanced_opt_out_recognised_are_honoured(provider_app, provider_client):
    # A Messaging Service with Advanced Opt-Out can have its own keywords ("ALTO", "PARAR"...):
    # Twilio tells us what it made of them.
    phone = new_phone()
    form = {"From": phone, "To": OUR_NUMBER, "Body": "Parar", "AccountSid": TWILIO_SID,
            "MessageSid": "SM" + uuid.uuid4().hex, "NumMedia": "0", "OptOutType": "STOP"}
    assert twiml_messages(twilio_post(provider_client, SMS_PATH, form)) == []
    assert opted_out(provider_app, "sms", phone)
    form.update(Body="Volver", OptOutType="START", MessageSid="SM" + uuid.uuid4().hex)
    assert twiml_messages(twilio_post(provider_client, SMS_PATH, form)) == []
    assert not opted_out(provider_app, "sms", phone)


@pytest.mark.parametrize("locale, expected", [
    ("en", "Riverside Health patient feedback: short surveys about your recent care."),
    ("es", "Riverside Health, opinión de pacientes: encuestas breves sobre su atención reciente."),
    ("es-MX", "Riverside Health, opinión de pacientes: encuestas breves sobre su atención reciente."),
])
def test_help_answers_who_we_are_and_how_to_stop_in_the_patients_language(
        provider_app, provider_client, auth, new_journey, locale, expected):
    phone = new_phone()
    # The patient on file for the number (no consent: nothing is scheduled for it).
    skipped = post_event(provider_client, auth, event_body(journey=new_journey(), phone=phone, locale=locale,
                                                           consent_sms=False, consent_email=False))
    assert skipped["reason"] == "no-consent"
    for word in (" Help ", "INFO"):
        [reply] = twiml_messages(text(provider_client, phone, word))
        assert reply.startswith(expected), reply
        assert "Riverside Health" in reply and "STOP" in reply
    assert not opted_out(provider_app, "sms", phone)


# -- one-question surveys answered by text ---------------------------------------------------

def test_a_rating_texted_back_is_recorded_and_counted_in_the_stage_scores(
        provider_app, provider_client, auth, fake_twilio, text_journey, reporting_client):
    _body, inv, request = sent_text(provider_app, provider_client, auth, fake_twilio, text_journey)
    question = "How easy was it to book your appointment? Reply 1 (Very hard) to 5 (Very easy)."
    assert question in request.form["Body"], request.form["Body"]
    assert "http://survey.test/s/" in request.form["Body"]

    [thanks] = twiml_messages(text(provider_client, inv.sent_to, "4"))
    assert thanks == "Thank you, your answer has been recorded. Riverside Health"

    with provider_app.app_context():
        invitation = db.session.get(Invitation, inv.id)
        response = db.session.scalar(select(Response).where(Response.invitation_id == inv.id))
        assert invitation.status == "answered" and invitation.answered_at is not None
        assert response.channel == "sms"
        assert [(a.question_key, a.value, a.measure, a.score) for a in response.answers] == [
            ("booking_rating", "4", "satisfaction", 75.0)]
        journey_id = db.session.scalar(select(Journey.id).where(Journey.slug == text_journey))
        counts = db.session.execute(select(func.sum(DailyCounts.sent), func.sum(DailyCounts.responses))
                                    .where(DailyCounts.journey_id == journey_id)).one()
        scores = db.session.execute(select(DailyScores.measure, DailyScores.responses, DailyScores.n,
                                           DailyScores.total).where(DailyScores.journey_id == journey_id)).all()
    assert tuple(counts) == (1, 1)
    assert [tuple(s) for s in scores] == [("satisfaction", 1, 1, 75.0)]

    # The scores API: one response is below the default reporting minimum, so it is suppressed ...
    r = provider_client.get(f"/api/v1/journeys/{text_journey}/scores", headers=auth)
    assert r.status_code == 200
    booking = next(s for s in r.get_json()["stages"] if s["slug"] == "booking")
    assert booking["suppressed"] is True and "responses" not in booking
    # ... and a deployment that reports every count shows it in the booking stage.
    r = reporting_client.get(f"/api/v1/journeys/{text_journey}/scores", headers=auth)
    assert r.status_code == 200
    booking = next(s for s in r.get_json()["stages"] if s["slug"] == "booking")
    assert (booking["suppressed"], booking["responses"], booking["sent"]) == (False, 1, 1)
    assert (booking["satisfaction"]["score"], booking["satisfaction"]["responses"]) == (75.0, 1)


def test_an_unreadable_reply_gets_one_retry_prompt_then_silence_and_a_later_answer_still_counts(
        provider_app, provider_client, auth, fake_twilio, text_journey):
    _body, inv, _ = sent_text(provider_app, provider_client, auth, fake_twilio, text_journey)
    phone = inv.sent_to

    [retry] = twiml_messages(text(provider_client, phone, "maybe"))
    assert "Please reply with a number from 1 to 5" in retry, retry
    assert invitation_row(provider_app, inv.id).reply_prompted_at is not None
    assert twiml_messages(text(provider_client, phone, "maybe later")) == []  # no nagging
    assert twiml_messages(text(provider_client, phone, "4 or 5")) == []  # two numbers: not an answer
    assert invitation_row(provider_app, inv.id).status == "sent"

    [thanks] = twiml_messages(text(provider_client, phone, "5 stars!"))
    assert thanks.startswith("Thank you")
    # Once answered, a further reply changes nothing.
    assert twiml_messages(text(provider_client, phone, "2")) == []
    with provider_app.app_context():
        responses = db.session.scalars(select(Response).where(Response.invitation_id == inv.id)).all()
        assert [[(a.question_key, a.value) for a in r.answers] for r in responses] == [[("booking_rating", "5")]]
        assert db.session.get(Invitation, inv.id).status == "answered"


# -- Twilio status callbacks -----------------------------------------------------------------

def test_twilio_delivery_statuses_are_recorded_and_never_downgraded(
        provider_app, provider_client, auth, fake_twilio, new_journey):
    _body, inv, _ = sent_text(provider_app, provider_client, auth, fake_twilio, new_journey())
    callback(provider_client, inv, "sent")
    assert invitation_row(provider_app, inv.id).delivery_status == "sent"
    callback(provider_client, inv, "delivered")
    delivered = invitation_row(provider_app, inv.id)
    assert (delivered.status, delivered.delivery_status) == ("sent", "delivered")
    assert delivered.delivered_at is not None

    callback(provider_client, inv, "sent")  # late, out of order
    assert delivery_fields(invitation_row(provider_app, inv.id)) == delivery_fields(delivered)

    # A callback about another message, with our invitation id, is not ours to record.
    other = status_form(inv, "undelivered", "30006", sid="SM" + uuid.uuid4().hex)
    assert twilio_post(provider_client, status_path(inv.id), other).status_code == 204
    assert delivery_fields(invitation_row(provider_app, inv.id)) == delivery_fields(delivered)
    assert successors(provider_app, inv.id) == []


def test_an_undelivered_text_fails_over_to_email(provider_app, provider_client, auth, fake_twilio, fake_sendgrid,
                                                 new_journey):
    body, inv, _ = sent_text(provider_app, provider_client, auth, fake_twilio, new_journey())
    callback(provider_client, inv, "undelivered", "30006")
    failed = invitation_row(provider_app, inv.id)
    assert (failed.status, failed.delivery_status, failed.error_code) == ("failed", "undelivered", "30006")

    [successor] = successors(provider_app, inv.id)
    assert (successor.channel, successor.status, successor.event_id) == ("email", "scheduled", inv.event_id)
    callback(provider_client, inv, "undelivered", "30006")  # Twilio retries its callbacks
    assert len(successors(provider_app, inv.id)) == 1

    run_jobs_of(provider_app)
    [mail] = fake_sendgrid.sends(to=body["patient"]["email"])
    assert mail.json["custom_args"]["invitation_id"] == str(successor.id)
    assert invitation_row(provider_app, successor.id).status == "sent"


def test_an_undelivered_callback_after_an_answer_does_not_fail_the_invitation(
        provider_app, provider_client, auth, fake_twilio, text_journey):
    _body, inv, _ = sent_text(provider_app, provider_client, auth, fake_twilio, text_journey)
    assert twiml_messages(text(provider_client, inv.sent_to, "3"))[0].startswith("Thank you")
    callback(provider_client, inv, "undelivered", "30006")  # the answer proves it arrived
    assert invitation_row(provider_app, inv.id).status == "answered"
    assert successors(provider_app, inv.id) == []


@pytest.mark.parametrize("status, error_code", [("delivered", None), ("undelivered", "30006")])
def test_a_status_callback_that_beats_the_senders_own_record_is_kept(
        provider_app, provider_client, auth, fake_twilio, new_journey, status, error_code):
    body = event_body(journey=new_journey(), email=new_email())
    phone = body["patient"]["phone"]
    outcome = post_event(provider_client, auth, body)
    # Twilio takes the message at once but answers the API call only after a second: its status
    # callback arrives while the dispatcher is still waiting for that answer.
    fake_twilio.accept_slowly(1.0, to=phone)
    with ThreadPoolExecutor(max_workers=1) as pool:
        jobs = pool.submit(run_jobs_of, provider_app)
        message = wait_for_message(fake_twilio, phone)
        sending = invitation_row(provider_app, outcome["id"])
        assert sending.status == "sending" and not jobs.done()
        callback(provider_client, sending, status, error_code, sid=message["sid"])
        jobs.result()
    inv = invitation_row(provider_app, outcome["id"])
    assert inv.provider_message_id == message["sid"]
    # The provider's later word stands over the API call's first answer ("queued").
    assert inv.delivery_status == status
    if status == "undelivered":
        assert (inv.status, inv.error_code) == ("failed", error_code)
        assert [s.channel for s in successors(provider_app, inv.id)] == ["email"]
    else:
        assert inv.status == "sent" and inv.delivered_at is not None


def test_a_status_callback_proves_an_invitation_in_doubt_went_out(provider_app, provider_client, auth, fake_twilio,
                                                                  new_journey):
    _body, inv, _ = sent_text(provider_app, provider_client, auth, fake_twilio, new_journey())
    with provider_app.app_context():  # setup: as a worker that died mid-send leaves it
        db.session.execute(update(Invitation).where(Invitation.id == inv.id).values(
            status="unknown", sent_at=None, provider_message_id=None, delivery_status=None))
        db.session.commit()

    callback(provider_client, inv, "delivered")
    proved = invitation_row(provider_app, inv.id)
    assert (proved.status, proved.delivery_status, proved.provider_message_id) == (
        "sent", "delivered", inv.provider_message_id)
    assert proved.sent_at is not None


# -- SendGrid event webhook ------------------------------------------------------------------

def test_sendgrid_posts_without_a_valid_signature_are_refused_and_change_nothing(
        app, provider_app, provider_client, auth, fake_sendgrid, new_journey, sendgrid_signing_key):
    _body, inv, _ = sent_email(provider_app, provider_client, auth, fake_sendgrid, new_journey())
    before = invitation_row(provider_app, inv.id)
    events = [sg_event(inv, "bounce", type="bounce", status="5.1.1", reason="no such user")]
    raw = json.dumps(events)

    timestamp = str(int(time.time()))
    signed = sendgrid_headers(sendgrid_signing_key, raw, timestamp)
    tampered = raw.replace('"bounce"', '"delivered"', 1)
    assert tampered != raw

    def post(data, headers):
        return provider_client.post("/webhooks/sendgrid/events", data=data, content_type="application/json",
                                    headers=headers)

    refused = [
        post(tampered, signed),  # body changed after signing
        post(raw, {**signed, "X-Twilio-Email-Event-Webhook-Timestamp": str(int(timestamp) + 1)}),
        sendgrid_post(provider_client, events, ec.generate_private_key(ec.SECP256R1())),  # another key
        post(raw, {}),  # no signature headers
        post(raw, {"X-Twilio-Email-Event-Webhook-Timestamp": timestamp}),
        post(raw, {**signed, "X-Twilio-Email-Event-Webhook-Signature": "bm90IGEgc2lnbmF0dXJl"}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert delivery_fields(invitation_row(provider_app, inv.id)) == delivery_fields(before)
    assert not opted_out(provider_app, "email", inv.sent_to)
    assert successors(provider_app, inv.id) == []

    # Without SENDGRID_WEBHOOK_PUBLIC_KEY (the console deployment) nothing can be verified.
    assert sendgrid_post(app.test_client(), events, sendgrid_signing_key).status_code == 403
    assert not opted_out(provider_app, "email", inv.sent_to)

    assert post(raw, signed).status_code == 200  # the untouched post is accepted
    assert opted_out(provider_app, "email", inv.sent_to)


def test_a_sendgrid_bounce_suppresses_the_address_and_fails_over_once(
        provider_app, provider_client, auth, fake_sendgrid, fake_twilio, new_journey, sendgrid_signing_key):
    journey = new_journey(channels=["email", "sms"])
    body, inv, _ = sent_email(provider_app, provider_client, auth, fake_sendgrid, journey, consent_sms=True)
    bounce = sg_event(inv, "bounce", type="bounce", status="5.1.1", reason="550 5.1.1 no such user")
    assert sg_post(provider_client, [bounce], sendgrid_signing_key) == {"received": 1, "matched": 1}
    assert sg_post(provider_client, [bounce], sendgrid_signing_key)["matched"] == 1  # SendGrid's retry

    with provider_app.app_context():
        [opt_out] = db.session.scalars(select(OptOut).where(OptOut.medium == "email",
                                                            OptOut.address == inv.sent_to)).all()
        assert opt_out.source == "sendgrid:bounce"
    failed = invitation_row(provider_app, inv.id)
    assert (failed.status, failed.delivery_status, failed.error_code) == ("failed", "bounce", "5.1.1")
    [successor] = successors(provider_app, inv.id)
    assert (successor.channel, successor.status) == ("sms", "scheduled")

    run_jobs_of(provider_app)
    assert len(fake_twilio.sends(to=body["patient"]["phone"])) == 1
    assert invitation_row(provider_app, successor.id).status == "sent"

    # The address is suppressed for everyone: another patient with it is not emailed.
    again = post_event(provider_client, auth, event_body(journey=journey, email=inv.sent_to.upper(),
                                                         consent_sms=False))
    assert (again["status"], again["reason"]) == ("skipped", "opted-out")


def test_a_blocked_bounce_does_not_suppress_the_address(provider_app, provider_client, auth, fake_sendgrid,
                                                        new_journey, sendgrid_signing_key):
    journey = new_journey()
    _body, inv, _ = sent_email(provider_app, provider_client, auth, fake_sendgrid, journey)
    blocked = sg_event(inv, "bounce", type="blocked", status="4.0.0", reason="IP temporarily blocked")
    assert sg_post(provider_client, [blocked], sendgrid_signing_key)["matched"] == 1
    assert invitation_row(provider_app, inv.id).delivery_status == "blocked"
    assert not opted_out(provider_app, "email", inv.sent_to)
    again = post_event(provider_client, auth, event_body(journey=journey, email=inv.sent_to, consent_sms=False))
    assert (again["status"], again["channel"], again["reason"]) == ("scheduled", "email", None)


def test_sendgrid_delivered_and_open_are_recorded_once(provider_app, provider_client, auth, fake_sendgrid,
                                                       new_journey, sendgrid_signing_key):
    _body, inv, _ = sent_email(provider_app, provider_client, auth, fake_sendgrid, new_journey())
    assert inv.delivery_status == "accepted" and inv.delivered_at is None and inv.email_opened_at is None
    events = [sg_event(inv, "processed"), sg_event(inv, "delivered", response="250 OK")]
    assert sg_post(provider_client, events, sendgrid_signing_key) == {"received": 2, "matched": 2}
    delivered = invitation_row(provider_app, inv.id)
    assert delivered.delivery_status == "delivered" and delivered.delivered_at is not None

    opened = sg_event(inv, "open", useragent="Mozilla/5.0")
    assert sg_post(provider_client, [opened], sendgrid_signing_key)["matched"] == 1
    recorded = invitation_row(provider_app, inv.id)
    # The email was opened; the survey page was not (that is `opened_at`, for the funnel).
    assert recorded.email_opened_at is not None and recorded.opened_at is None
    assert recorded.delivered_at == delivered.delivered_at
    assert recorded.status == "sent"

    time.sleep(0.01)  # a second recording would carry a later time
    assert sg_post(provider_client, [*events, opened, sg_event(inv, "processed")],
                   sendgrid_signing_key)["matched"] == 4
    assert delivery_fields(invitation_row(provider_app, inv.id)) == delivery_fields(recorded)


@pytest.mark.parametrize("kind, fails", [("dropped", True), ("spamreport", False), ("unsubscribe", False),
                                         ("group_unsubscribe", False)])
def test_sendgrid_drops_complaints_and_unsubscribes_suppress_the_address(
        provider_app, provider_client, auth, fake_sendgrid, new_journey, sendgrid_signing_key, kind, fails):
    _body, inv, _ = sent_email(provider_app, provider_client, auth, fake_sendgrid, new_journey())
    assert sg_post(provider_client, [sg_event(inv, kind, reason="Bounced Address")],
                   sendgrid_signing_key)["matched"] == 1
    with provider_app.app_context():
        assert db.session.scalar(select(OptOut.source).where(OptOut.medium == "email",
                                                             OptOut.address == inv.sent_to)) == f"sendgrid:{kind}"
    assert invitation_row(provider_app, inv.id).status == ("failed" if fails else "sent")


def test_a_sendgrid_event_proves_an_email_in_doubt_went_out(provider_app, provider_client, auth, fake_sendgrid,
                                                            new_journey, sendgrid_signing_key):
    _body, inv, _ = sent_email(provider_app, provider_client, auth, fake_sendgrid, new_journey())
    with provider_app.app_context():  # setup: SendGrid never answered the send (read timeout)
        db.session.execute(update(Invitation).where(Invitation.id == inv.id).values(
            status="unknown", sent_at=None, provider_message_id=None, delivery_status=None))
        db.session.commit()
    assert sg_post(provider_client, [sg_event(inv, "open")], sendgrid_signing_key)["matched"] == 1
    proved = invitation_row(provider_app, inv.id)
    assert (proved.status, proved.email_opened_at is not None, proved.sent_at is not None) == ("sent", True, True)


def test_a_sendgrid_event_for_another_address_is_ignored(provider_app, provider_client, auth, fake_sendgrid,
                                                         new_journey, sendgrid_signing_key):
    _body, inv, _ = sent_email(provider_app, provider_client, auth, fake_sendgrid, new_journey())
    stranger = new_email()
    events = [sg_event(inv, "delivered", email=stranger), sg_event(inv, "open", email=stranger)]
    assert sg_post(provider_client, events, sendgrid_signing_key) == {"received": 2, "matched": 0}
    assert delivery_fields(invitation_row(provider_app, inv.id)) == delivery_fields(inv)


@pytest.mark.parametrize("raw", ['{"event": "delivered"}', '"delivered"', "[1, 2]", "not json", ""])
def test_a_signed_sendgrid_post_that_is_not_an_array_of_events_is_400(provider_client, sendgrid_signing_key, raw):
    r = sendgrid_post(provider_client, None, sendgrid_signing_key, body=raw)
    assert r.status_code == 400
    assert r.get_json() == {"error": "expected a JSON array of event objects"}


# -- unsubscribe links -----------------------------------------------------------------------

def test_unsubscribe_asks_on_get_and_opts_out_on_a_one_click_post(provider_app, provider_client, auth,
                                                                   fake_sendgrid, new_journey):
    journey = new_journey()
    _body, inv, mail = sent_email(provider_app, provider_client, auth, fake_sendgrid, journey)
    token = survey_token(mail)
    assert mail["headers"]["List-Unsubscribe"] == f"<http://survey.test/unsubscribe/{token}>"
    assert mail["headers"]["List-Unsubscribe-Post"] == ONE_CLICK

    page = provider_client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert re.search(rf'<form method="post" action="/unsubscribe/{re.escape(token)}">', page.text)
    assert not opted_out(provider_app, "email", inv.sent_to)  # a link scanner's GET opts nobody out

    # The mail provider's one-click POST: a fresh client, no cookies, no CSRF token.
    one_click = provider_app.test_client().post(f"/unsubscribe/{token}", data=ONE_CLICK,
                                                 content_type="application/x-www-form-urlencoded")
    assert one_click.status_code == 200
    assert opted_out(provider_app, "email", inv.sent_to)
    again = post_event(provider_client, auth, event_body(journey=journey, email=inv.sent_to, consent_sms=False))
    assert (again["status"], again["reason"]) == ("skipped", "opted-out")


@pytest.mark.parametrize("token", [new_token(), "not-a-token"])
def test_unsubscribe_with_an_unknown_token_is_404(provider_client, token):
    assert provider_client.get(f"/unsubscribe/{token}").status_code == 404
    r = provider_client.post(f"/unsubscribe/{token}", data=ONE_CLICK, content_type="application/x-www-form-urlencoded")
    assert r.status_code == 404


# -- replays and odd posts -------------------------------------------------------------------

def test_a_text_delivered_twice_is_acted_on_once(provider_app, provider_client):
    # Twilio retries a webhook it got no answer to; a captured START must not undo a later STOP.
    phone = new_phone()
    start = {"From": phone, "To": OUR_NUMBER, "Body": "START", "AccountSid": TWILIO_SID,
             "MessageSid": "SM" + uuid.uuid4().hex}
    assert twiml_messages(text(provider_client, phone, "STOP")) == []
    assert twiml_messages(twilio_post(provider_client, SMS_PATH, start)) == []
    assert not opted_out(provider_app, "sms", phone)
    assert twiml_messages(text(provider_client, phone, "STOP")) == []
    assert twiml_messages(twilio_post(provider_client, SMS_PATH, start)) == []  # the same message again
    assert opted_out(provider_app, "sms", phone)


@pytest.mark.parametrize("query", ["invitation=99999999999999999999999", "invitation=%C2%B2", "invitation=-5",
                                   "invitation=%FF%FE"])
def test_odd_invitation_ids_in_a_signed_status_callback_match_nothing(provider_client, query):
    r = twilio_post(provider_client, f"/webhooks/twilio/status?{query}",
                    {"MessageSid": "SM" + uuid.uuid4().hex, "MessageStatus": "delivered", "AccountSid": TWILIO_SID})
    assert r.status_code == 204


def test_a_signed_text_without_sender_or_id_is_a_clear_400(provider_client):
    r = twilio_post(provider_client, SMS_PATH, {"Body": "STOP", "AccountSid": TWILIO_SID})
    assert r.status_code == 400 and "From and MessageSid" in r.get_json()["error"]


def test_odd_sendgrid_events_are_skipped_not_a_500(provider_app, provider_client, auth, fake_sendgrid, new_journey,
                                                   sendgrid_signing_key):
    _body, inv, _ = sent_email(provider_app, provider_client, auth, fake_sendgrid, new_journey())
    odd = [
        {**sg_event(inv, "delivered"), "invitation_id": "²"},
        {**sg_event(inv, "delivered"), "invitation_id": "9" * 30},
        {**sg_event(inv, "delivered"), "event": ["delivered"]},
        {**sg_event(inv, "bounce"), "email": "x" * 300 + "@example.org"},
        {**sg_event(inv, "delivered"), "email": None},
    ]
    assert sg_post(provider_client, odd, sendgrid_signing_key) == {"received": 5, "matched": 0}
    assert delivery_fields(invitation_row(provider_app, inv.id)) == delivery_fields(inv)


def test_an_undelivered_callback_that_beat_a_crash_still_fails_over_after_recovery(
        provider_app, provider_client, auth, fake_twilio, fake_sendgrid, new_journey):
    from datetime import datetime, timedelta, timezone

    from feedback_service.scheduling.dispatch import recover_stale
    _body, inv, _ = sent_text(provider_app, provider_client, auth, fake_twilio, new_journey())
    with provider_app.app_context():  # setup: the worker died after Twilio took it, before recording it
        db.session.execute(update(Invitation).where(Invitation.id == inv.id).values(
            status="sending", sent_at=None, provider_message_id=None, delivery_status=None))
        db.session.commit()
    callback(provider_client, inv, "undelivered", "30003")  # the handset is off: recorded, row not ours
    assert invitation_row(provider_app, inv.id).status == "sending"
    with provider_app.app_context():
        recover_stale(now=datetime.now(timezone.utc) + timedelta(minutes=10))
    settled = invitation_row(provider_app, inv.id)
    assert (settled.status, settled.error_code, settled.sent_at) == ("failed", "30003", inv.send_started_at)
    assert [s.channel for s in successors(provider_app, inv.id)] == ["email"]


# -- counting and settling, after the second review ----------------------------------------------

def sent_count(app, slug: str) -> int:
    with app.app_context():
        journey_id = db.session.scalar(select(Journey.id).where(Journey.slug == slug))
        return db.session.scalar(select(func.sum(DailyCounts.sent)).where(DailyCounts.journey_id == journey_id))


def test_an_undelivered_text_and_its_email_successor_count_as_one_sent(provider_app, provider_client, auth,
                                                                      fake_twilio, fake_sendgrid, new_journey):
    journey = new_journey()
    _body, inv, _ = sent_text(provider_app, provider_client, auth, fake_twilio, journey)
    assert sent_count(provider_app, journey) == 1
    callback(provider_client, inv, "undelivered", "30006")
    assert sent_count(provider_app, journey) == 0  # it never reached the patient
    run_jobs_of(provider_app)
    [successor] = successors(provider_app, inv.id)
    assert invitation_row(provider_app, successor.id).status == "sent"
    assert sent_count(provider_app, journey) == 1  # the response rate's denominator stays one patient


def test_an_answer_and_a_callback_confirming_the_same_send_count_it_once(provider_app, provider_client, auth,
                                                                        fake_twilio, text_journey):
    from feedback_service.responses.services import record_response
    _body, inv, _ = sent_text(provider_app, provider_client, auth, fake_twilio, text_journey)
    with provider_app.app_context():  # setup: its send was in doubt, not counted
        db.session.execute(update(Invitation).where(Invitation.id == inv.id).values(status="unknown", sent_at=None))
        journey_id = db.session.scalar(select(Journey.id).where(Journey.slug == text_journey))
        db.session.execute(update(DailyCounts).where(DailyCounts.journey_id == journey_id).values(sent=0))
        db.session.commit()
    with provider_app.app_context():
        invitation = db.session.get(Invitation, inv.id)  # the answer's request has it loaded, in doubt
        with ThreadPoolExecutor(1) as pool:  # meanwhile another request: Twilio confirms the send
            pool.submit(callback, provider_client, inv, "delivered").result()
        record_response(invitation, {"booking_rating": "4"}, channel="sms")
    assert invitation_row(provider_app, inv.id).status == "answered"
    assert sent_count(provider_app, text_journey) == 1


def test_a_failure_reported_after_delivery_does_not_undo_it(provider_app, provider_client, auth, fake_twilio,
                                                          new_journey):
    _body, inv, _ = sent_text(provider_app, provider_client, auth, fake_twilio, new_journey())
    callback(provider_client, inv, "delivered")
    callback(provider_client, inv, "undelivered", "30006")  # the first final word stands
    stored = invitation_row(provider_app, inv.id)
    assert (stored.status, stored.delivery_status, stored.error_code) == ("sent", "delivered", None)
    assert successors(provider_app, inv.id) == []


@pytest.mark.parametrize("reply", ["²", "٤", "4²"])
def test_digits_that_are_not_numbers_get_the_retry_prompt(provider_app, provider_client, auth, fake_twilio,
                                                          text_journey, reply):
    _body, inv, _ = sent_text(provider_app, provider_client, auth, fake_twilio, text_journey)
    [prompt] = twiml_messages(text(provider_client, inv.sent_to, reply))
    assert "1 to 5" in prompt and invitation_row(provider_app, inv.id).status == "sent"
