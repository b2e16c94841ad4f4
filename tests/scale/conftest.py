"""Real `feedback-service worker` processes against the session's database and the fake Twilio API."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from feedback_service.extensions import db
from feedback_service.journeys.models import Journey
from feedback_service.scheduling.models import Invitation
from tests.conftest import event_body, new_phone

CLI = str(Path(sys.executable).parent / "feedback-service")


@pytest.fixture
def worker_env(provider_settings):
    """The environment of a worker talking to the fake providers, with overrides."""
    def make(**overrides) -> dict:
        return {**os.environ, **{k: str(v) for k, v in {**provider_settings, **overrides}.items()}}
    return make


# A pytest killed from outside runs no teardown: its workers must not live on and keep sending, so
# each dies with it (PR_SET_PDEATHSIG). Looked up here: the child, forked from a process with
# threads (the fakes), only makes the one call.
_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)


class Worker:
    """One `feedback-service worker` process (a single process: the scheduler's jobs run in its
    threads), logging to a file."""

    def __init__(self, env: dict, log: Path):
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([CLI, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)  # noqa: PLW1509

    @property
    def name(self) -> str:
        return str(self.proc.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a service manager would; its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"worker {self.name} did not stop within {timeout} s of SIGTERM:\n{self.output()[-3000:]}")


@pytest.fixture
def workers(tmp_path):
    """start(env) -> a running Worker; every one still alive at the end of the test is killed."""
    started: list[Worker] = []

    def start(env: dict) -> Worker:
        worker = Worker(env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker
    yield start
    for worker in started:
        worker.kill()


def post_batches(client, auth, journey: str, count: int, batch: int = 1000) -> list[int]:
    """`count` due SMS invitations through the events API, each to a patient and phone of its own."""
    phones: set[str] = set()
    while len(phones) < count:
        phones.add(new_phone())
    bodies = [event_body(journey=journey, phone=phone) for phone in phones]
    ids = []
    for i in range(0, count, batch):
        r = client.post("/api/v1/events", json=bodies[i:i + batch], headers=auth)
        assert r.status_code == 202, r.get_json()
        for event in r.get_json()["events"]:
            [invitation] = event["invitations"]
            assert (invitation["status"], invitation["channel"]) == ("scheduled", "sms"), invitation
            ids.append(invitation["id"])
    return ids


def status_counts(app, journey_id: int) -> Counter:
    with app.app_context():
        rows = db.session.execute(select(Invitation.status, func.count()).where(Invitation.journey_id == journey_id)
                                  .group_by(Invitation.status)).all()
        db.session.rollback()
        return Counter(dict(rows))


def journey_id(app, slug: str) -> int:
    with app.app_context():
        return db.session.scalar(select(Journey.id).where(Journey.slug == slug))


def wait_until_settled(app, jid: int, total: int, timeout: float, alive=(), stalled_after: float | None = None,
                       poll: float = 0.5) -> Counter:
    """Poll until no invitation of the journey is scheduled or sending; fail with the progress after
    `timeout` seconds, or as soon as none has settled for `stalled_after` seconds."""
    started = time.monotonic()
    progress_at, left_before = started, None
    while True:
        counts = status_counts(app, jid)
        left = counts["scheduled"] + counts["sending"]
        if not left:
            return counts
        now = time.monotonic()
        if left != left_before:
            progress_at, left_before = now, left
        dead = [w for w in alive if w.proc.poll() is not None]
        if dead:
            pytest.fail(f"worker {dead[0].name} exited ({dead[0].proc.returncode}) with {dict(counts)} "
                        f"of {total}:\n{dead[0].output()[-3000:]}")
        if now - started > timeout or (stalled_after and now - progress_at > stalled_after):
            pytest.fail(f"after {now - started:.0f} s ({now - progress_at:.0f} s without progress), still not "
                        f"settled: {dict(counts)} of {total}")
        time.sleep(poll)


def invitation_of(seen) -> int:
    """The invitation a Twilio request was for, from the status callback URL it carries."""
    return int(parse_qs(urlsplit(seen.form["StatusCallback"]).query)["invitation"][0])
