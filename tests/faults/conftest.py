"""Processes of the service (gunicorn, the worker, `jobs run-once`) started by a test, stopped with it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from feedback_service.config import PROJECT_ROOT
from feedback_service.extensions import db
from feedback_service.scheduling.models import Invitation

BIN = Path(sys.executable).parent


class Proc:
    """One process of ours in a session of its own, its output in a file."""

    def __init__(self, name: str, args: list[str], env: dict, folder: Path):
        self.name, self.log = name, folder / f"{name}.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(args, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, as a service manager sends; its exit code (None: it had to be killed)."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.popen.returncode

    def kill(self) -> None:
        if self.alive:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)


@pytest.fixture
def procs(tmp_path):
    """start(name, args, env) -> a running Proc; any still running when the test ends is killed."""
    started: list[Proc] = []

    def start(name: str, args: list[str], env: dict) -> Proc:
        proc = Proc(name, args, env, tmp_path)
        started.append(proc)
        return proc
    yield start
    for proc in started:
        proc.kill()


def env_with(settings: dict, **overrides) -> dict:
    """The environment of a process of ours: the session's settings, then the test's."""
    return {**os.environ, **{k: str(v) for k, v in {**settings, **overrides}.items()}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def rows(app, ids) -> dict[int, Invitation]:
    """The invitations as stored now, detached, by id."""
    with app.app_context():
        found = list(db.session.scalars(select(Invitation).where(Invitation.id.in_(list(ids)))))
        db.session.expunge_all()
        db.session.rollback()
        return {inv.id: inv for inv in found}


def statuses(app, ids) -> dict[int, str]:
    return {i: inv.status for i, inv in rows(app, ids).items()}
