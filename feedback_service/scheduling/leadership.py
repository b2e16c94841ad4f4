"""One worker at a time for the sweeping jobs, by a PostgreSQL advisory lock.

Dispatch needs no leader: workers share it by claiming rows with FOR UPDATE SKIP LOCKED. The
sweeps (intake of stored hospital messages, recovery of dead workers' claims, expiry, retention)
walk whole tables; two at once would only contend. A session-level advisory lock is held on a
connection of its own for the length of one run: PostgreSQL drops it when that connection ends, so
a worker that dies (even by SIGKILL) or loses the database never keeps it, and no lease to expire
or clock to trust is involved.
"""
from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ..extensions import db

log = logging.getLogger(__name__)

# The first key of the two-key form: keeps our locks apart from any other application's.
NAMESPACE = 0x46424B  # "FBK"


def lock_key(job: str) -> int:
    """The job's advisory lock key: a stable 31-bit number (PostgreSQL's int4)."""
    return zlib.crc32(job.encode()) & 0x7FFFFFFF


@contextmanager
def leadership(job: str) -> Iterator[bool]:
    """Yields True while this process holds the job's lock, False if another one does. On SQLite,
    a single-worker deployment, always True."""
    if db.engine.dialect.name != "postgresql":
        yield True
        return
    params = {"ns": NAMESPACE, "key": lock_key(job)}
    with db.engine.connect() as conn:
        held = conn.scalar(text("SELECT pg_try_advisory_lock(:ns, :key)"), params)
        # Outside a transaction: an open one would pin this connection's snapshot for the whole run.
        conn.commit()
        try:
            yield bool(held)
        finally:
            if held:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:ns, :key)"), params)
                    conn.commit()
                except DBAPIError:
                    # The connection is gone (a database restart), and the lock with it.
                    conn.invalidate()
                    log.warning("the %s job's lock connection was lost; the lock went with it", job)
