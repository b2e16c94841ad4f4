"""API keys: only a hash is stored; the key is shown once at creation."""
from __future__ import annotations

from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..sqltypes import UTCDateTime, utcnow


class ApiKey(db.Model):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(db.String(80), unique=True)
    # Events are deduplicated per source, so a rotated key keeps its predecessor's source.
    source: Mapped[str] = mapped_column(db.String(80))
    key_hash: Mapped[str] = mapped_column(db.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(db.String(12))  # to recognise a key in lists
    # What the key may do, space-separated (OAuth style): "events" (send events in), "scores" (read
    # scores and the map out). A hospital feed gets the first, a reporting tool the second.
    scopes: Mapped[str] = mapped_column(db.String(40), default="events")
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    last_used_at = mapped_column(UTCDateTime, nullable=True)
    revoked_at = mapped_column(UTCDateTime, nullable=True)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes.split()
