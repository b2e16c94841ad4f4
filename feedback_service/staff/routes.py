"""Sign-in and the admin pages: users, API keys, settings, the audit log. Thin: work is in services."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..api import keys as api_keys_service
from ..api.models import ApiKey
from ..extensions import csrf, db
from ..protection import sign_in_guessing
from .auth import mark_signed_in, role_required
from .forms import ConfirmForm, EditUserForm, LoginForm, NewApiKeyForm, NewUserForm, show_errors
from .models import StaffUser
from .services import StaffError, audit_page, authenticate, create_user, end_sessions, update_user

bp = Blueprint("staff", __name__)
admin = role_required("admin")
MAX_PAGE = 100_000  # far past any audit log; bigger numbers would overflow the database's integers
# Settings whose value is a secret or a credential: the settings page names them, never shows them.
SECRET_MARKERS = ("SECRET", "TOKEN", "KEY", "PASSWORD", "AUTH", "DATABASE_URL")


def forbidden(_exc):
    """A signed-in user on a page of another role: say so, and where their own pages are."""
    return render_template("staff/forbidden.html"), 403


bp.register_error_handler(403, forbidden)


def home_for(user) -> str:
    return url_for({"admin": "staff.users", "designer": "workspace.journeys",
                    "manager": "dashboard.journey_map"}[user.role])


def _safe_next(target: str | None) -> str | None:
    # Only a path on this site: an absolute URL in ?next= would make sign-in an open redirect.
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return None


@bp.app_errorhandler(CSRFError)
def expired(_exc):
    # Only staff pages meet this (the API, survey pages and webhooks are exempt): a page left open
    # past the session, or posted from elsewhere.
    return render_template("staff/expired.html"), 400


@bp.route("/login", methods=["GET", "POST"])
@sign_in_guessing
@csrf.exempt  # the form checks its own token, to show the page again with a note
def login():
    if current_user.is_authenticated:
        return redirect(home_for(current_user))
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(form.email.data, form.password.data)
        if user is not None:
            db.session.commit()
            login_user(user)
            mark_signed_in()
            return redirect(_safe_next(request.args.get("next")) or home_for(user))
        db.session.rollback()
        form.password.errors.append("That email and password do not match an active account.")
    return render_template("staff/login.html", form=form), 422 if form.errors else 200


@bp.post("/logout")
@login_required
def logout():
    if ConfirmForm().validate_on_submit():
        # Everywhere: a copy of this session's cookie (a shared workstation) must not outlive it.
        end_sessions(current_user)
        db.session.commit()
        logout_user()
    return redirect(url_for("staff.login"))


@bp.route("/admin/users", methods=["GET", "POST"])
@admin
def users():
    form = NewUserForm()
    if form.validate_on_submit():
        try:
            user = create_user(form.email.data, form.role.data, form.password.data, actor=current_user)
            db.session.commit()
            flash(f"Account {user.email} created as {user.role}.")
            return redirect(url_for("staff.users"))
        except StaffError as exc:
            db.session.rollback()
            show_errors(form, exc.errors)
    accounts = db.session.scalars(select(StaffUser).order_by(StaffUser.email))
    return render_template("staff/users.html", form=form, users=accounts), 422 if form.errors else 200


@bp.route("/admin/users/<int:user_id>", methods=["GET", "POST"])
@admin
def user(user_id: int):
    account = db.session.get(StaffUser, user_id) or abort(404)
    form = EditUserForm(obj=account if request.method == "GET" else None)
    if form.validate_on_submit():
        try:
            update_user(account, current_user, role=form.role.data, active=form.active.data,
                        password=form.password.data or None)
            db.session.commit()
            flash(f"Account {account.email} saved.")
            return redirect(url_for("staff.users"))
        except StaffError as exc:
            db.session.rollback()
            show_errors(form, exc.errors)
    return render_template("staff/user.html", form=form, account=account), 422 if form.errors else 200


@bp.route("/admin/api-keys", methods=["GET", "POST"])
@admin
def api_keys():
    form, new_key = NewApiKeyForm(), None
    if form.validate_on_submit():
        try:
            _, new_key = api_keys_service.create_api_key(
                form.name.data.strip(), (form.source.data or "").strip() or None, actor=current_user,
                scopes=form.scopes)
        except IntegrityError:
            db.session.rollback()
            form.name.errors.append("a key with this name exists")
    keys = db.session.scalars(select(ApiKey).order_by(ApiKey.created_at.desc()))
    return render_template("staff/api_keys.html", form=form, keys=keys, new_key=new_key,
                           revoke=ConfirmForm()), 422 if form.errors else 200


@bp.post("/admin/api-keys/<int:key_id>/revoke")
@admin
def revoke_api_key(key_id: int):
    key = db.session.get(ApiKey, key_id) or abort(404)
    if ConfirmForm().validate_on_submit() and api_keys_service.revoke_api_key(key, actor=current_user):
        flash(f"Key {key.name} revoked.")
    return redirect(url_for("staff.api_keys"))


@bp.get("/admin/settings")
@admin
def settings():
    shown = []
    for name in sorted(k for k in current_app.config if k.startswith(("FEEDBACK_", "TWILIO_", "SENDGRID_"))):
        value = current_app.config[name]
        secret = any(marker in name.removeprefix("FEEDBACK_") for marker in SECRET_MARKERS)
        shown.append((name, ("set" if value else "not set") if secret else value, secret))
    return render_template("staff/settings.html", settings=shown)


@bp.get("/admin/audit")
@admin
def audit():
    page = min(max(request.args.get("page", 1, type=int), 1), MAX_PAGE)
    action, actor = request.args.get("action", "").strip(), request.args.get("actor", "").strip()
    entries, total = audit_page(page, action=action, actor=actor)
    return render_template("staff/audit.html", entries=entries, total=total, page=page, per_page=50,
                           action=action, actor=actor)
