"""Sign-in and the admin pages: users, API keys, settings, the audit log. Thin: work is in services."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..api.keys import create_api_key
from ..api.models import ApiKey
from ..extensions import db
from ..sqltypes import utcnow
from .auth import role_required
from .forms import ConfirmForm, EditUserForm, LoginForm, NewApiKeyForm, NewUserForm
from .models import StaffUser
from .services import StaffError, audit_page, authenticate, create_user, record, update_user

bp = Blueprint("staff", __name__)
admin = role_required("admin")
# Settings whose value is a secret or a credential: the settings page names them, never shows them.
SECRET_MARKERS = ("SECRET", "TOKEN", "KEY", "PASSWORD", "AUTH", "DATABASE_URL")


def forbidden(_exc):
    """A signed-in user on a page of another role: say so, and where their own pages are."""
    return render_template("staff/forbidden.html"), 403


bp.register_error_handler(403, forbidden)


def home_for(user) -> str:
    return url_for({"admin": "staff.users", "designer": "workspace.journeys",
                    "manager": "workspace.scores"}[user.role])


def _safe_next(target: str | None) -> str | None:
    # Only a path on this site: an absolute URL in ?next= would make sign-in an open redirect.
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return None


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(home_for(current_user))
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(form.email.data, form.password.data)
        if user is not None:
            db.session.commit()
            session.permanent = True  # so that FEEDBACK_STAFF_SESSION_HOURS bounds it
            login_user(user)
            return redirect(_safe_next(request.args.get("next")) or home_for(user))
        db.session.rollback()
        form.password.errors.append("That email and password do not match an active account.")
    return render_template("staff/login.html", form=form), 422 if form.errors else 200


@bp.post("/logout")
@login_required
def logout():
    if ConfirmForm().validate_on_submit():
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
            for field, message in exc.errors.items():
                form[field].errors.append(message)
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
            for field, message in exc.errors.items():
                (form[field] if field in form else form.role).errors.append(message)
    return render_template("staff/user.html", form=form, account=account), 422 if form.errors else 200


@bp.route("/admin/api-keys", methods=["GET", "POST"])
@admin
def api_keys():
    form, new_key = NewApiKeyForm(), None
    if form.validate_on_submit():
        try:
            row, new_key = create_api_key(form.name.data.strip(), (form.source.data or "").strip() or None,
                                          commit=False)
            record(current_user, "api_key.create", f"api_key:{row.name}", None,
                   {"name": row.name, "source": row.source, "prefix": row.prefix})
            db.session.commit()
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
    if ConfirmForm().validate_on_submit() and key.revoked_at is None:
        key.revoked_at = utcnow()
        record(current_user, "api_key.revoke", f"api_key:{key.name}", {"revoked": False}, {"revoked": True})
        db.session.commit()
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
    page = max(request.args.get("page", 1, type=int), 1)
    action, actor = request.args.get("action", "").strip(), request.args.get("actor", "").strip()
    entries, total = audit_page(page, action=action, actor=actor)
    return render_template("staff/audit.html", entries=entries, total=total, page=page, per_page=50,
                           action=action, actor=actor)
