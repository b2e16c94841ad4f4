"""Sign-in (Flask-Login) and role checks for staff pages."""
from __future__ import annotations

from functools import wraps

from flask import abort, redirect, request, url_for
from flask_login import LoginManager, current_user

from ..extensions import db
from .models import StaffUser

login_manager = LoginManager()
login_manager.login_view = "staff.login"
login_manager.login_message = "Please sign in to see that page."
# A session cookie copied to another browser is refused (Flask-Login's session protection).
login_manager.session_protection = "strong"


@login_manager.user_loader
def _load_user(user_id: str) -> StaffUser | None:
    ident, _, epoch = user_id.partition(":")
    if not ident.isdigit():
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
