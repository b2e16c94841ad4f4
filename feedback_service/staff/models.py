"""Staff accounts and the audit log."""
from __future__ import annotations

from flask_login import UserMixin
from sqlalchemy import JSON, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..sqltypes import UTCDateTime, utcnow

# admin: users, API keys, settings, the audit log; designer: journeys, question sets, rules;
# manager: reads scores and comments.
ROLES = ("admin", "designer", "manager")


class StaffUser(UserMixin, db.Model):
    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(db.String(254), unique=True)  # stored lower-cased
    password_hash: Mapped[str] = mapped_column(db.String(255))
    role: Mapped[str] = mapped_column(db.String(20))
    active: Mapped[bool] = mapped_column(default=True)
    # Changes when the password or role changes or the account is disabled, which signs out
    # every session that was opened before (Flask-Login keeps this id in the session).
    session_epoch: Mapped[int] = mapped_column(default=0)
    created_at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    last_login_at = mapped_column(UTCDateTime, nullable=True)

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        return f"{self.id}:{self.session_epoch}"


class AuditEntry(db.Model):
    """One change a staff member made: who, when, what, and the thing before and after."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), nullable=True)
    # Kept as text too: the entry must still say who it was if the account is renamed.
    actor: Mapped[str] = mapped_column(db.String(254))
    action: Mapped[str] = mapped_column(db.String(60))
    target: Mapped[str] = mapped_column(db.String(600))  # up to journey/stage/touchpoint slugs, or an email
    before: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict | None] = mapped_column(JSON, nullable=True)

    actor_user = relationship(StaffUser)
