"""The one reminder a rule allows: when it goes (and when it waits, or never goes), its own link,
at most once even across crashes, through the console outbox and through the real SDKs."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from feedback_service.channels.base import Pacer
from feedback_service.extensions import db
from feedback_service.journeys.models import Journey, TriggerRule
from feedback_service.scheduling.dispatch import dispatch_due, expire_unanswered, recover_stale
from feedback_service.scheduling.models import Invitation
from feedback_service.scheduling.reminders import send_due_reminders
from feedback_service.scheduling.rules import SendPolicy
from feedback_service.security import hash_secret
from feedback_service.sqltypes import utcnow
from tests.conftest import (
    TWILIO_SID, csrf_of, event_body, invitation_row, outbox_lines, post_event, sendgrid_post, token_of, twilio_post)

BOOKING_ANSWERS = {"booking_ease": "6", "booking_satisfaction": "4"}
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


def with_reminder(app, slug: str, hours: int | None, event_type: str = "booking", **columns) -> None:
    """Give the journey's rule a reminder (set on the row: the YAML loader does not read it yet)."""
    with app.app_context():
        rule = db.session.scalar(select(TriggerRule).join(Journey).where(
            Journey.slug == slug, TriggerRule.event_type == event_type))
        rule.reminder_hours = hours
        for name, value in columns.items():
            setattr(rule, name, value)
        db.session.commit()


def send_invitations(app, now, **kwargs):
    with app.app_context():
        return dispatch_due(SendPolicy.from_config(app.config), "test", now=now, **kwargs)


def remind(app, now, **kwargs) -> dict:
    with app.app_context():
        return send_due_reminders(SendPolicy.from_config(app.config), "test", now=now, **kwargs)


def messages_for(outbox, inv_id: int) -> list[dict]:
    """What the console channel sent for this invitation: the invitation, then any reminder."""
    return [m for m in outbox_lines(outbox) if m["invitation_id"] == inv_id]


def sent_invitation(app, client, auth, journey: str, now, **patient) -> tuple[dict, Invitation]:
    """Post a booking for a patient of the test's own and send its invitation at `now`."""
    body = event_body(journey=journey, **patient)
    inv = post_event(client, auth, body)
    send_invitations(app, now)
    row = invitation_row(app, inv["id"])
    assert row.status == "sent", (row.status, row.skip_reason, row.last_error)
    return body, row


def answer(client, token: str):
    page = client.get(f"/s/{token}")
    assert page.status_code == 200
    return client.post(f"/s/{token}", data={"csrf_token": csrf_of(page.text), **BOOKING_ANSWERS})


def assert_no_clinical_detail(app, invitation: Invitation, *texts: str, urls=()) -> None:
    """No stage or touchpoint of the journey is named (nor the care behind them)."""
    with app.app_context():
        journey = db.session.get(Journey, invitation.journey_id)
        names = {n.lower() for stage in journey.stages
                 for n in (stage.slug, stage.name, *(x for t in stage.touchpoints for x in (t.slug, t.name)))}
    for text in texts:
        for url in urls:  # random tokens must not make a word by chance
            text = text.replace(url, "")
        assert not {n for n in names if n in text.lower()}, text


def test_one_reminder_goes_after_the_rules_hours_with_a_working_link_of_its_own(app, client, auth, outbox,
                                                                               new_journey):
    journey = new_journey()
    with_reminder(app, journey, 24)
    start = utcnow()
    _, inv = sent_invitation(app, client, auth, journey, start, first_name="Ana María")

    remind(app, start + 23 * HOUR)
    assert len(messages_for(outbox, inv.id)) == 1 and invitation_row(app, inv.id).reminder_status is None

    due = start + 24 * HOUR + MINUTE
    remind(app, due)
    first, reminder = messages_for(outbox, inv.id)
    row = invitation_row(app, inv.id)
    assert (row.reminder_status, row.reminder_reason, row.reminded_at) == ("sent", None, due)
    assert (reminder["channel"], reminder["to"]) == ("sms", inv.sent_to)  # where the invitation went
    token = token_of(reminder)
    assert token != token_of(first) and row.reminder_token_hash == hash_secret(token) != row.token_hash
    text = reminder["body"]
    assert text.startswith("Hi Ana, a reminder: Riverside Health") and reminder["survey_url"] in text
    assert "María" not in text and text.endswith("Reply STOP to opt out.")
    assert_no_clinical_detail(app, inv, text, urls=[reminder["survey_url"]])

    for later in (due + HOUR, due + 3 * DAY):  # at most once
        remind(app, later)
    assert len(messages_for(outbox, inv.id)) == 2

    # The reminder's link opens the same survey; answering there answers the invitation.
    page = client.get(f"/s/{token}")
    assert 'name="booking_ease"' in page.text
    assert answer(client, token).status_code == 302
    row = invitation_row(app, inv.id)
    assert row.status == "answered"
    assert client.get(f"/s/{token_of(first)}").status_code == 404  # one answer per invitation
    remind(app, due + 5 * DAY)
    assert len(messages_for(outbox, inv.id)) == 2


def test_an_email_reminder_carries_its_own_link_and_unsubscribe_in_the_patients_language(app, client, auth, outbox,
                                                                                        new_journey):
    journey = new_journey()
    with_reminder(app, journey, 48)
    start = utcnow()
    _, inv = sent_invitation(app, client, auth, journey, start, consent_sms=False, locale="es-MX",
                             first_name="José Luis", email=f"{uuid.uuid4().hex[:8]}@example.org")
    assert inv.channel == "email"
    remind(app, start + 48 * HOUR + MINUTE)
    _, reminder = messages_for(outbox, inv.id)
    assert reminder["to"] == inv.sent_to and reminder["subject"].startswith("Un recordatorio")
    token = token_of(reminder)
    assert reminder["unsubscribe_url"] == f"http://survey.test/unsubscribe/{token}"
    for part in (reminder["body"], reminder["html"]):
        assert part.startswith(("Hola José:", "<!doctype html>")) and reminder["survey_url"] in part
        assert reminder["unsubscribe_url"] in part and "Luis" not in part
    assert_no_clinical_detail(app, inv, reminder["subject"], reminder["body"], reminder["html"],
                              urls=[reminder["survey_url"], reminder["unsubscribe_url"]])
    # Its stop link works like the invitation's.
    assert client.post(f"/unsubscribe/{token}").status_code == 200
    with app.app_context():
        from feedback_service.patients.services import is_opted_out
        assert is_opted_out("email", inv.sent_to)


def test_no_reminder_once_answered_through_the_invitations_own_link(app, client, auth, outbox, new_journey):
    journey = new_journey()
    with_reminder(app, journey, 24)
    start = utcnow()
    _, inv = sent_invitation(app, client, auth, journey, start)
    assert answer(client, token_of(messages_for(outbox, inv.id)[0])).status_code == 302
    remind(app, start + 2 * DAY)
    assert len(messages_for(outbox, inv.id)) == 1
    assert (invitation_row(app, inv.id).status, invitation_row(app, inv.id).reminder_status) == ("answered", None)


def test_no_reminder_to_a_patient_who_opted_out_meanwhile(app, client, auth, outbox, new_journey):
    journey = new_journey()
    with_reminder(app, journey, 24)
    start = utcnow()
    _, inv = sent_invitation(app, client, auth, journey, start)
    assert client.post(f"/unsubscribe/{token_of(messages_for(outbox, inv.id)[0])}").status_code == 200
    remind(app, start + DAY + MINUTE)
    row = invitation_row(app, inv.id)
    assert (row.reminder_status, row.reminder_reason, row.reminder_token_hash) == ("skipped", "opted-out", None)
    assert len(messages_for(outbox, inv.id)) == 1


def test_no_reminder_for_an_expired_link_nor_one_about_to_expire(app, client, auth, outbox, new_journey):
    policy = SendPolicy.from_config(app.config)
    expired_journey, expiring_journey = new_journey(), new_journey(rules={"booking": {"link_ttl_days": 1}})
    with_reminder(app, expired_journey, 24 * 20)
    with_reminder(app, expiring_journey, 13)  # 11 hours before its link stops working
    start = utcnow()
    _, expired = sent_invitation(app, client, auth, expired_journey, start)
    _, expiring = sent_invitation(app, client, auth, expiring_journey, start)
    remind(app, start + 13 * HOUR + MINUTE)
    row = invitation_row(app, expiring.id)
    assert (row.reminder_status, row.reminder_reason) == ("skipped", "link-expiring")

    with app.app_context():
        expire_unanswered(policy, now=start + 15 * DAY)
    remind(app, start + 20 * DAY + MINUTE)
    assert invitation_row(app, expired.id).status == "expired"
    assert invitation_row(app, expired.id).reminder_status is None
    assert len(messages_for(outbox, expired.id)) == len(messages_for(outbox, expiring.id)) == 1


def test_no_reminder_from_a_rule_without_one(app, client, auth, outbox, new_journey):
    journey = new_journey()
    with_reminder(app, journey, None)
    start = utcnow()
    _, inv = sent_invitation(app, client, auth, journey, start)
    remind(app, start + 7 * DAY)
    assert invitation_row(app, inv.id).reminder_status is None and len(messages_for(outbox, inv.id)) == 1


def test_quiet_hours_and_the_rules_own_sending_hours_hold_a_reminder_until_morning(app, client, auth, outbox,
                                                                                  new_journey):
    journey = new_journey()
    with_reminder(app, journey, 12, window_start="10:00", window_end="18:00")
    start = utcnow()  # about noon for the patient (tests.conftest.daytime_tz)
    _, inv = sent_invitation(app, client, auth, journey, start, consent_sms=False)
    for night in (start + 12 * HOUR + MINUTE, start + 21 * HOUR):  # about midnight; about 09:00
        assert remind(app, night).get("deferred", 0) >= 1
        assert invitation_row(app, inv.id).reminder_status is None
    remind(app, start + 22 * HOUR + MINUTE)  # just after 10:00
    assert invitation_row(app, inv.id).reminder_status == "sent" and len(messages_for(outbox, inv.id)) == 2


def test_the_daily_text_limit_holds_a_reminder_back_and_reminders_count_as_texts(app, client, auth, outbox,
                                                                                new_journey):
    reminding, other = new_journey(), new_journey(rules={"booking": {"delay_minutes": 24 * 60 + 1}})
    with_reminder(app, reminding, 25)
    start = utcnow()
    body, inv = sent_invitation(app, client, auth, reminding, start)
    phone = body["patient"]["phone"]
    # Another journey texts the same handset a day later (one text a day is the limit).
    later = post_event(client, auth, event_body(journey=other, occurred_at=start, phone=phone, consent_email=False))
    send_invitations(app, start + 24 * HOUR + 2 * MINUTE)
    assert invitation_row(app, later["id"]).status == "sent"

    remind(app, start + 25 * HOUR + MINUTE)
    remind(app, start + 48 * HOUR)
    assert invitation_row(app, inv.id).reminder_status is None  # waiting, not skipped
    remind(app, start + 48 * HOUR + 3 * MINUTE)
    assert invitation_row(app, inv.id).reminder_status == "sent" and len(messages_for(outbox, inv.id)) == 2


def test_a_reminder_counts_as_a_text_against_the_limits(app, client, auth, outbox, new_journey):
    reminding, other = new_journey(), new_journey(rules={"booking": {"delay_minutes": 24 * 60 + 5}})
    with_reminder(app, reminding, 24)
    start = utcnow()
    body, inv = sent_invitation(app, client, auth, reminding, start)
    remind(app, start + DAY + MINUTE)
    reminded = invitation_row(app, inv.id)
    assert reminded.reminder_status == "sent"
    # A day after the invitation, four minutes after its reminder, another survey to the handset:
    # it waits a day after the reminder.
    later = post_event(client, auth, event_body(journey=other, occurred_at=start, phone=body["patient"]["phone"],
                                                consent_email=False))
    assert later["status"] == "scheduled"
    send_invitations(app, start + DAY + 6 * MINUTE)
    held = invitation_row(app, later["id"])
    assert (held.status, held.send_at) == ("scheduled", reminded.reminded_at + DAY)


def test_a_reminder_the_text_limit_would_hold_past_the_links_last_hours_is_skipped(app, client, auth, outbox,
                                                                                   new_journey):
    journey = new_journey(rules={"booking": {"link_ttl_days": 1}})
    with_reminder(app, journey, 4)
    start = utcnow()
    _, inv = sent_invitation(app, client, auth, journey, start)
    remind(app, start + 4 * HOUR + MINUTE)  # the next text is allowed a day after the first: too late
    row = invitation_row(app, inv.id)
    assert (row.reminder_status, row.reminder_reason) == ("skipped", "link-expiring")


class WorkerKilled(BaseException):
    """The process dies (SIGKILL, power cut): nothing after this line of the worker runs."""


class _DiesMidSend:
    name = "dies"
    pacer = Pacer(None)

    def send(self, message):
        raise WorkerKilled()


def test_a_reminder_claimed_by_a_worker_that_died_becomes_unknown_and_is_never_resent(app, client, auth, outbox,
                                                                                     new_journey):
    journey = new_journey()
    with_reminder(app, journey, 24)
    start = utcnow()
    _, inv = sent_invitation(app, client, auth, journey, start)
    claimed_at = start + DAY + MINUTE
    with pytest.raises(WorkerKilled):
        remind(app, claimed_at, channels={"sms": _DiesMidSend()})
    assert invitation_row(app, inv.id).reminder_status == "sending"  # the claim was committed first

    with app.app_context():
        recover_stale(now=claimed_at + 2 * MINUTE)  # within the lease: maybe still sending
    assert invitation_row(app, inv.id).reminder_status == "sending"
    with app.app_context():
        recover_stale(now=claimed_at + 10 * MINUTE)
    row = invitation_row(app, inv.id)
    assert (row.status, row.reminder_status, row.reminder_reason) == ("sent", "unknown", "worker stopped mid-send")
    remind(app, claimed_at + HOUR)
    remind(app, claimed_at + 3 * DAY)
    assert len(messages_for(outbox, inv.id)) == 1 and invitation_row(app, inv.id).reminder_status == "unknown"


def test_running_the_jobs_twice_sends_one_reminder(app, client, auth, outbox, run_jobs, new_journey):
    journey = new_journey()
    with_reminder(app, journey, 24)
    _, inv = sent_invitation(app, client, auth, journey, utcnow() - 25 * HOUR)
    assert run_jobs()["remind"].get("sent", 0) >= 1
    run_jobs()
    assert len(messages_for(outbox, inv.id)) == 2
    assert invitation_row(app, inv.id).reminder_status == "sent"


# -- through Twilio and SendGrid's real SDKs, against the fakes ------------------------------------

def test_a_text_survey_is_reminded_by_link_and_a_reply_still_answers_it(provider_app, provider_client, auth,
                                                                        fake_twilio, new_journey):
    journey = new_journey(rules={"booking": {"question_set": "booking-pulse"}})
    with_reminder(provider_app, journey, 24)
    start = utcnow()
    body, inv = sent_invitation(provider_app, provider_client, auth, journey, start)
    phone = body["patient"]["phone"]
    remind(provider_app, start + DAY + MINUTE)
    question, reminder = fake_twilio.sends(to=phone)
    assert "Reply 1 (Very hard) to 5 (Very easy)" in question.form["Body"]
    text = reminder.form["Body"]
    assert text.startswith("Hi Ana, a reminder:") and "Reply 1" not in text and "Reply STOP" in text
    [link] = [w for w in text.split() if w.startswith("http://survey.test/s/")]
    assert hash_secret(link.rsplit("/", 1)[-1]) == invitation_row(provider_app, inv.id).reminder_token_hash
    assert_no_clinical_detail(provider_app, inv, text, urls=[link])

    # Twilio's status for the reminder (another message sid) does not touch the invitation's.
    reminder_sid = fake_twilio.messages[-1]["sid"]
    form = {"MessageSid": reminder_sid, "MessageStatus": "undelivered", "ErrorCode": "30003", "AccountSid": TWILIO_SID}
    assert twilio_post(provider_client, f"/webhooks/twilio/status?invitation={inv.id}", form).status_code == 204
    assert invitation_row(provider_app, inv.id).status == "sent"

    reply = {"From": phone, "To": "+15005550006", "Body": "5", "AccountSid": TWILIO_SID,
             "MessageSid": "SM" + uuid.uuid4().hex, "NumMedia": "0"}
    assert twilio_post(provider_client, "/webhooks/twilio/sms", reply).status_code == 200
    assert invitation_row(provider_app, inv.id).status == "answered"


def test_an_email_reminder_goes_through_sendgrid(provider_app, provider_client, auth, fake_sendgrid, new_journey):
    journey = new_journey()
    with_reminder(provider_app, journey, 24)
    start = utcnow()
    email = f"remind.{uuid.uuid4().hex[:8]}@example.org"
    _, inv = sent_invitation(provider_app, provider_client, auth, journey, start, consent_sms=False, email=email)
    remind(provider_app, start + DAY + MINUTE)
    _, sent = fake_sendgrid.sends(to=email)
    mail = sent.json
    assert mail["subject"] == "A reminder: how was your recent experience with Riverside Health?"
    [token] = {w.rsplit("/", 1)[-1] for w in mail["content"][0]["value"].split() if "/s/" in w}
    assert hash_secret(token) == invitation_row(provider_app, inv.id).reminder_token_hash
    assert mail["headers"]["List-Unsubscribe"] == f"<http://survey.test/unsubscribe/{token}>"
    assert invitation_row(provider_app, inv.id).reminder_status == "sent"
    # Tagged as a reminder, so that SendGrid's reports about it are told apart from the invitation's.
    assert mail["custom_args"] == {"invitation_id": str(inv.id), "reminder": "1"}
    assert mail["categories"] == ["survey-reminder"]


def test_a_reminders_bounce_does_not_fail_the_invitation_but_still_stops_email(
        provider_app, provider_client, auth, fake_sendgrid, sendgrid_signing_key, new_journey):
    journey = new_journey()
    with_reminder(provider_app, journey, 24)
    start = utcnow()
    email = f"bounce.{uuid.uuid4().hex[:8]}@example.org"
    _, inv = sent_invitation(provider_app, provider_client, auth, journey, start, consent_sms=False, email=email)
    remind(provider_app, start + DAY + MINUTE)
    bounce = [{"event": "bounce", "email": email, "invitation_id": str(inv.id), "reminder": "1",
               "type": "bounce", "status": "5.1.1", "timestamp": 1}]
    assert sendgrid_post(provider_client, bounce, sendgrid_signing_key).status_code == 200
    row = invitation_row(provider_app, inv.id)
    assert (row.status, row.delivery_status) == ("sent", "accepted")  # the invitation itself was not bounced
    with provider_app.app_context():
        from feedback_service.patients.services import is_opted_out
        assert is_opted_out("email", email)  # but the address gets no more email


def test_twilios_report_on_a_reminder_is_not_the_invitations(provider_app, provider_client, auth, fake_twilio,
                                                            new_journey):
    journey = new_journey()
    with_reminder(provider_app, journey, 24)
    start = utcnow()
    body, inv = sent_invitation(provider_app, provider_client, auth, journey, start)
    remind(provider_app, start + DAY + MINUTE)
    _, reminder = fake_twilio.sends(to=body["patient"]["phone"])
    callback = reminder.form["StatusCallback"]
    assert callback.endswith(f"?invitation={inv.id}&reminder=1")
    # Even without the message sid to tell them apart, the callback URL does.
    form = {"MessageSid": "", "MessageStatus": "undelivered", "ErrorCode": "30003", "AccountSid": TWILIO_SID}
    path = callback.removeprefix("http://survey.test")
    assert twilio_post(provider_client, path, form).status_code == 204
    assert invitation_row(provider_app, inv.id).status == "sent"


@pytest.mark.parametrize("failure, status, reason", [
    ("refused", "failed", "PermanentSendError 21211"),
    ("throttled", "failed", "TransientSendError 20429"),  # a courtesy: not retried
    ("no-answer", "unknown", "outcome unknown"),  # Twilio took it; its answer came too late
])
def test_a_reminder_the_provider_refuses_or_leaves_in_doubt_is_never_tried_again(
        provider_app, provider_client, auth, fake_twilio, new_journey, failure, status, reason):
    journey = new_journey()
    with_reminder(provider_app, journey, 24)
    start = utcnow()
    body, inv = sent_invitation(provider_app, provider_client, auth, journey, start)
    phone = body["patient"]["phone"]
    if failure == "no-answer":
        fake_twilio.accept_slowly(3.0, to=phone)  # after our 2 s timeout
    else:
        code, http = (21211, 400) if failure == "refused" else (20429, 429)
        fake_twilio.reply_next(http, {"code": code, "message": "no", "status": http}, to=phone)
    remind(provider_app, start + DAY + MINUTE)
    row = invitation_row(provider_app, inv.id)
    assert (row.status, row.reminder_status, row.reminder_reason) == ("sent", status, reason)
    remind(provider_app, start + 2 * DAY)
    with provider_app.app_context():
        recover_stale(now=start + 3 * DAY)
    remind(provider_app, start + 3 * DAY)
    assert len(fake_twilio.sends(to=phone)) == 2  # the invitation and one reminder attempt
