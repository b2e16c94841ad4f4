"""A provider answering 5xx or hanging: the dispatcher keeps moving for the other medium, retries
with backoff, leaves texts in doubt where Twilio may have taken them, and its circuit breaker stops
hammering a provider that is down. Real worker processes, the real SDKs, the fake provider APIs."""
from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import update

from feedback_service.extensions import db
from feedback_service.scheduling.dispatch import dispatch_due
from feedback_service.scheduling.models import Invitation
from feedback_service.scheduling.rules import SendPolicy
from feedback_service.sqltypes import utcnow
from tests.conftest import event_body, invitation_row, uid
from tests.faults.conftest import BIN, env_with, rows, statuses, wait_for

CLI = str(BIN / "feedback-service")
FAILURES = 5  # FEEDBACK_BREAKER_FAILURES
CONCURRENCY = 2  # sends in flight per medium: up to this many more may be under way when the circuit opens


def twilio_error(code: int, status: int) -> dict:
    return {"code": code, "message": f"error {code}", "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


def post_events(client, auth, bodies, channel: str) -> list[int]:
    r = client.post("/api/v1/events", json=bodies, headers=auth)
    assert r.status_code == 202, r.get_json()
    invitations = [e["invitations"][0] for e in r.get_json()["events"]]
    assert {(i["status"], i["channel"]) for i in invitations} == {("scheduled", channel)}, invitations
    return [i["id"] for i in invitations]


def texts_and_emails(client, auth, journey: str, texts: int, emails: int):
    """Due SMS invitations, each to a number of its own, and due email ones: (sms ids, phones, email ids, addresses)."""
    sms_bodies = [event_body(journey=journey) for _ in range(texts)]
    email_bodies = [event_body(journey=journey, consent_sms=False, email=f"{uid('f')}@example.org")
                    for _ in range(emails)]
    return (post_events(client, auth, sms_bodies, "sms"), [b["patient"]["phone"] for b in sms_bodies],
            post_events(client, auth, email_bodies, "email"), [b["patient"]["email"] for b in email_bodies])


def run_once(env: dict) -> tuple[dict, float]:
    """`feedback-service jobs run-once` as a process of its own: (what each job reported, seconds)."""
    started = time.monotonic()
    done = subprocess.run([CLI, "jobs", "run-once"], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), time.monotonic() - started


def queue_at_rest(app, ids, fake, timeout: float = 15):
    """The invitations, all back in the queue, and the provider's requests, read between two trial
    sends (a trial claims a batch for a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        before = fake.sends()
        held = rows(app, ids)
        if {inv.status for inv in held.values()} == {"scheduled"} and fake.sends() == before:
            return held, before
        assert time.monotonic() < deadline, Counter(inv.status for inv in held.values())
        time.sleep(0.1)


def test_twilio_down_opens_the_circuit_email_goes_on_and_the_texts_go_out_once_it_is_back(
        provider_app, provider_settings, provider_client, auth, fake_twilio, fake_sendgrid, new_journey, procs):
    reset_seconds = 2
    sms_ids, phones, email_ids, addresses = texts_and_emails(provider_client, auth, new_journey(), 20, 10)
    fake_twilio.reply_next(503, twilio_error(20503, 503), times=10_000)  # every send, until the fake is reset
    env = env_with(provider_settings, FEEDBACK_DISPATCH_INTERVAL_SECONDS=1, FEEDBACK_BREAKER_FAILURES=FAILURES,
                   FEEDBACK_BREAKER_RESET_SECONDS=reset_seconds, FEEDBACK_SEND_CONCURRENCY=CONCURRENCY)
    worker = procs("worker", [CLI, "worker"], env)

    # Email is not held up by the texts' provider being down.
    assert wait_for(lambda: set(statuses(provider_app, email_ids).values()) == {"sent"}, 60), worker.output()[-3000:]
    assert all(len(fake_sendgrid.sends(to=a)) == 1 for a in addresses)
    time.sleep(3 * reset_seconds + 1)  # long enough for a few trial sends
    held, sends = queue_at_rest(provider_app, sms_ids, fake_twilio)
    arrivals = sorted(s.at for s in sends)
    down_for = time.monotonic() - arrivals[0]

    # Twilio heard a burst of FAILURES (a few more already in flight), then one trial send per
    # reset period: not one request per text.
    pauses = [i for i in range(1, len(arrivals)) if arrivals[i] - arrivals[i - 1] > 1.0]
    assert pauses, arrivals
    burst, trials = arrivals[:pauses[0]], arrivals[pauses[0]:]
    assert FAILURES <= len(burst) <= FAILURES + CONCURRENCY - 1, arrivals
    assert 1 <= len(trials) <= down_for / reset_seconds, arrivals
    gaps = [b - a for a, b in zip([burst[-1], *trials], trials)]
    assert min(gaps) >= reset_seconds - 0.05, gaps
    assert not fake_twilio.messages and len(arrivals) < len(sms_ids)

    # The texts wait in the queue: each request to Twilio counted as an attempt, the claims the
    # open circuit gave back did not.
    by_phone = dict(zip(phones, sms_ids))
    tried = Counter(s.form["To"] for s in sends if s.form["To"] in by_phone)
    assert all(held[by_phone[p]].attempts == tried[p] for p in phones), \
        [(held[by_phone[p]].attempts, tried[p]) for p in phones]
    assert {held[by_phone[p]].error_code for p in tried} == {"20503"}
    print(f"\nTwilio down for {down_for:.1f} s: {len(arrivals)} requests for {len(sms_ids)} texts "
          f"(a burst of {len(burst)}, then {len(trials)} trial sends {', '.join(f'{g:.1f}' for g in gaps)} s apart); "
          f"{len(email_ids)} emails sent meanwhile")

    # Twilio is back. Texts already tried wait out their backoff (tested on its own below):
    # bring it forward, so that every text is due now.
    fake_twilio.reset()
    back = time.monotonic()

    def all_sent() -> bool:
        with provider_app.app_context():
            db.session.execute(update(Invitation).where(
                Invitation.id.in_(sms_ids), Invitation.status == "scheduled", Invitation.attempts > 0,
                Invitation.send_at > utcnow()).values(send_at=utcnow()))
            db.session.commit()
        return set(statuses(provider_app, sms_ids).values()) == {"sent"}
    assert wait_for(all_sent, reset_seconds + 30), Counter(statuses(provider_app, sms_ids).values())
    recovered_in = time.monotonic() - back
    assert Counter(m["to"] for m in fake_twilio.messages if m["to"] in set(phones)) == Counter(phones)
    assert all(len(fake_twilio.sends(to=p)) == 1 for p in phones)  # once each since it came back
    assert all(len(fake_sendgrid.sends(to=a)) == 1 for a in addresses)
    assert worker.stop() == 0, worker.output()[-3000:]
    print(f"after Twilio came back, all {len(sms_ids)} texts sent once each within {recovered_in:.1f} s")


def test_twilio_hanging_for_a_minute_is_cut_by_the_timeout_left_in_doubt_and_never_resent(
        provider_app, provider_settings, provider_client, auth, fake_twilio, fake_sendgrid, new_journey):
    timeout = 1.0
    sms_ids, phones, email_ids, addresses = texts_and_emails(provider_client, auth, new_journey(), 12, 10)
    # Twilio takes each text, then holds the connection for a minute before it answers.
    fake_twilio.accept_slowly(60, times=10_000)
    env = env_with(provider_settings, FEEDBACK_PROVIDER_TIMEOUT_SECONDS=timeout, FEEDBACK_BREAKER_FAILURES=FAILURES,
                   FEEDBACK_SEND_CONCURRENCY=CONCURRENCY)
    report, seconds = run_once(env)

    # The run ends in seconds, not minutes: each hung text is cut after the timeout, and after
    # FAILURES of them the circuit opens and the rest are not tried.
    hung = fake_twilio.sends()
    dispatching = time.monotonic() - min(s.at for s in hung)
    assert dispatching < 15, f"the run went on {dispatching:.1f} s after its first text"
    assert FAILURES <= len(hung) <= FAILURES + CONCURRENCY - 1, len(hung)
    hung_phones = {s.form["To"] for s in hung}
    assert len(hung_phones) == len(hung)
    held = rows(provider_app, sms_ids)
    stored = {phone: held[i] for phone, i in zip(phones, sms_ids)}
    for phone, inv in stored.items():
        if phone in hung_phones:  # Twilio may have taken it: in doubt, per the at-most-once rule
            assert (inv.status, inv.sent_at) == ("unknown", None) and "no answer from Twilio" in inv.last_error, inv
        else:
            assert (inv.status, inv.attempts) == ("scheduled", 0), (inv.status, inv.attempts)
    assert report["dispatch"].get("unknown") == len(hung), report

    # Email did not wait behind the hung texts: all handed over before the first text timed out.
    assert set(statuses(provider_app, email_ids).values()) == {"sent"}
    emails_done = max(s.at for a in addresses for s in fake_sendgrid.sends(to=a))
    first_text = min(s.at for s in hung)
    assert emails_done < first_text + timeout, (emails_done - first_text)
    print(f"\nTwilio hanging 60 s: the run ended {dispatching:.1f} s after its first text ({seconds:.1f} s with "
          f"the process start); {len(hung)} texts cut after {timeout:.0f} s and left in doubt, "
          f"{len(sms_ids) - len(hung)} not tried; the last of {len(email_ids)} emails handed over "
          f"{emails_done - first_text:+.2f} s from the first text")

    # Twilio answers again; a new run sends the texts that were never tried, and not the ones in doubt.
    fake_twilio.reset()
    report, _ = run_once(env)
    assert all(fake_twilio.sends(to=p) == [] for p in hung_phones)
    assert all(len(fake_twilio.sends(to=p)) == 1 for p in set(phones) - hung_phones)
    now_stored = statuses(provider_app, sms_ids)
    after = {phone: now_stored[i] for phone, i in zip(phones, sms_ids)}
    assert Counter(after.values()) == Counter(unknown=len(hung), sent=len(sms_ids) - len(hung)), after
    assert all(after[p] == "unknown" for p in hung_phones)


def test_a_few_5xx_then_success_is_retried_with_growing_backoff_and_sent_once(
        provider_app, provider_client, auth, fake_twilio, new_journey):
    journey = new_journey()
    flaky = event_body(journey=journey)
    phone = flaky["patient"]["phone"]
    [flaky_id] = post_events(provider_client, auth, [flaky], "sms")
    others = [event_body(journey=journey) for _ in range(4)]
    other_ids = post_events(provider_client, auth, others, "sms")
    fake_twilio.reply_next(503, twilio_error(20503, 503), times=3, to=phone)

    now = None
    delays = []
    with provider_app.app_context():
        policy = SendPolicy.from_config(provider_app.config)
        for attempt in (1, 2, 3):
            before = now or utcnow()
            dispatch_due(policy, "test", now=now)
            retry = invitation_row(provider_app, flaky_id)
            assert (retry.status, retry.attempts, retry.error_code) == ("scheduled", attempt, "20503")
            # 30 s, 1 min, 2 min ... each with jitter of +-50 %
            delay = retry.send_at - before
            base = 30 * 2 ** (attempt - 1)
            assert timedelta(seconds=base * 0.5) <= delay <= timedelta(seconds=base * 1.5 + 5), delay
            delays.append(delay.total_seconds())
            if attempt == 1:  # the others did not wait for it
                assert set(statuses(provider_app, other_ids).values()) == {"sent"}
            now = retry.send_at
        dispatch_due(policy, "test", now=now)
        db.session.remove()
    sent = invitation_row(provider_app, flaky_id)
    assert (sent.status, sent.attempts) == ("sent", 4)
    assert len(fake_twilio.sends(to=phone)) == 4
    assert [m["to"] for m in fake_twilio.messages].count(phone) == 1
    assert all(len(fake_twilio.sends(to=o["patient"]["phone"])) == 1 for o in others)
    print(f"\nthree 503s, then sent on the 4th try; backoff {', '.join(f'{d:.0f}' for d in delays)} s")
