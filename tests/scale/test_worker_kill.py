"""A worker killed with SIGKILL in the middle of a batch, then restarted: nothing is lost, nothing is
sent twice, and what was in doubt at the kill follows the at-most-once rule (README, Delivery
guarantees): handed over -> unknown, never resent by itself; claimed but not handed over -> sent
after the restart."""
from __future__ import annotations

import subprocess
import time
from collections import Counter
from datetime import datetime, timezone

from sqlalchemy import select

from feedback_service.extensions import db
from feedback_service.scheduling.models import Invitation
from tests.scale.conftest import CLI, invitation_of, journey_id, post_batches, wait_until_settled

INVITATIONS = 300
CONCURRENCY = 8
LEASE_SECONDS = 2


def rows(app, jid: int) -> dict[int, tuple]:
    """{id: (status, send_started_at)} of the journey's invitations."""
    with app.app_context():
        found = db.session.execute(select(Invitation.id, Invitation.status, Invitation.send_started_at)
                                   .where(Invitation.journey_id == jid)).all()
        db.session.rollback()
        return {i: (status, started) for i, status, started in found}


def received(fake, ids) -> Counter:
    """How many times the fake Twilio received each of these invitations."""
    return Counter(i for i in map(invitation_of, fake.sends()) if i in ids)


def test_a_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice(app, client, auth, new_journey, fake_twilio,
                                                                        worker_env, workers):
    slug = new_journey()
    ids = set(post_batches(client, auth, slug, INVITATIONS, batch=100))
    jid = journey_id(app, slug)
    env = worker_env(FEEDBACK_SMS_RATE_PER_SECOND=0, FEEDBACK_DISPATCH_INTERVAL_SECONDS=1,
                     FEEDBACK_DISPATCH_BATCH_SIZE=50, FEEDBACK_SEND_CONCURRENCY=CONCURRENCY,
                     FEEDBACK_PROVIDER_TIMEOUT_SECONDS=30)  # a slow answer must not be what leaves a send in doubt
    fake_twilio.latency = 0.5  # every text is taken at once but answered slowly: sends are in flight
    first = workers(env)
    deadline = time.monotonic() + 60
    while sum(received(fake_twilio, ids).values()) < INVITATIONS // 5:
        assert first.proc.poll() is None, first.output()[-3000:]
        assert time.monotonic() < deadline, f"the worker sent only {sum(received(fake_twilio, ids).values())} in 60 s"
        time.sleep(0.05)
    first.kill()  # SIGKILL: no clean-up of any kind
    killed_at = datetime.now(timezone.utc)
    in_flight_at_kill = fake_twilio.in_flight
    fake_twilio.latency = 0.0
    at_kill = rows(app, jid)
    handed_over = {i for i, (status, started) in at_kill.items() if status == "sending" and started is not None}
    claimed_only = {i for i, (status, started) in at_kill.items() if status == "sending" and started is None}
    before_kill = received(fake_twilio, ids)
    assert 0 < len(before_kill) < INVITATIONS
    statuses = Counter(status for status, _ in at_kill.values())
    assert handed_over, f"the kill came between sends, not in the middle of any: {statuses}"
    assert len(handed_over) <= CONCURRENCY

    # After the lease, a restarted worker's first recovery tick settles what the dead one left.
    time.sleep(LEASE_SECONDS + 0.5)
    restarted_at = time.monotonic()
    second = workers({**env, "FEEDBACK_SENDING_LEASE_SECONDS": str(LEASE_SECONDS)})
    counts = wait_until_settled(app, jid, INVITATIONS, timeout=120, alive=[second])
    assert second.stop() == 0, second.output()[-3000:]

    final = rows(app, jid)
    unknown = {i for i, (status, _) in final.items() if status == "unknown"}
    times = received(fake_twilio, ids)
    print(f"\nat the kill: {sum(before_kill.values())} received by the fake, {in_flight_at_kill} awaiting its answer, "
          f"{len(handed_over)} handed over, {len(claimed_only)} claimed but not handed over; after the restart: "
          f"{dict(counts)}")
    assert counts == Counter(sent=INVITATIONS - len(unknown), unknown=len(unknown)), dict(counts)
    assert max(times.values()) == 1, [i for i, n in times.items() if n > 1]  # never twice
    # In doubt: exactly the sends handed over before the kill; never sent again.
    assert unknown == handed_over
    assert all(final[i][1] < killed_at for i in unknown)
    # Everything else went out exactly once; what had not reached the fake before the kill
    # (the claims given back among them) went out after the restart.
    assert all(times[i] == 1 for i in ids - unknown)
    after_restart = Counter(invitation_of(s) for s in fake_twilio.sends() if s.at >= restarted_at)
    assert set(after_restart) & ids == ids - unknown - set(before_kill)
    assert claimed_only <= set(after_restart)

    listed = app.test_cli_runner().invoke(args=["invitations", "in-doubt"])
    assert listed.exit_code == 0, listed.output
    assert {int(line.split("\t")[0]) for line in listed.stdout.splitlines()} & ids == unknown

    # Another pass of every job, long after the lease: what is in doubt stays in doubt and unsent.
    again = subprocess.run([CLI, "jobs", "run-once"], env={**env, "FEEDBACK_SENDING_LEASE_SECONDS": "0"},
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert rows(app, jid) == final
    assert received(fake_twilio, ids) == times
