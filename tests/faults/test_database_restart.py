"""The database restarting under load: gunicorn answers 503 fast and recovers by itself, the worker
reconnects, and no event accepted with 2xx is lost. PostgreSQL only: the real server is restarted."""
from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import make_url, select

from feedback_service import RETRY_AFTER_SECONDS
from feedback_service.config import PROJECT_ROOT
from feedback_service.events.models import Event
from feedback_service.extensions import db
from feedback_service.responses.texts import texts_for
from feedback_service.scheduling.models import Invitation
from tests.conftest import event_body
from tests.faults.conftest import BIN, env_with, free_port, statuses, wait_for

OUTAGE_SECONDS = 5.0
FAIL_FAST_SECONDS = 6.0  # the connect timeout (5 s) is the most a request may wait for the database
RECOVERY_SECONDS = 10.0
TWILIO_LATENCY = 2.0


@pytest.fixture
def cluster(database_url) -> tuple[str, str, int]:
    """(version, name, port) of the local PostgreSQL cluster the suite's database lives on."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to restart")
    url = make_url(database_url)
    if url.host not in ("127.0.0.1", "localhost", None) or not shutil.which("pg_ctlcluster") or os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL needs its cluster on this machine, pg_ctlcluster and root")
    port = url.port or 5432
    listed = subprocess.run(["pg_lsclusters", "--no-header"], check=True, capture_output=True, text=True,
                            timeout=30).stdout
    for line in listed.splitlines():
        version, name, cluster_port, *_ = line.split()
        if int(cluster_port) == port:
            return version, name, port
    pytest.skip(f"no local PostgreSQL cluster listens on port {port}")


def ready(port: int) -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "2"],
                          check=False, timeout=10).returncode == 0


def restart(cluster, outage: float) -> tuple[float, float, float, float]:
    """Stop the server (fast: every connection cut), wait `outage` seconds, start it again.
    Returns the monotonic times it was asked to stop, was down, asked to start, and accepting
    connections again."""
    version, name, port = cluster
    ctl = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name]
    stopping = time.monotonic()
    try:
        subprocess.run([*ctl, "stop", "-m", "fast"], check=True, capture_output=True, timeout=60)
        down = time.monotonic()
        time.sleep(outage)
        starting = time.monotonic()
    finally:
        # Whatever happened, the rest of the suite needs its server back.
        start = subprocess.Popen([*ctl, "start"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        back = wait_for(lambda: ready(port), 60, interval=0.1)
        up = time.monotonic()
        start.wait(120)
        assert back, "PostgreSQL did not come back"
        _reconnect_suite_admin_connection()
    return stopping, down, starting, up


def _reconnect_suite_admin_connection() -> None:
    # tests/scratch.py keeps one connection to the server's own database open for the whole
    # session, to drop the scratch database at the end; the restart cut it, and the teardown
    # would fail. Reconnect it where it is (libpq's PQreset). The app's pools need nothing:
    # pre-ping replaces their dead connections.
    import psycopg
    server_db = make_url(os.environ["FEEDBACK_TEST_DATABASE_URL"]).database
    for obj in gc.get_objects():
        if isinstance(obj, psycopg.Connection) and not obj.closed and obj.info.dbname == server_db:
            obj.pgconn.reset()


@dataclass
class Answer:
    what: str  # "events" or "healthz"
    started: float
    ended: float = 0.0
    status: int | None = None  # None: no answer at all (timeout, refused)
    headers: dict = field(default_factory=dict)
    body: object = None
    error: str | None = None
    events: list[dict] = field(default_factory=list)  # what was posted

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def ask(what: str, send, url: str, **kwargs) -> Answer:
    answer = Answer(what, time.monotonic(), events=kwargs.get("json", []))
    try:
        r = send(url, timeout=10, **kwargs)
        answer.status, answer.headers = r.status_code, dict(r.headers)
        answer.body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else r.text
    except requests.RequestException as exc:
        answer.error = type(exc).__name__
    answer.ended = time.monotonic()
    return answer


def client(base: str, auth: dict, journey: str, twilio, stop: threading.Event, answers: list[Answer]) -> None:
    """Post events in small batches, each with ids of its own, probe /healthz, and open the survey
    link of the first text sent, as its patient would, until stopped."""
    http = requests.Session()
    while not stop.is_set():
        bodies = [event_body(journey=journey) for _ in range(5)]
        answers.append(ask("events", http.post, f"{base}/api/v1/events", json=bodies, headers=auth))
        answers.append(ask("healthz", http.get, f"{base}/healthz"))
        if twilio.messages:
            link = re.search(r"https?://\S+?(/s/[\w-]+)", twilio.messages[0]["body"])[1]
            answers.append(ask("survey", http.get, base + link))
        time.sleep(0.05)


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (gunicorn's workers)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def invitation_of(seen) -> int:
    """The invitation a Twilio request was for, from the status callback URL it carries."""
    return int(parse_qs(urlsplit(seen.form["StatusCallback"]).query)["invitation"][0])


def stored(app, external_ids) -> dict[str, int]:
    """external id -> its invitation's id, for the events stored with an invitation."""
    with app.app_context():
        found = dict(db.session.execute(select(Event.external_id, Invitation.id)
                                        .join(Invitation, Invitation.event_id == Event.id)
                                        .where(Event.external_id.in_(list(external_ids)))).all())
        db.session.rollback()
        return found


@pytest.fixture
def slow_twilio(fake_twilio):
    """Twilio taking longer to answer than PostgreSQL takes to stop, so that texts are in flight
    when the database goes: their outcomes have to wait for it to come back."""
    fake_twilio.latency = TWILIO_LATENCY
    yield fake_twilio
    fake_twilio.latency = 0.0


def test_a_database_restart_under_load_fails_fast_with_503_recovers_and_loses_nothing(
        cluster, app, provider_settings, api_key, slow_twilio, new_journey, procs):
    journey = new_journey()
    env = env_with(provider_settings, FEEDBACK_DISPATCH_INTERVAL_SECONDS=1, FEEDBACK_PROVIDER_TIMEOUT_SECONDS=10,
                   FEEDBACK_SEND_CONCURRENCY=64)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = procs("gunicorn", [str(BIN / "gunicorn"), "feedback_service.wsgi:app", "-b", f"127.0.0.1:{port}", "-w", "2",
                             "--graceful-timeout", "5", "--no-control-socket"], env)
    worker = procs("worker", [str(BIN / "feedback-service"), "worker"], env)

    def healthy() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False
    assert wait_for(healthy, 60), "gunicorn did not start:\n" + web.output()[-3000:]
    web_workers = children(web.popen.pid)
    assert len(web_workers) == 2, web_workers

    auth = {"Authorization": f"Bearer {api_key}"}
    answers: list[Answer] = []
    stop = threading.Event()
    load = threading.Thread(target=client, args=(base, auth, journey, slow_twilio, stop, answers), daemon=True)
    load.start()
    try:
        assert wait_for(lambda: any(a.what == "survey" and a.status == 200 for a in answers), 60), answers[-3:]
        time.sleep(3)  # the worker at its steady pace, texts always in flight
        stopping, down, starting, up = restart(cluster, OUTAGE_SECONDS)
        assert wait_for(lambda: any(a.started >= up and a.what == "events" and a.status == 202 for a in answers),
                        RECOVERY_SECONDS + 20), f"no event accepted after the restart: {answers[-3:]}"
        time.sleep(3)  # and some more load once recovered
    finally:
        stop.set()
        load.join(30)
    assert not load.is_alive()

    # Every request got an answer, and never a 500.
    assert not [a for a in answers if a.error], [a for a in answers if a.error][:5]
    assert not [a for a in answers if a.status >= 500 and a.status != 503], \
        [(a.what, a.status, a.body) for a in answers if a.status >= 500 and a.status != 503][:5]

    # While the server was down: 503 at once, saying when to come back; JSON for the API and
    # /healthz, a page saying so for the patient.
    outage = [a for a in answers if a.started >= down and a.ended <= starting]
    assert len(outage) >= 10, f"only {len(outage)} requests fell in the {OUTAGE_SECONDS} s outage"
    assert {a.what for a in outage} == {"events", "healthz", "survey"}
    for a in outage:
        assert a.status == 503, (a.what, a.status, a.body)
        if a.what == "survey":
            assert a.headers["Content-Type"].startswith("text/html") and texts_for("en")["busy_title"] in a.body
            # The link's rate limit (Flask-Limiter) stretches Retry-After to the end of its window.
            assert int(a.headers["Retry-After"]) >= RETRY_AFTER_SECONDS
        else:
            assert isinstance(a.body, dict) and a.body.get("error"), a.body
            assert a.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    slowest = max(a.seconds for a in outage)
    assert slowest < FAIL_FAST_SECONDS

    # Back by themselves: gunicorn's same two workers answer again, /healthz and the survey page too.
    first_ok = min((a for a in answers if a.started >= starting and a.status in (200, 202)), key=lambda a: a.ended)
    recovery = first_ok.ended - up
    assert recovery < RECOVERY_SECONDS
    after = [a for a in answers if a.started >= first_ok.ended]
    assert after and all(a.status == (202 if a.what == "events" else 200) for a in after), \
        Counter((a.what, a.status) for a in after)
    assert web.alive and children(web.popen.pid) == web_workers, "gunicorn's workers were replaced"
    print(f"\n{len(answers)} requests; {len(outage)} during the {OUTAGE_SECONDS:.0f} s outage, all 503, "
          f"slowest {slowest * 1000:.0f} ms; first success {recovery:.2f} s after PostgreSQL accepted connections "
          f"again")

    # No event accepted with 2xx is lost: each is stored, with its invitation.
    accepted = {e["external_id"] for a in answers if a.what == "events" and a.status in (200, 202) for e in a.events}
    refused = [e for a in answers if a.what == "events" and a.status == 503 for e in a.events]
    invitations = stored(app, accepted)
    assert set(invitations) == accepted, f"{len(accepted - set(invitations))} accepted events were lost"
    # The refused ones, posted again as Retry-After asks, are taken now (200 for any that had
    # landed after all, the commit's answer lost with the connection).
    again = Counter()
    for i in range(0, len(refused), 50):
        r = requests.post(f"{base}/api/v1/events", json=refused[i:i + 50], headers=auth, timeout=30)
        assert r.status_code in (200, 202), r.text
        again.update("duplicate" if e["duplicate"] else "new" for e in r.json()["events"])
    refused = {e["external_id"] for e in refused}
    invitations = stored(app, accepted | refused)
    assert set(invitations) == accepted | refused

    # The worker lived through it: the texts in flight when the database went had their outcomes
    # written once it was back, and it sent every invitation once, those of events that arrived
    # after the restart too.
    ids = set(invitations.values())
    waited = time.monotonic()
    settled = wait_for(lambda: set(statuses(app, ids).values()) == {"sent"} or not worker.alive, 120, interval=1)
    assert worker.alive, "the worker died:\n" + worker.output()[-3000:]
    sends = Counter(invitation_of(s) for s in slow_twilio.sends())
    if not settled:
        left = Counter(st for i, st in statuses(app, ids).items() if st != "sent")
        reached = sum(i in sends for i, st in statuses(app, ids).items() if st != "sent")
        # The first dispatch run that failed, in our own frames.
        records = re.split(r"\n(?=\d{4}-\d\d-\d\d )", worker.output())
        crash = next((r for r in records if 'Job "dispatch' in r and "raised an exception" in r), "")
        frames = [line for line in crash.splitlines()
                  if f"\"{PROJECT_ROOT}/" in line and "/.venv/" not in line or "Error: " in line]
        pytest.fail(f"not all sent after 120 s: {dict(left)} left, {reached} of them handed to Twilio; "
                    "the dispatch run that failed:\n" + "\n".join(frames[-12:]))
    # Among them, texts Twilio answered while the database was stopping or stopped.
    late_outcomes = sum(stopping + 0.5 < s.at + TWILIO_LATENCY < starting
                        for s in slow_twilio.sends() if invitation_of(s) in ids)
    assert late_outcomes, "no text was in flight when the database went: the test missed its point"
    assert {i: n for i, n in sends.items() if i in ids} == dict.fromkeys(ids, 1)
    after_restart = {invitations[e["external_id"]] for a in answers if a.started >= up and a.status == 202
                     for e in a.events}
    assert after_restart
    print(f"{len(accepted)} events accepted, {len(refused)} refused with 503 and posted again ({dict(again)}); "
          f"{len(ids)} texts sent once each ({len(after_restart)} of events posted after the restart), the last "
          f"{time.monotonic() - waited:.1f} s after the load stopped; {late_outcomes} were answered by Twilio while the "
          f"database was away")
    assert worker.stop() == 0, worker.output()[-3000:]
    assert web.stop() == 0, web.output()[-3000:]
