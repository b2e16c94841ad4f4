"""Settings: defaults from config/settings.toml, then FEEDBACK_* environment variables."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = PROJECT_ROOT / "config" / "settings.toml"
ENV_PREFIX = "FEEDBACK_"
# The providers' own variable names, read as they are (secrets among them: never in settings.toml).
PROVIDER_ENV = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_MESSAGING_SERVICE_SID", "TWILIO_FROM_NUMBER",
                "TWILIO_API_BASE_URL", "SENDGRID_API_KEY", "SENDGRID_FROM_EMAIL", "SENDGRID_API_BASE_URL",
                "SENDGRID_WEBHOOK_PUBLIC_KEY")


def _coerce(value: str, like):
    """Parse an environment string into the type of its default."""
    if isinstance(like, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def load_settings(environ=None) -> dict:
    """Return the FEEDBACK_ settings (without prefix) layered defaults < environment."""
    environ = os.environ if environ is None else environ
    with DEFAULTS_FILE.open("rb") as fh:
        settings = tomllib.load(fh)
    for key, default in list(settings.items()):
        raw = environ.get(ENV_PREFIX + key)
        if raw is not None:
            try:
                settings[key] = _coerce(raw, default)
            except ValueError as exc:
                raise RuntimeError(f"{ENV_PREFIX}{key}: cannot read {raw!r} as {type(default).__name__}") from exc
    # SECRET_KEY has no default on purpose: it must come from the environment.
    settings["SECRET_KEY"] = environ.get(ENV_PREFIX + "SECRET_KEY", "")
    return settings


def load_provider_settings(environ=None) -> dict:
    """Twilio and SendGrid credentials and endpoints, under the providers' own names ("" if unset)."""
    environ = os.environ if environ is None else environ
    return {name: environ.get(name, "").strip() for name in PROVIDER_ENV}


def project_path(value: str) -> Path:
    """Resolve a setting path relative to the project root."""
    path = Path(value)
    return path if path.is_absolute() else PROJECT_ROOT / path


def public_url(config, path: str) -> str:
    """Our URL for a path as patients and providers reach it (FEEDBACK_BASE_URL, e.g. behind a
    proxy): in survey links, and what webhook signatures are checked against."""
    return config["FEEDBACK_BASE_URL"].rstrip("/") + path
