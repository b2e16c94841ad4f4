"""Flask extensions, created once and bound to an app in create_app()."""
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.exc import IntegrityError

# Named constraints keep Alembic migrations identical on SQLite and PostgreSQL.
_naming = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=_naming))
migrate = Migrate()
csrf = CSRFProtect()
# Per client address (behind a proxy, see FEEDBACK_PROXY_HOPS); counts live in
# FEEDBACK_RATELIMIT_STORAGE_URI, per process unless that points at a shared store.
limiter = Limiter(key_func=get_remote_address)


def insert_once(row) -> bool:
    """Add and commit a row that a unique constraint guards; False, with nothing changed, when a
    concurrent request (a double tap, a provider's retry) stored it a moment before."""
    db.session.add(row)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return False
    return True
