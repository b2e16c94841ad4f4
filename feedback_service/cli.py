"""The feedback-service command: a Flask CLI group."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import FlaskGroup, routes_command, shell_command, with_appcontext
from werkzeug.serving import run_simple

from .config import project_path


def _create_app():
    from . import configure_logging, create_app
    app = create_app()
    configure_logging(app.config["FEEDBACK_LOG_LEVEL"])
    return app


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False, add_version_option=False)
def main():
    """Patient feedback tied to journey moments."""


main.add_command(shell_command)
main.add_command(routes_command)


def register_cli(app) -> None:
    """The app's commands; the feedback-service group (a FlaskGroup) finds them on app.cli."""
    for command in (init, surveys_group, user_group, api_key, jobs_group, invitations_group, events_group, mllp,
                    worker, run_command, demo, export_group, rollups_group):
        app.cli.add_command(command)


@click.command()
@with_appcontext
def init():
    """Create or upgrade the schema (Alembic), then load the journeys of the question-set library
    that the database does not have yet (`surveys import` updates the others)."""
    from flask_migrate import upgrade

    from .extensions import db
    from .journeys.library import LibraryError
    from .journeys.yaml_io import import_library

    upgrade()
    root = project_path(current_app.config["FEEDBACK_SURVEYS_DIR"])
    try:
        # Run at every start (README): what the workspace published since must not be undone.
        summary = import_library(root, only_new=True)
    except LibraryError as exc:
        db.session.rollback()
        raise click.ClickException("question-set library refused, nothing loaded:\n" + "\n".join(exc.errors))
    db.session.commit()
    click.echo(f"schema up to date; {summary['journeys']} journeys loaded from {root}, "
               f"{summary['published']} question-set versions published, {summary['kept']} already here kept")


@click.group("surveys")
def surveys_group():
    """The question-set library as YAML files: journeys, question sets, translations and rules."""


@surveys_group.command("import")
@click.argument("directory", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@with_appcontext
def surveys_import(directory):
    """Load DIR (journey folders, as in surveys/): all of it, or nothing if any file is refused."""
    from .extensions import db
    from .journeys.library import LibraryError
    from .journeys.yaml_io import import_library
    from .staff.services import record

    try:
        summary = import_library(directory)
    except LibraryError as exc:
        db.session.rollback()
        for error in exc.errors:
            click.echo(error, err=True)
        raise click.ClickException(f"{len(exc.errors)} errors in {directory}; nothing imported")
    record(None, "library.import", "library", None, {**summary, "from": str(directory)})  # as the workspace's
    db.session.commit()
    click.echo(f"{summary['journeys']} journeys imported from {directory}, "
               f"{summary['published']} question-set versions published")


@surveys_group.command("export")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@with_appcontext
def surveys_export(directory):
    """Write every journey and its published question sets to DIR, replacing it whole: DIR must be
    new, empty, or an earlier export. Drafts stay in the workspace."""
    from .journeys.library import LibraryError
    from .journeys.yaml_io import export_library

    try:
        written = export_library(directory)
    except LibraryError as exc:
        raise click.ClickException("\n".join(exc.errors))
    for path in written:
        click.echo(str(path))


@click.group("user")
def user_group():
    """Manage staff accounts (the first admin; admins manage the rest in the workspace)."""


@user_group.command("create")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(["admin", "designer", "manager"]))
@click.option("--password", help="The password [default: asked for, without echo].")
@with_appcontext
def user_create(email, role, password):
    """Create a staff account that signs in at /login."""
    from .extensions import db
    from .staff.services import StaffError, create_user

    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = create_user(email, role, password)
    except StaffError as exc:
        db.session.rollback()
        raise click.ClickException("; ".join(f"{k}: {v}" for k, v in exc.errors.items()))
    db.session.commit()
    click.echo(f"created {user.role} {user.email}; sign in at /login")


@click.group("api-key")
def api_key():
    """Manage API keys."""


@api_key.command("create")
@click.argument("name")
@click.option("--source", help="The sending system, for de-duplicating its events (default: NAME). "
                               "Give a rotated key its predecessor's source.")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(["events", "scores"]), default=["events"],
              show_default=True, help="What the key may do: send events in, read scores out (repeat for both).")
@with_appcontext
def api_key_create(name, source, scopes):
    """Create a key named NAME and print it once."""
    from sqlalchemy.exc import IntegrityError

    from .api.keys import create_api_key
    from .extensions import db

    try:
        _, key = create_api_key(name, source, scopes=tuple(scopes))
    except IntegrityError:
        db.session.rollback()
        raise click.ClickException(f"an API key named {name!r} exists already")
    click.echo(key)
    click.echo("Store this key now: only its hash is kept.", err=True)


@api_key.command("list")
@with_appcontext
def api_key_list():
    """List the keys: name, source, scopes, created, last used, revoked (never the key)."""
    from sqlalchemy import select

    from .api.models import ApiKey
    from .extensions import db

    def when(moment, missing="-"):
        return moment.strftime("%Y-%m-%d %H:%M") if moment else missing
    click.echo("name\tsource\tscopes\tprefix\tcreated\tlast used\trevoked")
    for row in db.session.scalars(select(ApiKey).order_by(ApiKey.created_at)):
        click.echo("\t".join([row.name, row.source, row.scopes, row.prefix, when(row.created_at),
                              when(row.last_used_at, "never"), when(row.revoked_at)]))


@api_key.command("revoke")
@click.argument("name")
@with_appcontext
def api_key_revoke(name):
    """Revoke the key named NAME."""
    from sqlalchemy import select

    from .api.keys import revoke_api_key
    from .api.models import ApiKey
    from .extensions import db

    row = db.session.scalar(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)))
    if row is None:
        raise click.ClickException(f"no live API key named {name!r}")
    revoke_api_key(row)
    click.echo(f"revoked {name}")


@click.group("invitations")
def invitations_group():
    """Invitations that need a person's decision."""


@invitations_group.command("in-doubt")
@with_appcontext
def invitations_in_doubt():
    """List invitations whose send may or may not have reached the patient (status unknown)."""
    from .scheduling.dispatch import in_doubt

    for inv in in_doubt():
        click.echo(f"{inv.id}\t{inv.channel}\thanded over {inv.handed_over_at:%Y-%m-%d %H:%M}Z\t{inv.last_error}")


@invitations_group.command("resend")
@click.argument("ids", nargs=-1, type=int, required=True)
@with_appcontext
def invitations_resend(ids):
    """Send invitations in doubt again, with a new link (the first one stops working). Only after
    the provider's own logs show the first message never went out."""
    from .scheduling.dispatch import resend_in_doubt

    click.echo(f"{resend_in_doubt(ids)} of {len(ids)} invitations queued again")


@click.group("events")
def events_group():
    """Journey events from hospital systems."""


@events_group.command("unmapped")
@click.option("--days", default=30, show_default=True, help="Look back this many days.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@with_appcontext
def events_unmapped(days, as_json):
    """Hospital events the mapping file places in no journey, grouped by the codes they carried,
    most frequent first: add routes for them to the mapping file (FEEDBACK_MAPPING_FILE)."""
    from .events.reports import unmapped_events

    groups = unmapped_events(days)
    for group in groups:
        if as_json:
            click.echo(json.dumps(group))
        else:
            codes = "  ".join(f"{k}={','.join(v)}" for k, v in group["codes"].items()) or "(no codes)"
            click.echo(f"{group['count']:>6}  {group['type']:<10} {group['source']:<20} {codes}"
                       f"  last {group['last_received_at']}  e.g. event {group['example_event_id']}")
    if not as_json:
        click.echo(f"{sum(g['count'] for g in groups)} unmapped events in the last {days} days", err=True)


@events_group.command("remap")
@click.option("--days", default=30, show_default=True, help="Look back this many days.")
@with_appcontext
def events_remap(days):
    """Route again the unmapped events of the last days, once the mapping file has routes for
    them: each one placed is surveyed by its trigger rule, unless too late or excluded."""
    from .events.intake import remap_unmapped

    counts = remap_unmapped(current_app.extensions["feedback_intake"], days)
    click.echo(f"{counts['placed']} events placed in a journey; {counts['still_unmapped']} still unmapped")


@events_group.command("retry")
@with_appcontext
def events_retry():
    """Process again the stored HL7 messages whose processing failed (after a fix)."""
    from sqlalchemy import update

    from .events.intake import process_pending
    from .events.models import HospitalMessage
    from .extensions import db

    # FHIR senders had their answer at once; only stored HL7 messages wait on us.
    again = db.session.execute(update(HospitalMessage).where(
        HospitalMessage.status == "failed", HospitalMessage.protocol == "hl7v2")
        .values(status="received", error=None, claimed_at=None)).rowcount
    db.session.commit()
    done = 0
    while count := process_pending(current_app.extensions["feedback_intake"]):
        done += count
    click.echo(f"{again} failed messages queued again; {done} processed")


@click.command()
@click.option("--port", default=2575, show_default=True, type=int)
@click.option("--host", default=None, help="Address to listen on [default: FEEDBACK_MLLP_HOST].")
@click.option("--source", default=None, help="Source of the patients and events [default: FEEDBACK_MLLP_SOURCE].")
@with_appcontext
def mllp(port, host, source):
    """Listen for HL7 v2 messages over MLLP; each is stored before it is acknowledged."""
    from .events.mllp import run

    config = current_app.config
    click.echo(f"MLLP listening on {host or config['FEEDBACK_MLLP_HOST']}:{port}", err=True)
    run(current_app._get_current_object(), host or config["FEEDBACK_MLLP_HOST"], port,
        source or config["FEEDBACK_MLLP_SOURCE"])


@click.group("export")
def export_group():
    """Reports out of the service."""


@export_group.command("map")
@click.argument("journey")
@click.option("--from", "start", metavar="YYYY-MM-DD", help="First day of the period (default: 90 days to --to).")
@click.option("--to", "end", metavar="YYYY-MM-DD", help="Last day of the period (default: today, UTC).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--interval", type=click.Choice(["week", "month"]), help="Also one map per week or month.")
@click.option("--stage")
@click.option("--touchpoint")
@click.option("--channel")
@click.option("--locale")
@click.option("--source", help="Event source.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="File (default: stdout).")
@with_appcontext
def export_map(journey, start, end, fmt, interval, stage, touchpoint, channel, locale, source, output):
    """Write the journey map of a period (the feed of GET /api/v1/journeys/JOURNEY/map), a period at
    a time, with a progress bar on stderr."""
    from sqlalchemy import select

    from .extensions import db
    from .insights.feed import csv_lines, feed, json_chunks, periods
    from .journeys.models import Journey
    from .rollups.filters import FilterError, parse_filters
    from .sqltypes import utcnow

    found = db.session.scalar(select(Journey).where(Journey.slug == journey))
    if found is None:
        raise click.BadParameter(f"no journey {journey!r}", param_hint="JOURNEY")
    args = {"from": start, "to": end, "stage": stage, "touchpoint": touchpoint, "channel": channel,
            "locale": locale, "source": source}
    try:
        filters = parse_filters(args, found, utcnow().date())
    except FilterError as exc:
        raise click.UsageError("; ".join(f"--{k}: {v}" for k, v in exc.errors.items())) from None
    min_n = current_app.config["FEEDBACK_MIN_REPORTING_N"]
    total = 1 + (len(periods(filters, interval)) if interval else 0)
    out = click.open_file(output or "-", "w", encoding="utf-8")
    with out, click.progressbar(length=total, label=f"{journey} {filters.start} to {filters.end}",
                                file=sys.stderr) as bar:
        def counted(docs):
            for doc in docs:
                yield doc
                bar.update(1)
        docs = counted(feed(found, filters, min_n, interval))
        for chunk in (csv_lines(docs) if fmt == "csv" else json_chunks(docs, interval)):
            out.write(chunk)
        if fmt == "json":
            out.write("\n")


@click.group("rollups")
def rollups_group():
    """The aggregates the dashboard and the feed read."""


@rollups_group.command("rebuild")
@with_appcontext
def rollups_rebuild():
    """Recompute every rollup and comment row from the raw invitations and answers, in one
    transaction (what the answers say, whatever happened to the increments)."""
    from sqlalchemy import func, select

    from .extensions import db
    from .responses.models import Response
    from .rollups.services import rebuild_rollups

    total = db.session.scalar(select(func.count(Response.id)))
    with click.progressbar(length=total, label="responses", file=sys.stderr) as bar:
        done = rebuild_rollups(progress=bar.update)
    click.echo(json.dumps(done))


@click.group("jobs")
def jobs_group():
    """Scheduled work."""


@jobs_group.command("run-once")
@with_appcontext
def jobs_run_once():
    """Run every scheduled job once, then exit."""
    import jobs

    click.echo(json.dumps(jobs.run_all_once(current_app._get_current_object())))


@click.command()
@with_appcontext
def worker():
    """Run the scheduler process (APScheduler): hospital-message intake, recovery, dispatch,
    reminders and expiry ticks."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    import jobs

    app = current_app._get_current_object()
    # APScheduler logs every tick at INFO; our jobs log what they did.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler = BlockingScheduler(timezone="UTC")
    jobs.register(scheduler, app)

    def _stop(signum, frame):
        # Sends under way finish, claimed ones not yet started go back to the queue: nothing is
        # cut mid-send, and a long backlog does not hold the shutdown up.
        jobs.stop(app)
        scheduler.shutdown(wait=True)

    signal.signal(signal.SIGTERM, _stop)
    click.echo("worker started", err=True)
    try:
        scheduler.start()
    except KeyboardInterrupt:
        pass


@click.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--with-worker", is_flag=True, help="Also start the worker, as a separate process.")
@with_appcontext
def run_command(host, port, with_worker):
    """Development server (use gunicorn in production)."""
    child = subprocess.Popen([sys.argv[0], "worker"]) if with_worker else None
    # SIGTERM must unwind through `finally` so the worker child is stopped with us.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        # No reloader: it would fork a second server, and the worker must stay a single process.
        run_simple(host, port, current_app._get_current_object(), threaded=True)
    finally:
        if child is not None:
            child.terminate()
            child.wait(timeout=30)


@click.command()
@click.option("--patients", default=400, show_default=True, help="Simulated patients.")
@with_appcontext
def demo(patients):
    """Seed the demo journey with realistic simulated events and answers."""
    from .demo import DemoRefused, demo_staff, seed_demo

    try:
        summary = seed_demo(patients=patients)
    except DemoRefused as exc:
        # Not an error: the README's start command runs `demo` every time, on a database that
        # may hold real events by then.
        click.echo(f"demo skipped: {exc}", err=True)
        return
    click.echo(json.dumps(summary))
    for email, password in demo_staff().items():
        click.echo(f"workspace: sign in at /login as {email} with password {password}", err=True)

