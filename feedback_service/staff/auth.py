"""Sign-in (Flask-Login) and role checks for staff pages."""
from __future__ import annotations

import time
from functools import wraps

from flask import abort, current_app, redirect, request, session, url_for
from flask_login import LoginManager, current_user

from ..extensions import db
from .models import StaffUser

login_manager = LoginManager()
login_manager.login_view = "staff.login"
login_manager.login_message = "Please sign in to see that page."
# A session cookie copied to another browser is refused (Flask-Login's session protection). It
# is "strong" only for sessions that are not permanent, so staff sessions are browser sessions,
# bounded by the sign-in time below instead of a cookie expiry.
login_manager.session_protection = "strong"
_SIGNED_IN_AT = "staff_signed_in_at"


def mark_signed_in() -> None:
    session[_SIGNED_IN_AT] = int(time.time())


def _expired() -> bool:
    signed_in = session.get(_SIGNED_IN_AT)
    limit = current_app.config["FEEDBACK_STAFF_SESSION_HOURS"] * 3600
    return not isinstance(signed_in, int) or time.time() - signed_in > limit


@login_manager.user_loader
def _load_user(user_id: str) -> StaffUser | None:
    ident, _, epoch = user_id.partition(":")
    if not ident.isdigit() or _expired():  # a working day after sign-in, it is over
        return None
    user = db.session.get(StaffUser, int(ident))
    # A password or role change, or disabling, bumps the epoch and so ends older sessions.
    if user is None or not user.active or str(user.session_epoch) != epoch:
        return None
    return user


def role_required(*roles: str):
    """Anonymous visitors go to sign-in; a signed-in user without one of `roles` gets 403."""
    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return redirect(url_for("staff.login", next=request.full_path.rstrip("?")))
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)
        return wrapped
    return decorate
