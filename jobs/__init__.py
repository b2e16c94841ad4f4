"""Scheduled work. Each module is one job: NAME, interval(app) in seconds, and a thin run(app)."""
from __future__ import annotations

from datetime import datetime, timezone

from feedback_service.scheduling.leadership import leadership

from . import alerts, dispatch, expire, intake, recover, remind, retention

# Intake first: a message stored before a restart may schedule an invitation that is due now.
JOBS = (intake, recover, dispatch, remind, expire, alerts, retention)
# Sweeps over whole tables run in one worker at a time; the others claim their rows one by one
# and are shared by every worker.
LEADER_ONLY = frozenset({intake.NAME, recover.NAME, expire.NAME, retention.NAME})
NOT_LEADER = "another worker leads"


def tick(job, app):
    """One run of a job, or NOT_LEADER when it is a sweep another worker is running."""
    if job.NAME not in LEADER_ONLY:
        return job.run(app)
    with app.app_context(), leadership(job.NAME) as leader:
        return job.run(app) if leader else NOT_LEADER


def register(scheduler, app) -> None:
    """Add every job to an APScheduler scheduler as a short periodic tick, the first one now."""
    for job in JOBS:
        scheduler.add_job(tick, "interval", seconds=job.interval(app), args=[job, app], id=job.NAME,
                          name=job.NAME, max_instances=1, coalesce=True, misfire_grace_time=30,
                          next_run_time=datetime.now(timezone.utc))


def run_all_once(app) -> dict:
    """Run every job once, in order; returns what each reported."""
    return {job.NAME: tick(job, app) for job in JOBS}


def stop(app) -> None:
    """Ask the running jobs to wind down (the worker got SIGTERM): sends under way finish, claimed
    ones not yet started are given back, instead of the whole backlog being worked off first."""
    app.extensions["feedback_stopping"].set()
