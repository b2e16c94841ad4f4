"""HTTP hardening: security headers and the content security policy (Flask-Talisman), cookie
flags, rate limits on guessing (Flask-Limiter), and the client's address behind a proxy."""
from __future__ import annotations

from flask import current_app, request
from flask_talisman import Talisman
from werkzeug.middleware.proxy_fix import ProxyFix

from .extensions import limiter

# Every page is server-rendered from our own files: no inline script or style, no third party.
CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "object-src": "'none'",
}


def init_app(app) -> None:
    https = app.config["FEEDBACK_BASE_URL"].startswith("https://")
    # Secure cookies need https: every real deployment, where FEEDBACK_BASE_URL is https. A plain
    # http demo on a laptop would otherwise never keep a sign-in.
    # One Talisman per app: it keeps its options (https or not) on itself.
    Talisman(app, force_https=False, content_security_policy=CSP, frame_options="DENY",
             # Survey links carry their token in the path: no page may pass it on as a Referer.
             referrer_policy="no-referrer", session_cookie_secure=https, session_cookie_http_only=True,
             session_cookie_samesite="Lax", strict_transport_security=https)
    app.config.update(REMEMBER_COOKIE_SECURE=https, REMEMBER_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_SAMESITE="Lax")
    app.config["RATELIMIT_STORAGE_URI"] = app.config["FEEDBACK_RATELIMIT_STORAGE_URI"]
    app.config["RATELIMIT_HEADERS_ENABLED"] = True
    limiter.init_app(app)
    hops = app.config["FEEDBACK_PROXY_HOPS"]
    if hops:
        # The client's own address (for rate limits) and scheme, from the proxies we run behind.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    @app.after_request
    def _no_store(response):
        # Survey pages and staff pages hold health data: no browser or shared cache keeps them
        # (send_file's "no-cache" included). A view that chose a private cache on purpose keeps it.
        if request.endpoint != "static" and not response.cache_control.private:
            response.headers["Cache-Control"] = "no-store"
        return response


def _token_guess_limit() -> str:
    return current_app.config["FEEDBACK_TOKEN_GUESS_LIMIT"]


def _sign_in_limit() -> str:
    return current_app.config["FEEDBACK_SIGN_IN_LIMIT"]


# The designer's preview shows the survey page in a frame of our own workspace page.
# (Talisman's view decorator only marks the view; whichever app serves it reads the mark.)
framed_by_us = Talisman()(frame_options="SAMEORIGIN", content_security_policy={**CSP, "frame-ancestors": "'self'"})

# A survey or unsubscribe link that opens nothing (unknown, used, expired, malformed: one 404 page
# for all) counts against the client; a patient opening their own link never does. All the link
# routes share one count, so guesses cannot be spread over them.
token_guessing = limiter.shared_limit(_token_guess_limit, scope="survey-link",
                                      deduct_when=lambda response: response.status_code == 404)
# Failed staff sign-ins count; successful ones (a redirect) do not.
sign_in_guessing = limiter.limit(_sign_in_limit, methods=["POST"],
                                 deduct_when=lambda response: response.status_code != 302)
