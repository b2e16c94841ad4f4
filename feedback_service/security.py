"""Secrets we hand out (survey tokens, API keys) and keeping contact details out of logs."""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets

TOKEN_BYTES = 32  # 256 bits of randomness per survey link
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{20,100}")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_secret(value: str) -> str:
    """sha256 hex: enough for high-entropy random secrets, which need no slow password hash."""
    return hashlib.sha256(value.encode()).hexdigest()


def looks_like_token(value: str) -> bool:
    return bool(_TOKEN_RE.fullmatch(value))


def matches(value: str, stored_hash: str | None) -> bool:
    """Whether a secret matches its stored hash, compared in constant time. Rows are found by the
    hash (an index lookup, whose timing can tell only about hashes, which no one can steer without
    the secret); this last check makes the comparison itself constant-time as well."""
    return stored_hash is not None and hmac.compare_digest(hash_secret(value), stored_hash)


# International numbers (with +) and US-formatted ones; bare digit runs are left alone so
# ids and timestamps stay readable.
_PHONE_RE = re.compile(r"\+\d[\d ().-]{6,}\d|\(?\b\d{3}\)?[ .-]?\d{3}[ .-]\d{4}\b")
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# Survey links are secrets too: access logs would otherwise keep every token in clear.
_SURVEY_PATH_RE = re.compile(r"/(s|unsubscribe)/[A-Za-z0-9_-]{8,}")


def redact(text: str) -> str:
    """Mask phone numbers, email addresses and survey-link tokens."""
    # Emails first: an address may contain digits that look like a phone number.
    text = _SURVEY_PATH_RE.sub(r"/\1/[token]", text)
    return _PHONE_RE.sub("[phone]", _EMAIL_RE.sub("[email]", text))


class RedactingFilter(logging.Filter):
    """Scrubs contact details from every record, whoever logged it (our code, SDKs, werkzeug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Exception text (an SDK's error message, say) can quote an address too. Formatters
            # reuse exc_text when it is set, so the scrubbed version is what gets written.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def install_log_redaction() -> None:
    """Filter every handler there is: the root's, and those of loggers that do not pass their
    records up (gunicorn's access and error logs write request paths, survey tokens in them)."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
