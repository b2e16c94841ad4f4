"""What the integration team needs to see about hospital events."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from ..extensions import db
from ..sqltypes import utcnow
from .models import Event


def unmapped_events(days: int = 30) -> list[dict]:
    """Events the mapping placed in no journey in the last `days`, grouped by source, type and
    codes, most frequent first."""
    since = utcnow() - timedelta(days=days)
    groups: dict[tuple, dict] = {}
    rows = db.session.execute(select(Event.id, Event.source, Event.type, Event.codes, Event.received_at)
                              .where(Event.journey_id.is_(None), Event.received_at >= since).order_by(Event.id))
    for event_id, source, type_, codes, received_at in rows:
        codes = codes or {}
        key = (source, type_, tuple(sorted((k, tuple(v)) for k, v in codes.items())))
        group = groups.setdefault(key, {"source": source, "type": type_, "codes": codes, "count": 0})
        group["count"] += 1
        group["example_event_id"] = event_id
        group["last_received_at"] = received_at.isoformat(timespec="seconds")
    return sorted(groups.values(), key=lambda g: (-g["count"], g["source"], g["type"]))
