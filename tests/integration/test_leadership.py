"""The sweeping jobs run in one worker at a time (a PostgreSQL advisory lock); dispatch in all."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jobs
from feedback_service.extensions import db
from feedback_service.scheduling.leadership import leadership

CLI = str(Path(sys.executable).parent / "feedback-service")


def postgresql(app) -> bool:
    with app.app_context():
        return db.engine.dialect.name == "postgresql"


def run_once(settings) -> dict:
    done = subprocess.run([CLI, "jobs", "run-once"], env={**os.environ, **settings}, capture_output=True,
                          timeout=120, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_on_sqlite_the_single_worker_always_leads(app):
    if postgresql(app):
        pytest.skip("SQLite only: PostgreSQL has the advisory-lock tests below")
    with app.app_context(), leadership("expire") as first, leadership("expire") as second:
        assert first is True and second is True


def test_a_sweep_held_by_another_worker_is_skipped_while_dispatch_still_runs(app, settings):
    if not postgresql(app):
        pytest.skip("advisory locks are PostgreSQL's; SQLite deployments run one worker")
    with app.app_context(), leadership("expire") as held:
        assert held
        report = run_once(settings)
        # Any other database session asking for it meanwhile is refused, in this process too.
        with leadership("expire") as again:
            assert again is False
    assert report["expire"] == jobs.NOT_LEADER
    assert report["recover"] != jobs.NOT_LEADER and report["intake"] != jobs.NOT_LEADER
    assert isinstance(report["dispatch"], dict)  # dispatch is shared: it ran
    # Released: the next run leads the sweep itself.
    assert run_once(settings)["expire"] != jobs.NOT_LEADER


def test_only_one_of_two_processes_holds_a_sweep_and_a_killed_holder_releases_it(app, settings, tmp_path):
    if not postgresql(app):
        pytest.skip("advisory locks are PostgreSQL's; SQLite deployments run one worker")
    ready = tmp_path / "ready"
    holder = textwrap.dedent(f"""
        import pathlib, time
        from feedback_service import create_app
        from feedback_service.scheduling.leadership import leadership
        app = create_app()
        with app.app_context(), leadership("recover") as held:
            pathlib.Path({str(ready)!r}).write_text(str(held))
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], env={**os.environ, **settings})
    try:
        for _ in range(300):
            if ready.exists() and ready.read_text():
                break
            proc.poll() is None or pytest.fail("the holder process died")
            __import__("time").sleep(0.1)
        assert ready.read_text() == "True"
        assert run_once(settings)["recover"] == jobs.NOT_LEADER
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Its connection died with it, and PostgreSQL let go of the lock at once: no lease to wait out.
    assert run_once(settings)["recover"] != jobs.NOT_LEADER
