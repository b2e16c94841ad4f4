"""Scheduled work. Each module is one job: NAME, interval(app) in seconds, and a thin run(app)."""
from __future__ import annotations

from datetime import datetime, timezone

from . import alerts, dispatch, expire, intake, recover, remind

# Intake first: a message stored before a restart may schedule an invitation that is due now.
JOBS = (intake, recover, dispatch, remind, expire, alerts)


def register(scheduler, app) -> None:
    """Add every job to an APScheduler scheduler as a short periodic tick, the first one now."""
    for job in JOBS:
        scheduler.add_job(job.run, "interval", seconds=job.interval(app), args=[app], id=job.NAME,
                          name=job.NAME, max_instances=1, coalesce=True, misfire_grace_time=30,
                          next_run_time=datetime.now(timezone.utc))


def run_all_once(app) -> dict:
    """Run every job once, in order; returns what each reported."""
    return {job.NAME: job.run(app) for job in JOBS}


def stop(app) -> None:
    """Ask the running jobs to wind down (the worker got SIGTERM): sends under way finish, claimed
    ones not yet started are given back, instead of the whole backlog being worked off first."""
    app.extensions["feedback_stopping"].set()
