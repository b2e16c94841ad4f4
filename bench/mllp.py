"""MLLP intake throughput: HL7 v2 messages through `feedback-service mllp` (a process of its own,
as in production) over one connection and over ten, each sender waiting for every ACK before its
next message, as MLLP senders do.

    .venv/bin/python bench/mllp.py [--messages 10000] [--database-url URL]

Prints, per run: messages per second acknowledged (every ACK is sent only after its message is
committed), and messages per second stored as events (from the first send until the last message
has been turned into an event and its invitation scheduled).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.providers import phones  # noqa: E402
from tests.hospital import SIU_S12, fresh_hl7  # noqa: E402
from tests.mllp_client import MllpClient  # noqa: E402
from tests.scratch import scratch_database  # noqa: E402

CLI = str(Path(sys.executable).parent / "feedback-service")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def messages(run: str, count: int) -> list[str]:
    """Distinct bookings (own control id, patient, phone and appointment) from the real Epic
    SIU^S12, as if sent five minutes ago."""
    when = datetime.now(timezone.utc) - timedelta(minutes=5)
    return [fresh_hl7(SIU_S12, control_id=f"{run}-{i}", happened=when, PID_3=f"{run}M{i}^^^MRN^MRN",
                      PID_7="19800101", PID_13=f"{number}^PRN^CP~^NET^Internet^p{i}@example.org",
                      SCH_2=f"{run}A{i}")
            for i, number in enumerate(phones(count))]


def send_all(port: int, batches: list[list[str]], window: int) -> float:
    """Send each batch over its own connection, all at once, with up to `window` messages awaiting
    their ACK (1: each sender waits for every ACK); seconds until the last ACK."""
    errors: list[str] = []

    def sender(batch):
        with MllpClient(port, timeout=60) as client:
            sent = acked = 0
            while acked < len(batch):
                while sent < len(batch) and sent - acked < window:
                    client.send(batch[sent])
                    sent += 1
                answer = client.read_ack()
                acked += 1
                if "MSA|AA|" not in answer:
                    errors.append(answer)
    threads = [threading.Thread(target=sender, args=(b,)) for b in batches]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} messages not acknowledged, e.g. {errors[0]!r}")
    return time.perf_counter() - start


def wait_events(engine, source: str, count: int, timeout: float = 600) -> None:
    """Until every message has been processed; then each must have made its own event."""
    deadline = time.monotonic() + timeout
    query = text("SELECT count(*) FROM hospital_messages WHERE source = :s AND status = 'processed'")
    while True:
        with engine.connect() as conn:
            done = conn.execute(query, {"s": source}).scalar()
        if done >= count:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {done} of {count} messages processed in {timeout} s")
        time.sleep(0.02)
    with engine.connect() as conn:
        events = conn.execute(text("SELECT count(*) FROM events WHERE source = :s"), {"s": source}).scalar()
    if events != count:
        raise SystemExit(f"{count} messages made {events} events")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL; default SQLite")
    parser.add_argument("--window", type=int, default=1,
                        help="messages a sender may have awaiting their ACK (MLLP senders usually wait: 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            scratch_database(args.database_url, Path(tmp), prefix="feedback_bench") as url:
        env = {**os.environ, "FEEDBACK_DATABASE_URL": url, "FEEDBACK_SECRET_KEY": "bench",
               "FEEDBACK_LOG_LEVEL": "WARNING", "FEEDBACK_CONSOLE_OUTBOX": str(Path(tmp) / "outbox.jsonl")}
        subprocess.run([CLI, "init"], env=env, check=True, capture_output=True)
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        print(f"{args.messages} SIU^S12 messages per run, database {engine.dialect.name}, "
              f"up to {args.window} awaiting an ACK per connection")
        for connections in (1, 10):
            port, source = free_port(), f"bench-{connections}"
            server = subprocess.Popen([CLI, "mllp", "--port", str(port), "--source", source], env=env,
                                      stderr=subprocess.DEVNULL)
            try:
                for _ in range(100):
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                batch = messages(source, args.messages)
                per = len(batch) // connections
                start = time.perf_counter()
                acked = send_all(port, [batch[i * per:(i + 1) * per] for i in range(connections)], args.window)
                wait_events(engine, source, per * connections)
                stored = time.perf_counter() - start
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(60)
            n = per * connections
            print(f"{connections:>2} connection(s): {n / acked:7.0f} messages/s acknowledged "
                  f"({acked:.1f} s), {n / stored:7.0f} messages/s stored as events ({stored:.1f} s)")
        engine.dispose()


if __name__ == "__main__":
    main()
