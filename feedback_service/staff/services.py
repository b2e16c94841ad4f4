"""Staff accounts and the audit log as plain functions (the CLI, the admin pages and tests use them)."""
from __future__ import annotations

import re

from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from ..errors import FieldErrors
from ..extensions import db
from ..sqltypes import utcnow
from .models import ROLES, AuditEntry, StaffUser

MIN_PASSWORD_LENGTH = 12
# scrypt (werkzeug's default): memory-hard, so a stolen table is slow to attack.
PASSWORD_METHOD = "scrypt"
# Checked against when the email is unknown, so a wrong email takes as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-password-of-anyone", method=PASSWORD_METHOD)


# Local part, @, a domain with a dot: the CLI's check (the admin form also asks email-validator).
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


class StaffError(FieldErrors):
    """A staff-account change refused."""


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def is_email_address(email: str) -> bool:
    """A staff address as the CLI accepts one (demo accounts live at .invalid)."""
    return len(email) <= 254 and bool(_EMAIL_RE.fullmatch(email))


def _check(email: str | None, role: str | None, password: str | None) -> dict[str, str]:
    errors = {}
    if email is not None and not is_email_address(email):
        errors["email"] = "must be an email address"
    if role is not None and role not in ROLES:
        errors["role"] = f"must be one of {', '.join(ROLES)}"
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        errors["password"] = f"must be at least {MIN_PASSWORD_LENGTH} characters"
    return errors


def find_user(email: str) -> StaffUser | None:
    return db.session.scalar(select(StaffUser).where(StaffUser.email == normalise_email(email)))


def create_user(email: str, role: str, password: str, actor: StaffUser | None = None) -> StaffUser:
    email = normalise_email(email)
    errors = _check(email, role, password)
    if not errors and find_user(email) is not None:
        errors["email"] = "an account with this email exists"
    if errors:
        raise StaffError(errors)
    user = StaffUser(email=email, role=role, password_hash=generate_password_hash(password, method=PASSWORD_METHOD))
    db.session.add(user)
    db.session.flush()
    record(actor, "user.create", f"user:{email}", None, describe_user(user))
    return user


def update_user(user: StaffUser, actor: StaffUser | None, role: str | None = None, active: bool | None = None,
                password: str | None = None) -> None:
    errors = _check(None, role, password or None)
    if actor is not None and actor.id == user.id and (role not in (None, "admin") or active is False):
        # The last way back in would otherwise be one click away from being locked out.
        errors["role"] = "you cannot demote or disable your own account"
    if errors:
        raise StaffError(errors)
    before = describe_user(user)
    if role is not None:
        user.role = role
    if active is not None:
        user.active = active
    if password:
        user.password_hash = generate_password_hash(password, method=PASSWORD_METHOD)
    after = describe_user(user)
    if after != before or password:
        end_sessions(user)  # sessions opened under the old role or password end
        changed = {**after, "password": "changed"} if password else after
        record(actor, "user.update", f"user:{user.email}", before, changed)


def end_sessions(user: StaffUser) -> None:
    """Sign the account out everywhere: sessions carry the epoch they were opened under."""
    user.session_epoch += 1


def authenticate(email: str, password: str) -> StaffUser | None:
    """The active account with this email and password, or None (same time either way)."""
    user = find_user(email)
    ok = check_password_hash(user.password_hash if user else _DUMMY_HASH, password or "")
    if user is None or not ok or not user.active:
        return None
    user.last_login_at = utcnow()
    return user


def describe_user(user: StaffUser) -> dict:
    return {"email": user.email, "role": user.role, "active": user.active}


def record(actor: StaffUser | None, action: str, target: str, before: dict | None, after: dict | None) -> AuditEntry:
    """Add an audit entry to the current transaction: it commits, or rolls back, with the change."""
    entry = AuditEntry(at=utcnow(), actor_id=actor.id if actor else None,
                       actor=actor.email if actor else "command line", action=action, target=target,
                       before=before, after=after)
    db.session.add(entry)
    return entry


def audit_page(page: int, per_page: int = 50, action: str = "", actor: str = "") -> tuple[list[AuditEntry], int]:
    """Newest first, optionally filtered by action prefix or actor; (entries, total)."""
    query = select(AuditEntry)
    if action:
        query = query.where(AuditEntry.action.startswith(action, autoescape=True))
    if actor:
        query = query.where(AuditEntry.actor == normalise_email(actor))
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.order_by(AuditEntry.id.desc()).offset((page - 1) * per_page).limit(per_page))
    return list(rows), total
