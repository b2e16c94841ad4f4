"""HTTP load against gunicorn on 127.0.0.1: the events API and the patient's survey page.

    .venv/bin/python bench/http_load.py [--database-url postgresql://postgres@127.0.0.1:5432/test]
        [--server sync:5 --server gthread:5:4] [--duration 20] [--only events|survey]

For each server configuration (`sync:WORKERS` or `gthread:WORKERS:THREADS`; default both, with
2 x cores + 1 workers) it makes a scratch database, runs `feedback-service init`, creates an API
key with the CLI, starts gunicorn and waits for /healthz, then measures:

- /healthz, single-event posts and 100-event batches at full speed (closed loop: each connection
  sends its next request when the last one is answered), and the events API's throughput as a
  share of /healthz's, the ceiling of this server on this machine;
- batches at a fixed 1,000 events/s (open loop: requests are sent at fixed intervals and each
  latency counts from its scheduled time, so queueing is not hidden by a client that waits);
- the survey page at 200 pages/s with links of their own, and answers at 100/s (a GET of the form
  and the POST of its answers: 200 requests/s), open loop, after real invitations went out
  through `feedback-service jobs run-once` and the console channel; then pages at full speed.

The load comes from a pool of client processes (--clients) with keep-alive connections
(http.client), so the client's interpreter lock does not cap the server; on this machine they
share its cores with gunicorn and the database, and the CPU each used is printed. Any answer
other than 2xx/3xx is an error and is printed. Ends with a Markdown table.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import multiprocessing
import os
import platform
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.scratch import scratch_database  # noqa: E402

BIN = Path(sys.executable).parent
CORES = os.cpu_count() or 1
BATCH = 100

# -- Realistic events: distinct patients and phones, daytime zones, the default journey ----------

AREA_CODES = (212, 646, 917, 718, 347, 929, 332, 415, 628, 510, 312, 773, 617, 857)
ZONES = ("Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles", "America/Denver",
         "America/Chicago", "America/New_York", "America/Sao_Paulo", "Europe/London", "Europe/Madrid",
         "Africa/Lagos", "Europe/Athens", "Asia/Dubai", "Asia/Kolkata", "Asia/Bangkok", "Asia/Shanghai",
         "Asia/Tokyo", "Australia/Sydney", "Pacific/Auckland")
NAMES = ("Ana", "Liam", "Olivia", "Noah", "María", "José", "Aisha", "Wei", "Fatima", "Lucas", "Sofía", "Ravi")
COMMENTS = ("Quick and friendly.", "The wait on the phone was long.", "Clear instructions, thank you.",
            "Nobody told me where to park.", "")
# Each phase's events and phones start here, so no two phases share a patient or a handset
# (text limits count per phone number).
PHASE_SPAN = 2_000_000


def phone(n: int) -> str:
    """The n-th of 112 million distinct valid US numbers."""
    area, rest = divmod(n, 800 * 10000)
    return f"+1{AREA_CODES[area]}{200 + rest // 10000}{rest % 10000:04d}"


def daytime_zones(now: datetime) -> list[str]:
    """Zones where it is 09:00-17:00 now: a send due within the hour is inside quiet hours' window."""
    return [z for z in ZONES if 9 <= now.astimezone(ZoneInfo(z)).hour < 17]


def event(tag: str, n: int, zones: list[str], now: datetime, kind: str | None = None) -> dict:
    """The n-th event of a run: a booking, discharge or follow-up that just happened (so its survey
    is scheduled, not due), or `kind` 'due' for a booking two hours ago (due now)."""
    r = random.Random(n)
    if kind == "due":
        type_, ago = "booking", timedelta(hours=2, minutes=r.uniform(0, 30))
    else:
        type_ = r.choices(("booking", "discharge", "follow_up"), (5, 3, 2))[0]
        ago = timedelta(seconds=r.uniform(0, 600) if type_ == "booking" else r.uniform(1800, 6 * 3600))
    patient = {"id": f"{tag}-p{n}", "first_name": r.choice(NAMES), "phone": phone(n),
               "locale": "es" if r.random() < 0.3 else "en", "timezone": r.choice(zones),
               "consent_sms": kind == "due" or r.random() < 0.85}
    if r.random() < 0.4:
        patient.update(email=f"{tag}.p{n}@example.org", consent_email=True)
    return {"external_id": f"{tag}-e{n}", "type": type_, "occurred_at": (now - ago).isoformat(), "patient": patient}


# -- The client: one process of the pool, several threads, each with its own connection ---------

@dataclass(frozen=True)
class Load:
    kind: str                # healthz, event, batch, page, answer
    port: int
    duration: float
    rate: float = 0.0        # requests/s over all processes; 0: closed loop, as fast as answered
    connections: int = 8     # per process
    key: str = ""
    tag: str = ""
    base: int = 0            # first event number of the phase
    zones: tuple = ()
    tokens: tuple = ()
    start_at: float = 0.0    # wall clock, so all processes start together
    process: int = 0
    processes: int = 1


class Connection:
    """A keep-alive connection that reconnects when the server closed it (sync workers close after
    every answer; gthread ones after their keep-alive timeout)."""

    def __init__(self, port: int):
        self.port, self.http = port, None

    def request(self, method: str, path: str, body=None, headers=None):
        for attempt in range(2):
            reused = self.http is not None and self.http.sock is not None
            if self.http is None:
                self.http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.http.request(method, path, body=body, headers=headers or {})
                response = self.http.getresponse()
                return response.status, response.headers, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.http.close()
                if not reused or attempt:
                    raise

    def close(self):
        if self.http is not None:
            self.http.close()


def _post_events(conn, load, body):
    return conn.request("POST", "/api/v1/events", json.dumps(body).encode(),
                        {"Authorization": f"Bearer {load.key}", "Content-Type": "application/json"})


def _events(load: Load, g: int, count: int) -> list[dict]:
    now = datetime.now(timezone.utc)
    return [event(load.tag, load.base + g * count + k, list(load.zones), now) for k in range(count)]


INPUT = re.compile(r"<(input|textarea)\b([^>]*)>")
ATTR = re.compile(r'([\w-]+)="([^"]*)"')


def answers_for(html: str, r: random.Random) -> dict:
    """Valid answers for the questions on a survey page, with its CSRF token: a choice for each
    radio group, sometimes a comment."""
    choices, form = {}, {}
    for tag, attrs in INPUT.findall(html):
        a = dict(ATTR.findall(attrs))
        if tag == "textarea":
            form[a["name"]] = r.choice(COMMENTS)
        elif a.get("type") == "radio":
            choices.setdefault(a["name"], []).append(a["value"])
        elif a.get("name") == "csrf_token":
            form["csrf_token"] = a["value"]
    form.update({name: r.choice(values) for name, values in choices.items()})
    return form


def one_request(conn: Connection, load: Load, g: int, t0: float) -> list[tuple]:
    """Send request number g of the phase; samples (name, status, ms from t0, end time, body
    excerpt on error). t0 is the scheduled time in an open loop."""
    def sample(name, status, body, start):
        end = time.perf_counter()
        return (name, status, (end - start) * 1000, end, "" if status < 400 else body[:200].decode(errors="replace"))

    if load.kind == "healthz":
        status, _, body = conn.request("GET", "/healthz")
    elif load.kind == "event":
        status, _, body = _post_events(conn, load, _events(load, g, 1)[0])
    elif load.kind == "batch":
        status, _, body = _post_events(conn, load, _events(load, g, BATCH))
    elif load.kind == "page":
        status, _, body = conn.request("GET", f"/s/{load.tokens[g % len(load.tokens)]}")
    else:  # answer: the form (for its CSRF token and session cookie), then the answers
        token = load.tokens[g]
        status, headers, body = conn.request("GET", f"/s/{token}")
        got = sample("form", status, body, t0)
        if status != 200:
            return [got]
        cookie = "; ".join(c.split(";", 1)[0] for c in headers.get_all("Set-Cookie") or [])
        form = answers_for(body.decode(), random.Random(g))
        t1 = time.perf_counter()
        status, _, body = conn.request("POST", f"/s/{token}", urlencode(form).encode(),
                                       {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
        # Only a redirect to the thank-you page means the answers were taken.
        status = status if status != 200 else 422
        return [got, sample("submit", status, body, t1), sample("answer", status, body, t0)]
    return [sample(load.kind, status, body, t0)]


def drive(load: Load) -> dict:
    """Run one process's share of a phase: in an open loop, requests g = process, process +
    processes, ... each at start + g / rate; in a closed loop, as fast as answered."""
    start = time.perf_counter() + (load.start_at - time.time())
    end = start + load.duration
    # An overloaded server could keep an open loop's backlog going for ever: what is not sent by
    # then counts as an error.
    give_up = start + 3 * load.duration + 10
    limit = len(load.tokens) if load.kind == "answer" else math.inf
    counter = itertools.count()
    samples: list[tuple] = []
    cpu = time.process_time()

    def worker():
        conn = Connection(load.port)
        time.sleep(max(0.0, start - time.perf_counter()))
        while True:
            g = load.process + next(counter) * load.processes
            t0 = start + g / load.rate if load.rate else time.perf_counter()
            if t0 >= end or g >= limit:
                break
            time.sleep(max(0.0, t0 - time.perf_counter()))
            if time.perf_counter() > give_up:
                samples.append((load.kind, -1, math.nan, time.perf_counter(), "not sent: the server fell too far behind"))
                continue
            try:
                samples.extend(one_request(conn, load, g, t0))
            except OSError as exc:  # refused, reset, timed out: an error like any non-2xx
                now = time.perf_counter()
                samples.append((load.kind, 0, (now - t0) * 1000, now, repr(exc)))
                conn.close()
                conn = Connection(load.port)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(load.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # End times relative to the common start, so the parent can merge the processes.
    return {"samples": [(n, s, ms, e - start, err) for n, s, ms, e, err in samples],
            "cpu": time.process_time() - cpu}


# -- The server and the phases -------------------------------------------------------------------

@dataclass
class Result:
    name: str
    kind: str
    rate: float                          # offered requests/s, 0 for closed loop
    samples: dict = field(default_factory=dict)   # name -> (count ok, rate ok/s, p50, p99)
    errors: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    elapsed: float = 0.0
    cpu: dict = field(default_factory=dict)

    def stat(self, name=None):
        return self.samples[name or self.kind]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


def cpu_ticks(master: int) -> int:
    """CPU ticks of gunicorn: the master, its live workers, and the workers it has reaped (one
    that timed out and was replaced still counts)."""
    total = 0
    for i, pid in enumerate(children(master)):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += sum(int(v) for v in fields[11:15 if i == 0 else 13])  # utime, stime (+ cutime, cstime)
    return total


def machine_ticks() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)  # busy (less idle and iowait), all


def wait_quiet(limit: float, busy_cores: float = 0.25) -> None:
    """Wait up to `limit` seconds for the machine to idle (under `busy_cores` busy over 5 s): other
    programs on these cores would be measured as our latency."""
    deadline = time.monotonic() + limit
    while True:
        busy0, all0 = machine_ticks()
        time.sleep(5)
        busy1, all1 = machine_ticks()
        busy = (busy1 - busy0) / (all1 - all0 or 1) * CORES
        if busy < busy_cores or time.monotonic() > deadline:
            print(f"machine busy {busy:.2f} cores before starting" + ("" if busy < busy_cores else
                  f" (still busy after waiting {limit:g} s: other programs share the cores)"), flush=True)
            return


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread that just ended
            pass
    return [pid, *out]


class Server:
    """gunicorn with `spec` (sync:W or gthread:W:T) on a free port, stopped on exit."""

    def __init__(self, spec: str, env: dict, log: Path):
        kind, workers, *threads = spec.split(":")
        self.spec, self.workers, self.threads = spec, int(workers), int(threads[0]) if threads else 1
        self.port = free_port()
        extra = ["-k", "gthread", "--threads", str(self.threads)] if kind == "gthread" else ["-k", "sync"]
        self.log = log
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "feedback_service.wsgi:app", "-b", f"127.0.0.1:{self.port}", "-w", workers, *extra,
             "--no-control-socket"],
            cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300) -> None:
        """Until /healthz answers quickly three rounds running, each round as many requests at once as
        the server has threads: every worker has imported the application (seconds each, more when
        the workers boot together on two cores)."""
        deadline, good = time.monotonic() + timeout, 0
        while good < 3:
            if self.proc.poll() is not None:
                raise SystemExit(f"gunicorn exited:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"gunicorn not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")
            answers: list[bool] = []

            def probe(answers=answers):
                t0 = time.perf_counter()
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    conn.request("GET", "/healthz")
                    ok = conn.getresponse().status == 200
                    conn.close()
                except OSError:
                    ok = False
                answers.append(ok and time.perf_counter() - t0 < 0.5)
            probes = [threading.Thread(target=probe) for _ in range(self.workers * self.threads)]
            for t in probes:
                t.start()
            for t in probes:
                t.join()
            good = good + 1 if all(answers) else 0
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DatabaseCpu:
    """CPU ticks of the PostgreSQL backends serving our scratch database (same machine), so that
    what is left of the machine's busy time is other programs'; nothing for SQLite, whose work is
    done inside gunicorn."""

    def __init__(self, url: str):
        self.conn = None
        if url.startswith("postgresql"):
            import psycopg
            self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def ticks(self) -> dict[int, int]:
        if self.conn is None:
            return {}
        pids = [r[0] for r in self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        out = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[pid] = int(fields[11]) + int(fields[12])
            except (FileNotFoundError, ProcessLookupError):
                pass
        return out

    def close(self):
        if self.conn is not None:
            self.conn.close()


def run_phase(pool, server: Server, name: str, load: Load, processes: int, database: DatabaseCpu) -> Result:
    # Requests a client gave up on are still worked off by the server: none may spill into this phase.
    server.wait_ready(timeout=900)
    start_at = time.time() + 0.5
    loads = [replace(load, port=server.port, start_at=start_at, process=p, processes=processes) for p in range(processes)]
    busy0, all0, gun0, db0 = *machine_ticks(), cpu_ticks(server.proc.pid), database.ticks()
    parts = pool.map(drive, loads)
    busy1, all1, gun1, db1 = *machine_ticks(), cpu_ticks(server.proc.pid), database.ticks()
    samples = [s for part in parts for s in part["samples"]]
    elapsed = max((s[3] for s in samples), default=load.duration)
    result = Result(name, load.kind, load.rate, elapsed=elapsed)
    tick = os.sysconf("SC_CLK_TCK")
    wall = (all1 - all0) / CORES / tick or 1
    result.cpu = {"machine": (busy1 - busy0) / (all1 - all0 or 1) * CORES, "gunicorn": (gun1 - gun0) / tick / wall,
                  "client": sum(p["cpu"] for p in parts) / wall}
    # A backend that ended during the phase is not counted: the pool keeps its connections.
    result.cpu["database"] = sum(t - db0.get(pid, 0) for pid, t in db1.items()) / tick / wall
    result.cpu["rest"] = result.cpu["machine"] - result.cpu["gunicorn"] - result.cpu["client"] - result.cpu["database"]
    # Per request, the server's cost holds up better than its speed when other programs share the cores.
    requests = sum(1 for s in samples if s[0] != "answer" and s[1] > 0)
    result.cpu["per_request_ms"] = (gun1 - gun0) / tick * 1000 / (requests or 1)
    for sample_name in dict.fromkeys(s[0] for s in samples):
        ok = [s[2] for s in samples if s[0] == sample_name and 0 < s[1] < 400]
        result.samples[sample_name] = (len(ok), len(ok) / elapsed, percentile(ok, 50), percentile(ok, 99))
    for s in samples:
        if not 0 < s[1] < 400 and s[0] != "answer":
            result.errors[s[1]] += 1
            result.examples.setdefault(s[1], s[4])
    if not samples:
        result.errors[-1] += 1
        result.examples[-1] = "no request completed"
    print_result(result)
    return result


def print_result(r: Result) -> None:
    loop = f"open loop at {r.rate:g} requests/s" if r.rate else "closed loop"
    print(f"  {r.name} ({loop}, {r.elapsed:.1f} s):")
    for name, (n, rate, p50, p99) in r.samples.items():
        per = f" = {rate * BATCH:,.0f} events/s" if name == "batch" else (" = answers/s" if name == "answer" else "")
        print(f"    {name:<7} {n:6d} ok, {rate:8.1f}/s{per}; p50 {p50:7.1f} ms, p99 {p99:7.1f} ms")
    print(f"    errors: {sum(r.errors.values())}" + "".join(f"; {status or 'connection'} x{count}: {r.examples[status]!r}"
                                                   for status, count in r.errors.items()))
    print(f"    CPU in cores of {CORES}: machine {r.cpu['machine']:.2f}, gunicorn {r.cpu['gunicorn']:.2f}, "
          f"PostgreSQL {r.cpu['database']:.2f}, load client {r.cpu['client']:.2f}, other programs {r.cpu['rest']:.2f}; "
          f"gunicorn CPU {r.cpu['per_request_ms']:.1f} ms a request", flush=True)


def cli(env: dict, *args: str, timeout: float = 600) -> str:
    done = subprocess.run([str(BIN / "feedback-service"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode:
        raise SystemExit(f"feedback-service {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def survey_links(env: dict, server: Server, key: str, count: int, zones: list[str], outbox: Path) -> list[str]:
    """Invitations with real links: `count` bookings two hours ago (due now) through the API, sent by
    `feedback-service jobs run-once` through the console channel; their tokens, from its outbox."""
    now = datetime.now(timezone.utc)
    conn = Connection(server.port)
    load = Load("batch", server.port, 0, key=key)
    t0 = time.perf_counter()
    for i in range(0, count, 500):
        body = [event("due", 9 * PHASE_SPAN + n, zones, now, kind="due") for n in range(i, min(count, i + 500))]
        status, _, text = _post_events(conn, load, body)
        if status != 202:
            raise SystemExit(f"posting survey events: {status} {text[:300]!r}")
    conn.close()
    posted = time.perf_counter() - t0
    t0 = time.perf_counter()
    # One run-once per core: workers claim due invitations safely side by side.
    runs = [subprocess.Popen([str(BIN / "feedback-service"), "jobs", "run-once"], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(CORES)]
    reports = []
    for run in runs:
        out, err = run.communicate(timeout=1200)
        if run.returncode:
            raise SystemExit(f"feedback-service jobs run-once failed:\n{err[-3000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1])["dispatch"])
    sent = time.perf_counter() - t0
    urls = [json.loads(line)["survey_url"] for line in outbox.read_text().splitlines() if line.strip()]
    print(f"  survey links: {count} due bookings posted in {posted:.1f} s; {CORES} x jobs run-once in {sent:.1f} s, "
          f"dispatch {reports}", flush=True)
    if len(urls) != count:
        raise SystemExit(f"{len(urls)} messages for {count} invitations: {reports}")
    return [url.rsplit("/", 1)[-1] for url in urls]


def run_server(args, spec: str, url: str, tmp: Path, pool) -> tuple[list[Result], dict]:
    outbox = tmp / "outbox.jsonl"
    # The console channel for both media, paced far above these volumes: the links are the point.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SENDGRID_", "FEEDBACK_"))}
    env.update(FEEDBACK_DATABASE_URL=url, FEEDBACK_SECRET_KEY="bench-" + os.urandom(8).hex(),
               FEEDBACK_CONSOLE_OUTBOX=str(outbox), FEEDBACK_SMS_CHANNEL="console", FEEDBACK_EMAIL_CHANNEL="console",
               FEEDBACK_SMS_RATE_PER_SECOND="100000", FEEDBACK_EMAIL_RATE_PER_SECOND="100000",
               FEEDBACK_DISPATCH_BATCH_SIZE="500")
    cli(env, "init")
    key = cli(env, "api-key", "create", "bench").strip().splitlines()[0]
    server = Server(spec, env, tmp / "gunicorn.log")
    env["FEEDBACK_BASE_URL"] = f"http://127.0.0.1:{server.port}"
    processes, zones = args.clients, tuple(daytime_zones(datetime.now(timezone.utc)))
    closed = dict(duration=args.closed_duration, connections=args.connections)
    opened = dict(duration=args.duration, connections=args.open_connections)
    results = []
    database = DatabaseCpu(url)
    try:
        server.wait_ready()
        print(f"\n## {spec} on {'PostgreSQL' if url.startswith('postgresql') else 'SQLite'}, port {server.port}", flush=True)

        def phase(name, kind, n, **kw):
            load = Load(kind, server.port, key=key, tag=f"b{n}", base=n * PHASE_SPAN, zones=zones, **kw)
            return run_phase(pool, server, name, load, processes, database)

        # Every worker imports its modules and opens its connections before anything is timed.
        phase("warm-up", "event", 0, duration=3, connections=4)
        if args.only in (None, "events"):
            results.append(phase("/healthz at full speed", "healthz", 1, **closed))
            results.append(phase("events, 1 per request, at full speed", "event", 2, **closed))
            results.append(phase(f"events, {BATCH} per request, at {args.events_rate:g} events/s", "batch", 3,
                                 rate=args.events_rate / BATCH, **opened))
            results.append(phase(f"events, {BATCH} per request, at full speed", "batch", 4,
                                 **{**closed, "connections": max(1, args.connections // 4)}))
        if args.only in (None, "survey"):
            pages, answers = int(args.page_rate * args.duration), int(args.answer_rate * args.duration)
            tokens = survey_links(env, server, key, pages + answers, list(zones), outbox)
            results.append(phase(f"survey page, first opening, at {args.page_rate:g} pages/s", "page", 5,
                                 rate=args.page_rate, tokens=tuple(tokens[:pages]), **opened))
            results.append(phase(f"survey answers at {args.answer_rate:g}/s (form + answers: "
                                 f"{2 * args.answer_rate:g} requests/s)", "answer", 6, rate=args.answer_rate,
                                 tokens=tuple(tokens[pages:]), **opened))
            results.append(phase("survey page, opened again, at full speed", "page", 7,
                                 tokens=tuple(tokens[:pages]), **closed))
    finally:
        server.stop()
        database.close()
    return results, {"spec": spec}


# -- Report ----------------------------------------------------------------------------------------

def machine(url: str | None) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import gunicorn
    parts = [f"{cpu}, {CORES} cores (load average {Path('/proc/loadavg').read_text().split()[1]} over the last 5 min)",
             f"Python {platform.python_version()}", f"gunicorn {gunicorn.__version__}"]
    if url:
        import psycopg
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            parts.append("PostgreSQL " + conn.execute("SHOW server_version").fetchone()[0].split()[0] + " (same machine)")
    else:
        parts.append(f"SQLite {sqlite3.sqlite_version}")
    return "; ".join(parts)


def table(results: list[Result], args) -> list[str]:
    rows = []

    def ms(v):
        return f"{v:,.0f} ms" if v >= 10 else f"{v:.1f} ms"

    def errs(r):
        return f", {sum(r.errors.values())} errors" if r.errors else ""

    by = {r.kind + ("-open" if r.rate else ""): r for r in results}
    if "healthz" in by:
        h, single, batch, fixed = by["healthz"], by["event"], by["batch"], by["batch-open"]
        _, rate, p50, p99 = fixed.stat()
        events = rate * BATCH
        rows.append((f"events in batches of {BATCH} at {args.events_rate:,.0f} events/s: p99",
                     "< 250 ms", f"{ms(p99)} (p50 {ms(p50)}){errs(fixed)}", p99 < 250 and not fixed.errors))
        rows.append((f"events in batches of {BATCH}: rate sustained", f"{args.events_rate:,.0f} events/s",
                     f"{events:,.0f} events/s", events >= 0.98 * args.events_rate))
        _, brate, b50, b99 = batch.stat()
        rows.append((f"events in batches of {BATCH} at full speed", "-",
                     f"{brate * BATCH:,.0f} events/s (p50 {ms(b50)}, p99 {ms(b99)}){errs(batch)}", None))
        _, srate, s50, s99 = single.stat()
        rows.append(("events one per request at full speed", "-",
                     f"{srate:,.0f} events/s (p50 {ms(s50)}, p99 {ms(s99)}){errs(single)}", None))
        _, hrate, h50, h99 = h.stat()
        rows.append(("/healthz at full speed (the ceiling)", "-", f"{hrate:,.0f} requests/s (p50 {ms(h50)}, p99 {ms(h99)})",
                     None))
        rows.append(("events API / healthz, requests/s", "-",
                     f"single {srate / hrate:.1%}; batches {brate / hrate:.1%} ({brate * BATCH / hrate:.1f} events "
                     f"per /healthz request)", None))
    if "page-open" in by:
        page, answer, again = by["page-open"], by["answer-open"], by["page"]
        _, rate, p50, p99 = page.stat()
        rows.append((f"survey page (first opening) at {args.page_rate:g}/s: p99", "< 100 ms",
                     f"{ms(p99)} (p50 {ms(p50)}, {rate:,.0f} pages/s){errs(page)}", p99 < 100 and not page.errors))
        form, submit, whole = answer.stat("form"), answer.stat("submit"), answer.stat("answer")
        p99s = max(form[3], submit[3])
        rows.append((f"survey answers at {args.answer_rate:g}/s ({2 * args.answer_rate:g} requests/s): p99 per request",
                     "< 100 ms", f"form {ms(form[3])}, submit {ms(submit[3])} (p50 {ms(form[2])}, {ms(submit[2])}; "
                     f"{whole[1]:,.0f} answers/s){errs(answer)}", p99s < 100 and not answer.errors))
        _, arate, a50, a99 = again.stat()
        rows.append(("survey page (opened again) at full speed", "-",
                     f"{arate:,.0f} pages/s (p50 {ms(a50)}, p99 {ms(a99)}){errs(again)}", None))
    return [f"| {a} | {b} | {c} | {'-' if d is None else 'yes' if d else '**no**'} |" for a, b, c, d in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL; default SQLite")
    parser.add_argument("--server", action="append",
                        help=f"sync:WORKERS or gthread:WORKERS:THREADS, repeatable (default sync:{2 * CORES + 1} "
                             f"and gthread:{2 * CORES + 1}:4)")
    parser.add_argument("--only", choices=("events", "survey"))
    parser.add_argument("--duration", type=float, default=20, help="seconds of each fixed-rate run")
    parser.add_argument("--closed-duration", type=float, default=10, help="seconds of each full-speed run")
    parser.add_argument("--events-rate", type=float, default=1000)
    parser.add_argument("--page-rate", type=float, default=200)
    parser.add_argument("--answer-rate", type=float, default=100)
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="before each server, wait up to this long for other programs to leave the cores idle")
    parser.add_argument("--clients", type=int, default=2, help="load-generating processes")
    parser.add_argument("--connections", type=int, default=12, help="per client process, full-speed runs")
    parser.add_argument("--open-connections", type=int, default=32, help="per client process, fixed-rate runs")
    args = parser.parse_args()
    servers = args.server or [f"sync:{2 * CORES + 1}", f"gthread:{2 * CORES + 1}:4"]

    pool = multiprocessing.get_context("spawn").Pool(args.clients)
    tables = {}
    try:
        pool.map(time.sleep, [0] * args.clients)  # started before any phase is timed
        for spec in servers:
            if args.wait_quiet:
                wait_quiet(args.wait_quiet)
            with tempfile.TemporaryDirectory() as tmp, \
                    scratch_database(args.database_url, Path(tmp), prefix="feedback_bench") as url:
                results, _ = run_server(args, spec, url, Path(tmp), pool)
                tables[spec] = table(results, args)
                about = machine(url if args.database_url else None)
    finally:
        pool.close()
        pool.join()

    print(f"\nMachine: {about}; load from {args.clients} client processes on the same machine.\n")
    for spec, rows in tables.items():
        kind, workers, *threads = spec.split(":")
        print(f"gunicorn {kind}, {workers} workers" + (f" x {threads[0]} threads" if threads else "") + ":\n")
        print("| figure | target | measured | met? |\n|---|---|---|---|")
        print("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
