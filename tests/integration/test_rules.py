"""Rules a real service honours from day one: consent, opt-out, quiet hours, fatigue, text limits,
link lifetime, works-once and CSRF. Driven through the API, the CLI and the survey page."""
from __future__ import annotations

import re
import threading
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import select

from feedback_service.extensions import db
from feedback_service.patients.models import Patient
from feedback_service.responses.models import Response
from feedback_service.scheduling.models import Invitation
from feedback_service.scheduling.dispatch import dispatch_due
from feedback_service.scheduling.rules import SendPolicy
from tests.conftest import csrf_of, event_body, message_for, new_phone, night_tz, outbox_lines, token_of

NOW = lambda: datetime.now(timezone.utc)  # noqa: E731


def post(client, auth, body, status=202):
    r = client.post("/api/v1/events", json=body, headers=auth)
    assert r.status_code == status, r.get_json()
    return r.get_json()


def invitation_of(recorded) -> dict:
    [inv] = recorded["invitations"]
    return inv


def sent_ids(outbox) -> set[int]:
    return {m["invitation_id"] for m in outbox_lines(outbox)}


def test_no_consent_means_no_invitation(client, auth, outbox, run_jobs, new_journey):
    recorded = post(client, auth, event_body(journey=new_journey(), consent_sms=False, consent_email=False))
    inv = invitation_of(recorded)
    assert (inv["status"], inv["reason"], inv["channel"]) == ("skipped", "no-consent", None)
    assert recorded["reason"] == "no-consent"
    run_jobs()
    assert inv["id"] not in sent_ids(outbox)


def test_email_is_used_when_only_email_is_consented(client, auth, outbox, run_jobs, new_journey):
    inv = invitation_of(post(client, auth, event_body(journey=new_journey(), consent_sms=False, locale="es")))
    assert inv["channel"] == "email"
    run_jobs()
    message = message_for(outbox, inv["id"])
    assert message["channel"] == "email" and message["to"] == "ana@example.org"
    assert message["subject"].startswith("¿Cómo fue su experiencia")
    assert message["survey_url"] in message["body"] and f'href="{message["survey_url"]}"' in message["html"]


def test_consent_without_an_address_is_no_contact(client, auth, new_journey):
    inv = invitation_of(post(client, auth, event_body(journey=new_journey(), phone=None, email=None)))
    assert (inv["status"], inv["reason"]) == ("skipped", "no-contact")


def _opt_out_via_page(client, token):
    # Older links (/s/<token>/stop) lead to the unsubscribe page, which asks before it acts.
    page = client.get(f"/s/{token}/stop", follow_redirects=True)
    assert page.status_code == 200 and page.request.path == f"/unsubscribe/{token}"
    assert f'action="/unsubscribe/{token}"' in page.text
    done = client.post(f"/unsubscribe/{token}")
    assert done.status_code == 200 and "will not receive more surveys" in done.text


def test_opted_out_number_gets_nothing_more(client, auth, outbox, run_jobs, new_journey):
    phone = "+13125550142"
    first = invitation_of(post(client, auth, event_body(journey=new_journey(), phone=phone, consent_email=False)))
    run_jobs()
    _opt_out_via_page(client, token_of(message_for(outbox, first["id"])))

    later = invitation_of(post(client, auth, event_body(journey=new_journey(), phone=phone, consent_email=False)))
    assert (later["status"], later["reason"]) == ("skipped", "opted-out")
    # With email consented, the survey goes by email instead.
    other = invitation_of(post(client, auth, event_body(journey=new_journey(), phone=phone)))
    assert other["channel"] == "email"


def test_opt_out_is_checked_again_at_send_time(app, client, auth, outbox, run_jobs, new_journey):
    email = "family@example.org"  # an inbox shared by two patients of one family
    first = invitation_of(post(client, auth, event_body(journey=new_journey(), email=email, consent_sms=False)))
    run_jobs()
    waiting = invitation_of(post(client, auth, event_body(journey=new_journey(), email=email, consent_sms=False)))
    assert waiting["status"] == "scheduled" and waiting["channel"] == "email"
    _opt_out_via_page(client, token_of(message_for(outbox, first["id"])))

    run_jobs()
    assert waiting["id"] not in sent_ids(outbox)
    with app.app_context():
        inv = db.session.get(Invitation, waiting["id"])
        assert (inv.status, inv.skip_reason) == ("skipped", "opted-out")


def test_a_send_due_at_night_waits_for_the_morning(app, client, auth, outbox, run_jobs, new_journey):
    tz = night_tz()  # about 02:00 there now
    occurred = NOW() - timedelta(minutes=60)  # booking rule: +60 min, so due about now
    inv = invitation_of(post(client, auth, event_body(journey=new_journey(), timezone=tz, occurred_at=occurred)))
    local_due = (occurred + timedelta(minutes=60)).astimezone(ZoneInfo(tz))
    expected = datetime.combine(local_due.date() + (timedelta(days=1) if local_due.hour >= 20 else timedelta()),
                                time(8), tzinfo=ZoneInfo(tz))
    assert datetime.fromisoformat(inv["send_at"]) == expected
    run_jobs()
    assert inv["id"] not in sent_ids(outbox)


def test_a_due_invitation_found_at_night_is_deferred_not_sent(app, client, auth, outbox, run_jobs, new_journey):
    body = event_body(journey=new_journey())
    inv = invitation_of(post(client, auth, body))
    # The patient's next event says they now live where it is night (moved, or a corrected record).
    post(client, auth, event_body(journey=new_journey(), id=body["patient"]["id"], timezone=night_tz()))
    run_jobs()
    assert inv["id"] not in sent_ids(outbox)
    with app.app_context():
        row = db.session.get(Invitation, inv["id"])
        local = row.send_at.astimezone(ZoneInfo(night_tz()))
        assert row.status == "scheduled" and local.time() == time(8) and row.send_at > NOW()
        assert row.attempts == 0 and row.token_hash is None


def test_one_invitation_per_patient_per_journey_in_30_days(client, auth, new_journey):
    journey = new_journey()
    first = event_body("booking", journey=journey, occurred_at=NOW() - timedelta(days=5))
    second = event_body("discharge", journey=journey, occurred_at=NOW() - timedelta(days=3), id=first["patient"]["id"])
    assert invitation_of(post(client, auth, first))["status"] == "scheduled"
    recorded = post(client, auth, second)
    assert (invitation_of(recorded)["status"], recorded["reason"]) == ("skipped", "fatigue-journey")
    # Another journey is not limited by this one (the text limits are checked separately).
    other = event_body("booking", journey=new_journey(), occurred_at=NOW() - timedelta(days=1),
                       id=first["patient"]["id"])
    assert invitation_of(post(client, auth, other))["status"] == "scheduled"


def test_fatigue_window_ends_after_30_days(client, auth, new_journey):
    journey = new_journey()
    first = event_body("booking", journey=journey, occurred_at=NOW() - timedelta(days=40))
    post(client, auth, first)  # too old to send, but it is no longer in anyone's way either
    later = event_body("follow_up", journey=journey, occurred_at=NOW() - timedelta(days=2), id=first["patient"]["id"])
    first_again = event_body("booking", journey=journey, occurred_at=NOW() - timedelta(days=36), id=first["patient"]["id"])
    assert invitation_of(post(client, auth, first_again))["reason"] == "too-late"
    assert invitation_of(post(client, auth, later))["status"] == "scheduled"


def test_at_most_one_text_a_day_across_journeys(client, auth, new_journey):
    morning = NOW() - timedelta(days=2, hours=2)
    a = event_body(journey=new_journey(), occurred_at=morning)
    pid = a["patient"]["id"]
    assert invitation_of(post(client, auth, a))["channel"] == "sms"
    # Same day, another journey: the text limit sends it by email instead...
    b = event_body(journey=new_journey(), occurred_at=morning + timedelta(hours=1), id=pid)
    assert invitation_of(post(client, auth, b))["channel"] == "email"
    # ...or skips it, with the reason, when email is not an option.
    c = event_body(journey=new_journey(), occurred_at=morning + timedelta(hours=2), id=pid, consent_email=False)
    assert invitation_of(post(client, auth, c))["reason"] == "sms-daily-limit"


def test_at_most_three_texts_a_week_across_journeys(app, client, auth, new_journey):
    phone, pid = new_phone(), None
    for days_ago in (6, 4, 2):
        body = event_body(journey=new_journey(), occurred_at=NOW() - timedelta(days=days_ago), phone=phone,
                          consent_email=False, **({"id": pid} if pid else {}))
        pid = body["patient"]["id"]
        inv = invitation_of(post(client, auth, body))
        assert inv["channel"] == "sms"
        # Send it back then: the dispatcher with its clock at the invitation's due time.
        with app.app_context():
            report = dispatch_due(SendPolicy.from_config(app.config), "test",
                                  now=datetime.fromisoformat(inv["send_at"]) + timedelta(minutes=1))
            assert report.outcomes.get("sent", 0) >= 1
            assert db.session.get(Invitation, inv["id"]).status == "sent"
    fourth = event_body(journey=new_journey(), occurred_at=NOW() - timedelta(hours=1), id=pid, phone=phone,
                        consent_email=False)
    assert invitation_of(post(client, auth, fourth))["reason"] == "sms-weekly-limit"


def test_overdue_texts_to_one_number_do_not_go_out_together(app, client, auth, outbox, run_jobs, new_journey):
    phone = new_phone()
    # Two hospitals' systems, two patient records, one handset; both moments long enough ago to be due.
    a = invitation_of(post(client, auth, event_body(journey=new_journey(), phone=phone, consent_email=False,
                                                    occurred_at=NOW() - timedelta(days=3))))
    b = event_body(journey=new_journey(), phone=phone, consent_email=False, occurred_at=NOW() - timedelta(days=2))
    assert invitation_of(post(client, auth, b))["reason"] == "sms-daily-limit"
    run_jobs()
    assert message_for(outbox, a["id"])["to"] == phone


def _two_texts_47_hours_apart(client, auth, new_journey) -> tuple[dict, dict]:
    """A booking text due in 30 minutes and a discharge text due in 47 hours, to one number."""
    phone = new_phone()
    a = invitation_of(post(client, auth, event_body("booking", journey=new_journey(), phone=phone,
                                                    consent_email=False, occurred_at=NOW() - timedelta(minutes=30))))
    b = invitation_of(post(client, auth, event_body("discharge", journey=new_journey(), phone=phone,
                                                    consent_email=False, occurred_at=NOW() - timedelta(hours=1))))
    assert a["status"] == b["status"] == "scheduled"
    return a, b


def test_texts_that_fall_due_together_are_spaced_at_send_time(app, client, auth, new_journey):
    a, b = _two_texts_47_hours_apart(client, auth, new_journey)
    # The worker was down for two days: both are due when it comes back.
    later = NOW() + timedelta(hours=48)
    with app.app_context():
        dispatch_due(SendPolicy.from_config(app.config), "test", now=later)
        first, second = db.session.get(Invitation, a["id"]), db.session.get(Invitation, b["id"])
        assert first.status == "sent" and later <= first.sent_at < later + timedelta(seconds=30)
        assert second.status == "scheduled" and second.send_at == later + timedelta(days=1)
        assert second.attempts == 0 and second.token_hash is None


def test_two_workers_holding_texts_to_one_number_send_only_one(app, client, auth, new_journey):
    a, b = _two_texts_47_hours_apart(client, auth, new_journey)
    later = NOW() + timedelta(hours=48)
    outcomes = []

    def worker(name):
        with app.app_context():
            # One row at a time until nothing is due, as two busy workers would.
            while (report := dispatch_due(SendPolicy.from_config(app.config), name, now=later, batch_size=1)).claimed:
                outcomes.append(report.outcomes)

    threads = [threading.Thread(target=worker, args=(f"worker-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    with app.app_context():
        statuses = sorted(db.session.get(Invitation, i["id"]).status for i in (a, b))
    assert statuses == ["scheduled", "sent"], outcomes


def test_a_moment_too_long_ago_is_not_surveyed(client, auth, new_journey):
    recorded = post(client, auth, event_body("discharge", journey=new_journey(), occurred_at=NOW() - timedelta(days=30)))
    assert (invitation_of(recorded)["status"], recorded["reason"]) == ("skipped", "too-late")


def test_expired_link_shows_the_kind_page_and_is_marked_expired(app, client, auth, outbox, run_jobs, new_journey):
    inv = invitation_of(post(client, auth, event_body(journey=new_journey(link_ttl_days=0))))
    run_jobs()  # sends it; a zero-day link is already past its lifetime
    token = token_of(message_for(outbox, inv["id"]))
    page = client.get(f"/s/{token}")
    assert page.status_code == 404 and "no longer available" in page.text
    run_jobs()
    with app.app_context():
        assert db.session.get(Invitation, inv["id"]).status == "expired"


def test_unknown_and_malformed_tokens_get_the_same_kind_page(client):
    for token in ("A" * 43, "short", "x" * 200, "%3Cscript%3E"):
        page = client.get(f"/s/{token}")
        assert page.status_code == 404 and "no longer available" in page.text


def test_missing_or_invalid_answers_are_shown_again_and_nothing_is_stored(app, client, auth, outbox, run_jobs, new_journey):
    inv = invitation_of(post(client, auth, event_body(journey=new_journey(), locale="es")))
    run_jobs()
    token = token_of(message_for(outbox, inv["id"]))
    page = client.get(f"/s/{token}")
    r = client.post(f"/s/{token}", data={"csrf_token": csrf_of(page.text), "booking_ease": "9"})
    assert r.status_code == 422
    assert "Por favor, elija una respuesta." in r.text and 'role="alert"' in r.text
    with app.app_context():
        assert db.session.get(Invitation, inv["id"]).status == "sent"
        assert db.session.scalar(select(Response).where(Response.invitation_id == inv["id"])) is None


def test_a_post_without_the_csrf_token_records_nothing_and_keeps_the_answers(app, client, auth, outbox, run_jobs, new_journey):
    inv = invitation_of(post(client, auth, event_body(journey=new_journey())))
    run_jobs()
    token = token_of(message_for(outbox, inv["id"]))
    r = client.post(f"/s/{token}", data={"booking_ease": "6", "booking_satisfaction": "4"})
    assert r.status_code == 422 and "press Send again" in r.text
    checked = re.findall(r'<input checked id="(booking_\w+)-\d+" name="\w+"[^>]* value="(\d)">', r.text)
    assert sorted(checked) == [("booking_ease", "6"), ("booking_satisfaction", "4")]
    with app.app_context():
        assert db.session.get(Invitation, inv["id"]).status == "sent"


def test_a_link_cannot_be_answered_twice(app, client, auth, outbox, run_jobs, new_journey):
    inv = invitation_of(post(client, auth, event_body(journey=new_journey())))
    run_jobs()
    token = token_of(message_for(outbox, inv["id"]))
    page = client.get(f"/s/{token}")
    answers = {"csrf_token": csrf_of(page.text), "booking_ease": "5", "booking_satisfaction": "4"}
    assert client.post(f"/s/{token}", data=answers).status_code == 302
    again = client.post(f"/s/{token}", data=answers)
    assert again.status_code == 404
    with app.app_context():
        assert len(db.session.scalars(select(Response).where(Response.invitation_id == inv["id"])).all()) == 1


def test_patient_details_follow_the_latest_event(app, client, auth, new_journey):
    body = event_body(journey=new_journey())
    post(client, auth, body)
    post(client, auth, event_body(journey=new_journey(), id=body["patient"]["id"], phone="+14155550199",
                                  consent_sms=False))
    with app.app_context():
        patient = db.session.scalar(select(Patient).where(Patient.external_id == body["patient"]["id"]))
        assert (patient.phone, patient.consent_sms) == ("+14155550199", False)


def test_stop_still_works_after_answering_and_opts_out_the_address_messaged(app, client, auth, outbox, run_jobs,
                                                                         new_journey):
    body = event_body(journey=new_journey(), consent_sms=False)
    inv = invitation_of(post(client, auth, body))
    run_jobs()
    message = message_for(outbox, inv["id"])
    stop_url = message["survey_url"].replace("/s/", "/unsubscribe/")
    assert stop_url in message["body"] and stop_url == message["unsubscribe_url"]  # every email says how to stop
    token = token_of(message)
    page = client.get(f"/s/{token}")
    client.post(f"/s/{token}", data={"csrf_token": csrf_of(page.text), "booking_ease": "5",
                                     "booking_satisfaction": "5"})
    # The patient's record has since lost its email address; the link still stops the inbox it reached.
    post(client, auth, event_body(journey=new_journey(), id=body["patient"]["id"], email=None, consent_sms=False))
    _opt_out_via_page(client, token)
    again = invitation_of(post(client, auth, event_body(journey=new_journey(), email=message["to"],
                                                        consent_sms=False)))
    assert again["reason"] == "opted-out"


def test_an_answer_the_service_refuses_is_shown_again_not_a_500(app, client, auth, outbox, run_jobs, new_journey):
    inv = invitation_of(post(client, auth, event_body(journey=new_journey())))
    run_jobs()
    token = token_of(message_for(outbox, inv["id"]))
    page = client.get(f"/s/{token}")
    r = client.post(f"/s/{token}", data={"csrf_token": csrf_of(page.text), "booking_ease": "5",
                                         "booking_satisfaction": "5", "comment": "fine\x00"})
    assert r.status_code == 422 and "Please check this answer." in r.text
    with app.app_context():
        assert db.session.get(Invitation, inv["id"]).status == "sent"


def test_text_limits_follow_the_number_texted_not_the_patient_record(client, auth, outbox, run_jobs, new_journey):
    old, new = new_phone(), new_phone()
    first = event_body(journey=new_journey(), phone=old, consent_email=False)
    inv = invitation_of(post(client, auth, first))
    run_jobs()
    assert message_for(outbox, inv["id"])["to"] == old
    # The patient's number changes: the new handset has had no text today.
    moved = event_body(journey=new_journey(), id=first["patient"]["id"], phone=new, consent_email=False)
    assert invitation_of(post(client, auth, moved))["channel"] == "sms"
    # Someone else now has the old number (a family phone): it had its text today.
    other = event_body(journey=new_journey(), phone=old, consent_email=False)
    assert invitation_of(post(client, auth, other))["reason"] == "sms-daily-limit"
