"""Throughput of the loop's hot paths on a fresh database: event intake, dispatch, scores read.

    .venv/bin/python bench/loop.py [--events 5000] [--database-url postgresql://postgres@127.0.0.1:5432/test]

Prints events accepted per second (batches of 500 through the HTTP API, in-process test client),
invitations dispatched per second through the console channel, and the scores API's latency.
On PostgreSQL it creates and drops a database of its own next to the one named.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from feedback_service import create_app  # noqa: E402
from feedback_service.extensions import db  # noqa: E402
from feedback_service.scheduling.dispatch import dispatch_due  # noqa: E402
from feedback_service.scheduling.rules import SendPolicy  # noqa: E402
from tests.scratch import scratch_database  # noqa: E402


def event(i: int, when: datetime) -> dict:
    # Noon UTC in a zone where that is daytime, so quiet hours never hold a send.
    return {"external_id": f"bench-{i}", "type": "discharge", "occurred_at": when.isoformat(),
            "patient": {"id": f"bench-patient-{i}", "first_name": "Ana", "phone": "+14155550123",
                        "email": f"p{i}@example.org", "timezone": "Etc/UTC", "consent_sms": True,
                        "consent_email": True}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_database(args.database_url, Path(tmp), prefix="feedback_bench") as url:
        app = create_app({"FEEDBACK_DATABASE_URL": url, "FEEDBACK_CONSOLE_OUTBOX": str(Path(tmp) / "outbox.jsonl"),
                          "FEEDBACK_DISPATCH_BATCH_SIZE": 500, "FEEDBACK_SECRET_KEY": "bench"})
        runner = app.test_cli_runner()
        assert runner.invoke(args=["init"]).exit_code == 0
        key = runner.invoke(args=["api-key", "create", "bench", "--scope", "events", "--scope", "scores"]).stdout.splitlines()[0]
        client = app.test_client()
        headers = {"Authorization": f"Bearer {key}"}
        # Discharges 3 days ago at 10:00 UTC: due (48 h) and inside the send window.
        when = (datetime.now(timezone.utc) - timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)
        events = [event(i, when) for i in range(args.events)]

        start = time.perf_counter()
        for i in range(0, len(events), 500):
            r = client.post("/api/v1/events", json=events[i:i + 500], headers=headers)
            assert r.status_code == 202, r.get_json()
        intake = time.perf_counter() - start

        now = when + timedelta(days=2, hours=1)
        start = time.perf_counter()
        with app.app_context():
            policy = SendPolicy.from_config(app.config)
            sent = 0
            while (report := dispatch_due(policy, "bench", now=now, batch_size=500)).claimed:
                sent += report.outcomes.get("sent", 0)
        dispatch = time.perf_counter() - start
        assert sent == args.events, sent

        latencies = []
        for _ in range(50):
            t0 = time.perf_counter()
            assert client.get("/api/v1/journeys/general-care/scores", headers=headers).status_code == 200
            latencies.append((time.perf_counter() - t0) * 1000)
        with app.app_context():
            db.engine.dispose()

    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(f"backend: {backend}; events: {args.events}")
    print(f"intake: {args.events / intake:,.0f} events/s (batches of 500, each event scheduled in the same transaction)")
    print(f"dispatch: {sent / dispatch:,.0f} invitations/s through the console channel (one commit per send)")
    print(f"scores API: median {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms over 50 reads")


if __name__ == "__main__":
    main()
