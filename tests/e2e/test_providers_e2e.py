"""The "Done when" of real SMS, with real processes and plain HTTP: the dev server and its worker
configured for Twilio, the real SDK talking to the fake Twilio API, and Twilio's webhooks posted
to the server signed by the SDK's own code."""
from __future__ import annotations

import os
import re
import uuid
import xml.etree.ElementTree as ET

import pytest
import requests
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from feedback_service.extensions import db
from feedback_service.responses.models import Response
from feedback_service.scheduling.models import Invitation
from tests.conftest import TWILIO_SID, TWILIO_TOKEN, event_body
from tests.e2e.test_newcomer import dev_server, wait_for


@pytest.fixture
def provider_server(provider_settings, tmp_path):
    with dev_server({**os.environ, **{k: str(v) for k, v in provider_settings.items()}}, tmp_path) as base:
        yield base


def signed_post(base: str, path: str, form: dict) -> requests.Response:
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(base + path, form)
    return requests.post(base + path, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)


def test_a_text_survey_answered_by_reply_and_a_stop_with_real_processes(app, provider_server, fake_twilio, api_key,
                                                                          new_journey):
    base = provider_server
    auth = {"Authorization": f"Bearer {api_key}"}
    journey = new_journey(rules={"booking": {"question_set": "booking-pulse"}})
    body = event_body(journey=journey)
    phone = body["patient"]["phone"]
    r = requests.post(f"{base}/api/v1/events", json=body, headers=auth, timeout=10)
    assert r.status_code == 202, r.text
    inv_id = r.json()["invitations"][0]["id"]

    # The worker sends it through the real SDK: the fake Twilio API gets the text.
    assert wait_for(lambda: fake_twilio.sends(to=phone), timeout=30), "the worker sent no text"
    [sent] = fake_twilio.sends(to=phone)
    assert "Reply 1 (Very hard) to 5 (Very easy)" in sent.form["Body"]
    assert sent.form["StatusCallback"].startswith(f"{base}/webhooks/twilio/status?invitation=")

    # Twilio reports it delivered, then the patient replies "4".
    status = signed_post(base, sent.form["StatusCallback"][len(base):],
                         {"MessageSid": next(m["sid"] for m in fake_twilio.messages if m["to"] == phone),
                          "MessageStatus": "delivered",
                          "AccountSid": TWILIO_SID})
    assert status.status_code == 204
    reply = signed_post(base, "/webhooks/twilio/sms", {"From": phone, "To": "+15005550006", "Body": "4",
                                                       "MessageSid": "SM" + uuid.uuid4().hex,
                                                       "AccountSid": TWILIO_SID})
    assert reply.status_code == 200
    assert [m.text for m in ET.fromstring(reply.content).iter("Message")][0].startswith("Thank you")
    with app.app_context():
        invitation = db.session.get(Invitation, inv_id)
        response = db.session.scalar(select(Response).where(Response.invitation_id == inv_id))
        assert (invitation.status, invitation.delivery_status) == ("answered", "delivered")
        assert (response.channel, [(a.question_key, a.value) for a in response.answers]) == (
            "sms", [("booking_rating", "4")])
        db.session.rollback()

    # A forged STOP changes nothing; a signed one means the next event sends nothing to the number.
    forged = requests.post(f"{base}/webhooks/twilio/sms", data={"From": phone, "Body": "STOP", "MessageSid": "SMx"},
                           headers={"X-Twilio-Signature": "forged"}, timeout=10)
    assert forged.status_code == 403
    stop = signed_post(base, "/webhooks/twilio/sms", {"From": phone, "To": "+15005550006", "Body": "STOP",
                                                      "MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": TWILIO_SID})
    assert stop.status_code == 200 and not list(ET.fromstring(stop.content).iter("Message"))
    again = requests.post(f"{base}/api/v1/events", json=event_body(journey=new_journey(), phone=phone,
                                                                   consent_email=False), headers=auth, timeout=10)
    assert again.json()["invitations"][0]["reason"] == "opted-out"
    assert len(fake_twilio.sends(to=phone)) == 1
    assert re.search(r"/s/[A-Za-z0-9_-]{43}", sent.form["Body"])
