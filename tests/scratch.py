"""A throwaway database for the test suite and the benchmarks."""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch_database(server_url: str | None, folder: Path, prefix: str = "feedback_scratch"):
    """Yield the URL of a new empty database: a SQLite file in `folder` when no server URL is given,
    else a new database on that PostgreSQL server, dropped on exit."""
    if not server_url:
        yield f"sqlite:///{folder / (prefix + '.db')}"
        return
    import psycopg
    from sqlalchemy import make_url

    url = make_url(server_url.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(host=url.host, port=url.port or 5432, user=url.username or None,
                            password=url.password, dbname=url.database, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
