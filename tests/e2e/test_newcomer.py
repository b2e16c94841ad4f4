"""What a newcomer does after the README's first command, with real processes and plain HTTP:
the dev server and its worker, curl-style requests, the console outbox, the survey page; and the demo."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from feedback_service import create_app
from feedback_service.events.models import Event
from feedback_service.extensions import db
from tests.conftest import csrf_of, event_body, outbox_lines
from tests.scratch import scratch_database

CLI = str(Path(sys.executable).parent / "feedback-service")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    return False


@contextmanager
def dev_server(env: dict, tmp_path: Path):
    """`feedback-service run --with-worker` on a free port; yields its base URL. On the way out it
    is stopped with SIGTERM, and must have stopped its worker too."""
    port = free_port()
    env = {**env, "FEEDBACK_BASE_URL": f"http://127.0.0.1:{port}", "FEEDBACK_DISPATCH_INTERVAL_SECONDS": "1"}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([CLI, "run", "--port", str(port), "--with-worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: requests.get(f"{base}/healthz", timeout=2).status_code == 200), "server did not start"
        yield base
    finally:
        log.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        finally:
            # The server must have stopped its worker; make sure nothing outlives the test either way.
            alive = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
            if alive:
                os.killpg(proc.pid, signal.SIGKILL)
        assert not alive, "the worker outlived the dev server"


@pytest.fixture
def server(settings, tmp_path):
    outbox = tmp_path / "outbox.jsonl"
    env = {**os.environ, **settings, "FEEDBACK_CONSOLE_OUTBOX": str(outbox)}
    with dev_server(env, tmp_path) as base:
        yield base, outbox, env


def test_post_an_event_see_the_message_answer_and_see_the_score_move(server, api_key):
    base, outbox, env = server
    auth = {"Authorization": f"Bearer {api_key}"}
    before = requests.get(f"{base}/api/v1/journeys/general-care/scores", headers=auth, timeout=10).json()

    body = event_body("follow_up")
    r = requests.post(f"{base}/api/v1/events", json=body, headers=auth, timeout=10)
    assert r.status_code == 202, r.text
    inv_id = r.json()["invitations"][0]["id"]
    assert r.json()["journey"] == "general-care"
    assert requests.post(f"{base}/api/v1/events", json=body, headers=auth, timeout=10).json()["id"] == r.json()["id"]

    assert wait_for(lambda: any(m["invitation_id"] == inv_id for m in outbox_lines(outbox))), "nothing in the outbox"
    [message] = [m for m in outbox_lines(outbox) if m["invitation_id"] == inv_id]
    assert message["survey_url"].startswith(base + "/s/")

    browser = requests.Session()
    page = browser.get(message["survey_url"], timeout=10)
    assert page.status_code == 200 and 'name="followup_timely"' in page.text
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    done = browser.post(message["survey_url"], data={"csrf_token": csrf, "followup_timely": "no",
                                                     "followup_satisfaction": "2", "comment": "Long wait."},
                        timeout=10)
    assert done.status_code == 200 and done.url.endswith("/thanks") and "Thank you" in done.text

    # The answer is in the rollups the scores API reads (with a reporting threshold of 1 to see it).
    show_all = subprocess.run(
        [CLI, "shell"], input="from feedback_service.rollups.queries import journey_scores\n"
        "from feedback_service.journeys.models import Journey\nfrom feedback_service.extensions import db\n"
        "j = db.session.query(Journey).filter_by(slug='general-care').one()\n"
        "import json; print('SCORES', json.dumps(journey_scores(j, None, None, 1)))\n",
        env=env, capture_output=True, text=True, timeout=60)
    line = next(l for l in show_all.stdout.splitlines() if "SCORES" in l)
    after = {s["slug"]: s for s in json.loads(line.split("SCORES", 1)[1])["stages"]}["follow-up"]
    assert after["responses"] >= 1 and after["friction"]["n"] >= 1
    assert before["journey"] == "general-care"

    # The server's and the worker's logs saw all of this, and kept no contact detail or link token.
    logs = (outbox.parent / "server.log").read_text()
    assert "POST /api/v1/events" in logs and "dispatch:" in logs
    for secret in (body["patient"]["phone"], body["patient"]["email"], message["survey_url"].rsplit("/", 1)[1]):
        assert secret not in logs


def test_demo_seeds_reportable_scores_and_is_idempotent(settings, tmp_path):
    with scratch_database(os.environ.get("FEEDBACK_TEST_DATABASE_URL"), tmp_path, prefix="feedback_demo") as url:
        app = create_app({"TESTING": True, **settings, "FEEDBACK_DATABASE_URL": url})
        runner = app.test_cli_runner()
        assert runner.invoke(args=["init"]).exit_code == 0
        first = runner.invoke(args=["demo", "--patients", "150"])
        assert first.exit_code == 0, first.output
        summary = json.loads(first.stdout.strip().splitlines()[-1])
        assert summary["events_recorded"] > 300 and summary["responses"] > 100
        key = runner.invoke(args=["api-key", "create", "demo-reader", "--scope", "scores"]).stdout.splitlines()[0]
        stages = app.test_client().get("/api/v1/journeys/orthopedic-surgery/scores",
                                       headers={"Authorization": f"Bearer {key}"}).get_json()["stages"]
        shown = [s for s in stages if not s["suppressed"]]
        assert {s["slug"] for s in shown} == {"booking", "discharge", "follow-up"}
        for stage in shown:
            assert 0 <= stage["satisfaction"]["score"] <= 100 and 0 <= stage["friction"]["score"] <= 100
        # One workspace account per role, each password printed once; it signs in.
        accounts = dict(re.findall(r"sign in at /login as (\S+) with password (\S+)", first.stderr))
        assert sorted(accounts) == ["admin@demo.invalid", "designer@demo.invalid", "manager@demo.invalid"]
        client = app.test_client()
        page = client.get("/login")
        signed_in = client.post("/login", data={"csrf_token": csrf_of(page.text), "email": "manager@demo.invalid",
                                                "password": accounts["manager@demo.invalid"]})
        assert signed_in.status_code == 302 and client.get("/dashboard").status_code == 200
        again_run = runner.invoke(args=["demo", "--patients", "150"])
        again = json.loads(again_run.stdout.strip().splitlines()[-1])
        assert again["events_recorded"] == 0 and "password" not in again_run.stderr
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def test_demo_leaves_a_database_with_real_events_alone(app, client, auth):
    assert client.post("/api/v1/events", json=event_body(), headers=auth).status_code == 202
    declined = app.test_cli_runner().invoke(args=["demo", "--patients", "5"])
    # Exit 0: the README's start command goes on to start the service.
    assert declined.exit_code == 0 and "demo skipped" in declined.stderr and "holds real events" in declined.stderr
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Event).where(Event.source == "demo")) == 0
