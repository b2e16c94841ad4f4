"""API keys: created from the CLI, shown once, stored as a hash, checked on every API call."""
from __future__ import annotations

import secrets

from sqlalchemy import select

from ..extensions import db
from ..security import hash_secret, matches
from ..sqltypes import utcnow
from ..staff.services import record
from .models import ApiKey

KEY_PREFIX = "fbk_"
# "events": post events and hospital messages in; "scores": read journeys, scores and the map out.
SCOPES = ("events", "scores")


def create_api_key(name: str, source: str | None = None, actor=None,
                   scopes: tuple[str, ...] = ("events",)) -> tuple[ApiKey, str]:
    """Store a new key under `name` for a source system (default: the name) with the given scopes,
    audited as the staff member `actor` (None: the command line); committed. Returns (row, the key
    itself, which is never stored)."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, source=source or name, key_hash=hash_secret(key), prefix=key[:8],
                 scopes=" ".join(s for s in SCOPES if s in scopes))
    db.session.add(row)
    db.session.flush()
    record(actor, "api_key.create", f"api_key:{row.name}", None,
           {"name": row.name, "source": row.source, "prefix": row.prefix, "scopes": row.scopes})
    db.session.commit()
    return row, key


def revoke_api_key(row: ApiKey, actor=None) -> bool:
    """Revoke a live key (committed, audited); False if it was revoked already."""
    if row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    record(actor, "api_key.revoke", f"api_key:{row.name}", {"revoked": False}, {"revoked": True})
    db.session.commit()
    return True


def authenticate(key: str) -> ApiKey | None:
    """The live key row for this key, or None; notes when it was last used."""
    if not key.startswith(KEY_PREFIX):
        return None
    row = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_secret(key), ApiKey.revoked_at.is_(None)))
    if row is None or not matches(key, row.key_hash):
        return None
    now = utcnow()
    # Written at most once a minute: every API call should not be a write.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
        db.session.commit()
    return row
