"""Patient feedback tied to journey moments."""
from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path

from flask import Flask, jsonify, render_template, request
from sqlalchemy import event, text
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from .config import PROJECT_ROOT, load_provider_settings, load_settings, project_path
from .extensions import csrf, db, migrate

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")
log = logging.getLogger(__name__)
# Seconds a client is asked to wait when the database is unavailable.
RETRY_AFTER_SECONDS = 5


def create_app(test_config: dict | None = None) -> Flask:
    """Defaults from config/, then FEEDBACK_* environment variables, then test overrides."""
    app = Flask(__name__, instance_relative_config=True, template_folder=str(PROJECT_ROOT / "templates"))
    settings = load_settings()
    app.config.update({f"FEEDBACK_{k}": v for k, v in settings.items()})
    app.config.update(load_provider_settings())
    if test_config:
        app.config.update(test_config)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    database_url = app.config["FEEDBACK_DATABASE_URL"] or f"sqlite:///{Path(app.instance_path) / 'feedback.db'}"
    app.config["SQLALCHEMY_DATABASE_URI"] = _sqlalchemy_url(database_url)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = _engine_options(app.config["SQLALCHEMY_DATABASE_URI"],
                                                              app.config["FEEDBACK_DATABASE_CONNECT_TIMEOUT_SECONDS"])
    app.config["SECRET_KEY"] = app.config.get("FEEDBACK_SECRET_KEY") or _instance_secret(app.instance_path)
    # 1000 events are well under a megabyte; anything far bigger is a mistake or an attack.
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = 8 * 1024 * 1024

    from .events.intake import IntakeSettings
    from .events.mapping import Mapping
    # A bad send setting or mapping file stops start-up, not every request.
    app.extensions["feedback_intake"] = IntakeSettings.from_config(
        app.config, Mapping.load(project_path(app.config["FEEDBACK_MAPPING_FILE"])))

    db.init_app(app)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_pragmas)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True)
    csrf.init_app(app)
    from . import protection
    protection.init_app(app)
    _import_models()
    from .staff.auth import login_manager
    login_manager.init_app(app)


    from .channels import registry
    registry.init_app(app)
    app.extensions["feedback_stopping"] = threading.Event()  # set by the worker on SIGTERM

    from .api import bp as api_bp
    from .api import http_error
    from .responses.routes import bp as survey_bp
    from .responses.routes import unsubscribe_bp
    from .webhooks import bp as webhooks_bp
    from .staff.routes import bp as staff_bp
    from .webhooks import init_app as init_webhooks
    from .workspace.routes import bp as workspace_bp
    from .dashboard.routes import bp as dashboard_bp
    init_webhooks(app)
    csrf.exempt(api_bp)  # the API authenticates with bearer keys, not cookies
    # Survey forms are FlaskForms that check their CSRF token themselves: a stale page is shown
    # again with the patient's answers kept, instead of a bare 400.
    csrf.exempt(survey_bp)
    # Providers sign their posts (checked in each view); one-click unsubscribe carries no cookie.
    csrf.exempt(webhooks_bp)
    csrf.exempt(unsubscribe_bp)
    for blueprint in (api_bp, survey_bp, unsubscribe_bp, webhooks_bp, staff_bp, workspace_bp, dashboard_bp):
        app.register_blueprint(blueprint)

    @app.get("/healthz")
    def healthz():
        db.session.execute(text("SELECT 1"))
        return jsonify({"status": "ok"})

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        # API clients always get JSON, also for routing errors (404, 405) and oversized bodies.
        if request.path.startswith("/api/"):
            return http_error(exc)
        if exc.code == 429:  # too many wrong links or sign-ins from this client
            return busy_page(429, exc.get_response().headers)
        return exc

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def _database_unavailable(exc):
        # The database is restarting, unreachable or (SQLite) locked for too long: fail fast with
        # 503 and Retry-After instead of a 500, and let the pool reconnect on the next request
        # (pre-ping). Nothing was committed, so a client that retries loses nothing.
        log.warning("database unavailable: %s", type(getattr(exc, "orig", exc)).__name__)
        try:
            db.session.rollback()
        except Exception:  # the connection is gone; the session is discarded at teardown
            pass
        return database_unavailable()

    from .cli import register_cli
    register_cli(app)
    return app


def database_unavailable():
    """503 for any request while the database is away: JSON for the API, a short page for people."""
    from .api import error
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if request.path.startswith("/api/") or request.path == "/healthz":
        return *error(503, "the database is unavailable; retry shortly, nothing was stored"), headers
    return busy_page(503, headers)


def busy_page(status: int, headers):
    """"Please try again in a minute", in the browser's language."""
    from .responses.texts import TEXTS, texts_for
    locale = request.accept_languages.best_match(list(TEXTS)) or "en"
    return render_template("survey/busy.html", t=texts_for(locale), locale=locale), status, headers


def _sqlalchemy_url(url: str) -> str:
    # Accept the usual postgres:// and postgresql:// forms; we ship the psycopg 3 driver.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _instance_secret(instance_path: str) -> str:
    """Without FEEDBACK_SECRET_KEY (a laptop, the demo) keep a random key in the instance folder."""
    path = Path(instance_path) / "secret_key"
    if not path.exists():
        # Written aside, then linked into place: web and worker starting together agree on one key.
        draft = path.with_name(f"secret_key.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the web process read while the worker writes; SQLite leaves foreign keys off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _engine_options(url: str, connect_timeout: int) -> dict:
    # Error messages must not quote bound values: they are patient identifiers and contacts.
    if url.startswith("sqlite"):
        # Wait for a writer instead of failing at once when web and worker write together.
        return {"connect_args": {"timeout": 30}, "hide_parameters": True}
    # Pre-ping replaces connections a database restart killed; the connect timeout keeps requests
    # from hanging on a database that does not answer, so they fail fast with 503.
    return {"pool_pre_ping": True, "hide_parameters": True, "connect_args": {"connect_timeout": connect_timeout}}


def _import_models() -> None:
    """Import every model module so that metadata (and Alembic) see all tables."""
    from .alerts import models as _al  # noqa: F401
    from .api import models as _a  # noqa: F401
    from .events import models as _e  # noqa: F401
    from .journeys import models as _j  # noqa: F401
    from .patients import models as _p  # noqa: F401
    from .responses import models as _r  # noqa: F401
    from .rollups import models as _ro  # noqa: F401
    from .scheduling import models as _s  # noqa: F401
    from .staff import models as _st  # noqa: F401


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr with contact details masked."""
    from .security import install_log_redaction
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The Twilio SDK logs every request's parameters (numbers, message bodies) at INFO; SendGrid's
    # HTTP client logs each email and its Authorization header at DEBUG.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    logging.getLogger("python_http_client").setLevel(logging.WARNING)
    install_log_redaction()
