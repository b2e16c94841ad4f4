"""Dispatch throughput through the real Twilio SDK against a fake Twilio API that answers every
request after a fixed latency, at a configured send rate.

    .venv/bin/python bench/providers.py [--messages 5000] [--rate 100] [--latency 0.1] [--database-url URL]

Prints messages and SMS segments per second (the rate counts segments, as carriers do), how close
that is to the configured rate, how many requests were in flight at once, and checks that every
invitation reached the fake exactly once. The fake runs in a
process of its own so that it does not share this one's interpreter lock.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import phonenumbers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from feedback_service import create_app  # noqa: E402
from feedback_service.channels.base import sms_segments  # noqa: E402
from feedback_service.extensions import db  # noqa: E402
from feedback_service.scheduling.dispatch import dispatch_due  # noqa: E402
from feedback_service.scheduling.rules import SendPolicy  # noqa: E402
from tests.scratch import scratch_database  # noqa: E402


def phones(n: int):
    """n distinct valid US mobile-format numbers (text limits count per handset)."""
    i = 0
    while n:
        number = f"+1212{200 + i // 10000:03d}{i % 10000:04d}"
        i += 1
        if phonenumbers.is_valid_number(phonenumbers.parse(number)):
            n -= 1
            yield number


def daytime_zone(now: datetime) -> str:
    offset = 12 - now.hour
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=100.0, help="FEEDBACK_SMS_RATE_PER_SECOND")
    parser.add_argument("--latency", type=float, default=0.1, help="the fake API's answer time, seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="FEEDBACK_SEND_CONCURRENCY")
    parser.add_argument("--batch", type=int, default=100, help="FEEDBACK_DISPATCH_BATCH_SIZE")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    fake = subprocess.Popen([sys.executable, "-m", "tests.fake_providers", str(args.latency)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    fake_url = fake.stdout.readline().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp, \
                scratch_database(args.database_url, Path(tmp), prefix="feedback_bench") as url:
            elapsed, outcomes = run(args, url, fake_url)
        stats = json.load(urllib.request.urlopen(f"{fake_url}/_stats"))
    finally:
        fake.terminate()
        fake.wait()

    sent = outcomes.get("sent", 0)
    # Every text here has the same shape (same name, same link length), so one tells the segments.
    segments = sms_segments(stats["sample_body"])
    achieved = sent * segments / elapsed
    print(f"backend: {'PostgreSQL' if args.database_url else 'SQLite'}; {args.messages} invitations; "
          f"fake Twilio latency {args.latency * 1000:.0f} ms; concurrency {args.concurrency}")
    print(f"outcomes: {outcomes}; requests at the fake: {stats['posts']}; most in flight at once: "
          f"{stats['max_in_flight']}; {segments} segment(s) a text")
    print(f"throughput: {sent / elapsed:.1f} messages/s = {achieved:.1f} segments/s against a configured "
          f"{args.rate:g}/s = {achieved / args.rate:.1%} of the rate")
    if sent != args.messages or stats["posts"] != args.messages:
        sys.exit("FAILED: not every invitation was sent exactly once")


def run(args, url: str, fake_url: str) -> tuple[float, dict]:
    app = create_app({
        "FEEDBACK_DATABASE_URL": url, "FEEDBACK_SECRET_KEY": "bench", "FEEDBACK_BASE_URL": "https://survey.example",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "bench", "TWILIO_MESSAGING_SERVICE_SID": "MG" + "0" * 32,
        "TWILIO_API_BASE_URL": fake_url, "FEEDBACK_SMS_RATE_PER_SECOND": args.rate,
        "FEEDBACK_SEND_CONCURRENCY": args.concurrency,
    })
    runner = app.test_cli_runner()
    assert runner.invoke(args=["init"]).exit_code == 0
    key = runner.invoke(args=["api-key", "create", "bench"]).stdout.splitlines()[0]
    client = app.test_client()
    now = datetime.now(timezone.utc)
    zone = daytime_zone(now)
    events = [{"external_id": f"bench-{i}", "type": "discharge", "occurred_at": (now - timedelta(days=3)).isoformat(),
               "patient": {"id": f"bench-patient-{i}", "first_name": "Ana", "phone": phone, "timezone": zone,
                           "consent_sms": True}}
              for i, phone in enumerate(phones(args.messages))]
    for i in range(0, len(events), 500):
        r = client.post("/api/v1/events", json=events[i:i + 500], headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 202, r.get_json()

    with app.app_context():
        policy = SendPolicy.from_config(app.config)
        start = time.perf_counter()
        # As the dispatch job does: batch after batch until nothing is due.
        outcomes = dispatch_due(policy, "bench", batch_size=args.batch, until_idle=True).outcomes
        elapsed = time.perf_counter() - start
        db.engine.dispose()
    return elapsed, outcomes


if __name__ == "__main__":
    main()
