"""The dispatcher with real processes: parallel runners, a worker killed mid-send, retries, the worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from feedback_service import create_app
from feedback_service.channels.base import Pacer
from feedback_service.channels.console import ConsoleChannel
from feedback_service.extensions import db
from feedback_service.patients.models import OptOut, Patient
from feedback_service.scheduling.dispatch import dispatch_due
from feedback_service.scheduling.models import Invitation
from feedback_service.rollups.models import DailyCounts
from feedback_service.scheduling.rules import SendPolicy
from tests.conftest import csrf_of, event_body, message_for, outbox_lines, token_of

CLI = str(Path(sys.executable).parent / "feedback-service")


@pytest.fixture
def cli_env(settings):
    def make(**overrides):
        return {**os.environ, **settings, **{k: str(v) for k, v in overrides.items()}}
    return make


def post_batch(client, auth, bodies) -> list[int]:
    r = client.post("/api/v1/events", json=bodies, headers=auth)
    assert r.status_code == 202, r.get_json()
    return [e["invitations"][0]["id"] for e in r.get_json()["events"]]


def statuses(app, ids) -> dict[int, str]:
    with app.app_context():
        rows = db.session.query(Invitation.id, Invitation.status).filter(Invitation.id.in_(ids)).all()
        db.session.rollback()
        return dict(rows)


def handed_over(app, inv_id) -> bool:
    with app.app_context():
        started = db.session.get(Invitation, inv_id).send_started_at is not None
        db.session.rollback()
        return started


def wait_for(predicate, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def test_parallel_runners_send_each_invitation_exactly_once(app, client, auth, outbox, cli_env, new_journey):
    journey = new_journey()
    ids = post_batch(client, auth, [event_body(journey=journey) for _ in range(150)])
    env = cli_env(FEEDBACK_DISPATCH_BATCH_SIZE=20)
    runners = [subprocess.Popen([CLI, "jobs", "run-once"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(3)]
    for runner in runners:
        _, err = runner.communicate(timeout=120)
        assert runner.returncode == 0, err.decode()
    sent = [m["invitation_id"] for m in outbox_lines(outbox) if m["invitation_id"] in set(ids)]
    assert sorted(sent) == sorted(ids)  # every one, once
    assert set(statuses(app, ids).values()) == {"sent"}


def test_a_worker_killed_mid_send_leaves_the_invitation_in_doubt_and_it_is_never_resent(
        app, client, auth, outbox, cli_env, new_journey, tmp_path):
    [inv_id] = post_batch(client, auth, [event_body(journey=new_journey())])
    # A FIFO with no reader: the console channel's open() blocks, so the worker hangs inside send().
    fifo = tmp_path / "stuck-outbox"
    os.mkfifo(fifo)
    runner = subprocess.Popen([CLI, "jobs", "run-once"], env=cli_env(FEEDBACK_CONSOLE_OUTBOX=fifo),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: handed_over(app, inv_id)), "worker never started sending the invitation"
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
    assert statuses(app, [inv_id])[inv_id] == "sending"

    # After restart, once the lease has passed, the row is marked unknown and left alone.
    done = subprocess.run([CLI, "jobs", "run-once"], env=cli_env(FEEDBACK_SENDING_LEASE_SECONDS=0),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert statuses(app, [inv_id])[inv_id] == "unknown"
    assert inv_id not in {m["invitation_id"] for m in outbox_lines(outbox)}
    subprocess.run([CLI, "jobs", "run-once"], env=cli_env(), capture_output=True, timeout=60, check=True)
    assert statuses(app, [inv_id])[inv_id] == "unknown"


def test_a_channel_error_is_retried_with_backoff_then_fails(settings, client, auth, new_journey, tmp_path):
    [inv_id] = post_batch(client, auth, [event_body(journey=new_journey())])
    # An outbox that is a directory cannot be written: the console channel reports a transient error.
    broken = create_app({"TESTING": True, **settings, "FEEDBACK_CONSOLE_OUTBOX": str(tmp_path)})
    with broken.app_context():
        policy = SendPolicy.from_config(broken.config)
        started = datetime.now(timezone.utc)
        report = dispatch_due(policy, "test", max_attempts=2)
        assert report.outcomes.get("retry", 0) >= 1
        row = db.session.get(Invitation, inv_id)
        assert (row.status, row.attempts, row.token_hash) == ("scheduled", 1, None)
        assert row.last_error.startswith("TransientSendError: outbox not writable")
        first_retry = row.send_at
        assert timedelta(seconds=14) < first_retry - started < timedelta(seconds=47)
        assert (row.claimed_at, row.claimed_by, row.sent_to) == (None, None, None)  # released

        dispatch_due(policy, "test", now=first_retry, max_attempts=2)
        db.session.expire_all()
        row = db.session.get(Invitation, inv_id)
        assert (row.status, row.attempts) == ("failed", 2)
        db.session.remove()
        db.engine.dispose()


def test_the_worker_process_sends_due_invitations_and_stops_cleanly(client, auth, outbox, cli_env, new_journey):
    worker = subprocess.Popen([CLI, "worker"], env=cli_env(FEEDBACK_DISPATCH_INTERVAL_SECONDS=1),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        [inv_id] = post_batch(client, auth, [event_body(journey=new_journey())])
        assert wait_for(lambda: inv_id in {m["invitation_id"] for m in outbox_lines(outbox)}, timeout=30), \
            "the worker did not send the invitation"
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err.decode()


class _DroppedAfterAccepting:
    """A provider that takes the message, then the connection drops before it answers."""

    name = "flaky"
    pacer = Pacer(None)

    def __init__(self, outbox):
        self.inner = ConsoleChannel(str(outbox))

    def send(self, message):
        self.inner.send(message)
        raise ConnectionResetError("connection reset by peer")


def test_an_invitation_in_doubt_is_not_resent_but_its_link_still_works(app, client, auth, outbox, run_jobs,
                                                                       new_journey):
    [inv_id] = post_batch(client, auth, [event_body(journey=new_journey())])
    with app.app_context():
        report = dispatch_due(SendPolicy.from_config(app.config), "test",
                              channels={"sms": _DroppedAfterAccepting(outbox)})
        assert report.outcomes == {"unknown": 1}
    assert statuses(app, [inv_id])[inv_id] == "unknown"
    run_jobs()
    assert [m["invitation_id"] for m in outbox_lines(outbox)].count(inv_id) == 1  # never resent

    # The patient did get it: answering works, and proves the send.
    token = token_of(message_for(outbox, inv_id))
    page = client.get(f"/s/{token}")
    assert page.status_code == 200
    done = client.post(f"/s/{token}", data={"csrf_token": csrf_of(page.text), "booking_ease": "6",
                                            "booking_satisfaction": "4"})
    assert done.status_code == 302
    with app.app_context():
        row = db.session.get(Invitation, inv_id)
        assert row.status == "answered" and row.sent_at == row.send_started_at
        counts = db.session.query(DailyCounts).filter_by(touchpoint_id=row.touchpoint_id,
                                                          day=row.event.occurred_at.date()).one()
        assert (counts.sent, counts.responses) == (1, 1)


class _OnFirstSend:
    """The console channel, during whose first send something happens elsewhere: the worker is
    asked to stop, or another request writes on a connection of its own."""

    name = "console-and-meanwhile"

    def __init__(self, outbox, meanwhile, rate: float | None = None):
        self.inner, self.meanwhile, self.pacer = ConsoleChannel(str(outbox)), meanwhile, Pacer(rate)

    def send(self, message):
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            meanwhile()
        return self.inner.send(message)


def _write(engine, statement):
    """What another request would write, on a connection of its own."""
    def write():
        with engine.begin() as conn:
            conn.execute(statement)
    return write


def test_a_stopping_worker_finishes_the_sends_under_way_and_gives_the_rest_back(app, client, auth, outbox,
                                                                               new_journey):
    ids = post_batch(client, auth, [event_body(journey=new_journey()) for _ in range(6)])
    stop = threading.Event()
    with app.app_context():
        report = dispatch_due(SendPolicy.from_config(app.config), "test", concurrency=1, until_idle=True,
                              stop=stop, channels={"sms": _OnFirstSend(outbox, stop.set)})
    assert report.outcomes.get("sent", 0) >= 1 and report.outcomes.get("released", 0) >= 1
    sent = {m["invitation_id"] for m in outbox_lines(outbox)} & set(ids)
    with app.app_context():
        rows = db.session.query(Invitation).filter(Invitation.id.in_(ids)).all()
        for inv in rows:
            if inv.id in sent:
                assert inv.status == "sent"
            else:  # given back as it was: due again, no attempt counted, no claim left
                assert (inv.status, inv.attempts, inv.claimed_by, inv.token_hash) == ("scheduled", 0, None, None)
        db.session.rollback()


def test_a_claim_given_back_and_taken_again_cannot_be_finished_by_its_first_holder(app, client, auth, outbox,
                                                                                  new_journey):
    from feedback_service.scheduling.dispatch import _finish, claim_due, recover_stale
    [inv_id] = post_batch(client, auth, [event_body(journey=new_journey())])
    with app.app_context():
        now = datetime.now(timezone.utc)
        first = claim_due(now, "w1", 1000, "sms")[inv_id]
        # The first holder stalls past its lease before handing over; the row goes back and the
        # same worker (same name) claims it again with a new link.
        assert recover_stale(now=now + timedelta(minutes=10)) == 0
        assert statuses(app, [inv_id])[inv_id] == "scheduled"
        second = claim_due(now + timedelta(minutes=10), "w1", 1000, "sms")[inv_id]
        invitation = db.session.get(Invitation, inv_id)
        from feedback_service.security import hash_secret
        assert not _finish(invitation, hash_secret(first), "sent", {"status": "sent", "sent_at": now})
        assert _finish(invitation, hash_secret(second), "released",
                       {"status": "scheduled", "token_hash": None, "claimed_by": None, "claimed_at": None,
                        "sent_to": None, "expires_at": None, "send_started_at": None,
                        "attempts": Invitation.attempts - 1})
        db.session.rollback()
    assert statuses(app, [inv_id])[inv_id] == "scheduled"


def test_a_worker_that_died_before_handing_over_gives_its_claim_back(app, client, auth, outbox, new_journey):
    from feedback_service.scheduling.dispatch import claim_due, recover_stale
    ids = post_batch(client, auth, [event_body(journey=new_journey()) for _ in range(2)])
    with app.app_context():
        now = datetime.now(timezone.utc)
        claimed = claim_due(now, "dead-worker", 1000, "sms")
        assert set(ids) <= set(claimed)
        # One of them had been handed over when the worker died.
        db.session.query(Invitation).filter_by(id=ids[0]).update({"send_started_at": now})
        db.session.commit()
        recover_stale(now=now + timedelta(minutes=10))
        rows = {i: db.session.get(Invitation, i) for i in ids}
        assert (rows[ids[0]].status, rows[ids[0]].token_hash is not None) == ("unknown", True)
        assert (rows[ids[1]].status, rows[ids[1]].attempts, rows[ids[1]].token_hash) == ("scheduled", 0, None)
        db.session.rollback()


def _stop_texted(second):
    return OptOut.__table__.insert().values(medium="sms", address=second["patient"]["phone"], source="test",
                                            created_at=datetime.now(timezone.utc))


def _consent_withdrawn(second):
    patients = Patient.__table__
    return patients.update().where(patients.c.external_id == second["patient"]["id"]).values(consent_sms=False)


@pytest.mark.parametrize(("meanwhile", "reason"), [(_stop_texted, "opted-out"), (_consent_withdrawn, "no-consent")])
def test_a_stop_or_withdrawn_consent_while_a_text_waits_its_turn_stops_it(app, client, auth, outbox, new_journey,
                                                                           meanwhile, reason):
    journey = new_journey()
    first, second = event_body(journey=journey), event_body(journey=journey, consent_email=False)
    first_id, second_id = post_batch(client, auth, [first, second])
    with app.app_context():
        # One send at a time: the second text is composed before it happens, handed over after.
        channel = _OnFirstSend(outbox, _write(db.engine, meanwhile(second)))
        dispatch_due(SendPolicy.from_config(app.config), "test", concurrency=1, channels={"sms": channel})
        skipped = db.session.get(Invitation, second_id)
        assert (skipped.status, skipped.skip_reason) == ("skipped", reason)
        db.session.rollback()
    assert statuses(app, [first_id])[first_id] == "sent"
    assert second_id not in {m["invitation_id"] for m in outbox_lines(outbox)}


def test_a_stopping_worker_gives_back_what_was_waiting_for_the_pacer(app, client, auth, outbox, new_journey):
    ids = post_batch(client, auth, [event_body(journey=new_journey()) for _ in range(8)])
    stop = threading.Event()
    with app.app_context():
        report = dispatch_due(SendPolicy.from_config(app.config), "test", concurrency=4, stop=stop,
                              channels={"sms": _OnFirstSend(outbox, stop.set, rate=1.0)})
    # Four were handed to sending threads; only the one already at the provider goes out, the
    # three waiting for their turn are given back with the rest.
    ours = statuses(app, ids)
    assert list(ours.values()).count("sent") <= 1 and list(ours.values()).count("scheduled") >= 7
    assert len({m["invitation_id"] for m in outbox_lines(outbox)} & set(ids)) <= 1
    assert report.outcomes.get("released", 0) >= 7


def test_a_slow_channel_claims_no_more_than_it_can_hand_over_within_half_the_lease(app, settings):
    from feedback_service.scheduling.dispatch import _claim_limit
    with app.app_context():  # lease 300 s; a text may be three segments
        assert _claim_limit(100, _OnFirstSend(None, None, rate=2.0)) == 100  # 2 a second: 100 within 150 s
        one_a_second = ConsoleChannel(None)
        one_a_second.pacer = Pacer(1.0)
        assert _claim_limit(100, one_a_second) == 50
        one_a_second.pacer = Pacer(0.01)
        assert _claim_limit(100, one_a_second) == 1
        assert _claim_limit(100, ConsoleChannel(None)) == 100  # no pace, no limit


@pytest.mark.parametrize("found_by", ["dispatcher", "expiry"])
def test_a_discharge_survey_past_its_contact_window_is_never_sent(app, client, auth, outbox, run_jobs, new_journey,
                                                                 found_by):
    """A worker that was down, or quiet hours, must not push a discharge survey past 42 days."""
    from tests.conftest import daytime_tz
    slug = new_journey()
    discharged = datetime.now(timezone.utc) - timedelta(days=3)
    body = event_body("discharge", journey=slug, occurred_at=discharged, timezone=daytime_tz())
    r = client.post("/api/v1/events", json=body, headers=auth)
    assert r.status_code == 202, r.get_json()
    [inv] = r.get_json()["invitations"]
    with app.app_context():
        row = db.session.get(Invitation, inv["id"])
        assert row.send_by == discharged + timedelta(days=42)  # the window every discharge keeps
        # As if the window had closed while the row waited: due now, its last day yesterday.
        row.send_by = datetime.now(timezone.utc) - timedelta(days=1)
        if found_by == "expiry":
            row.send_at = datetime.now(timezone.utc) + timedelta(minutes=5)
        db.session.commit()
    run_jobs()
    with app.app_context():
        row = db.session.get(Invitation, inv["id"])
        assert (row.status, row.skip_reason) == ("expired", "outside-contact-window")
    assert [m for m in outbox_lines(outbox) if m["invitation_id"] == inv["id"]] == []
