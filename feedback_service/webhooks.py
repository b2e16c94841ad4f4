"""Provider webhooks: Twilio inbound texts and status callbacks, SendGrid events. Thin: each
checks the provider's signature with its own SDK, then hands over to the services."""
from __future__ import annotations

import binascii
import json
import logging

from cryptography.exceptions import UnsupportedAlgorithm
from flask import Blueprint, Response, abort, current_app, jsonify, request
from sendgrid import EventWebhook
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from .config import public_url
from .responses.sms import handle_text
from .scheduling.delivery import record_email_events, record_sms_status

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def _public_url() -> str:
    """The URL the provider called and signed: our configured public base, not the Host header we
    see behind a proxy."""
    query = request.query_string.decode("utf-8", "replace")  # bytes that are not UTF-8 cannot match
    return public_url(current_app.config, request.path) + (f"?{query}" if query else "")


def _require_twilio_signature() -> None:
    token = current_app.config["TWILIO_AUTH_TOKEN"]
    signature = request.headers.get("X-Twilio-Signature", "")
    if not (token and signature and RequestValidator(token).validate(_public_url(), request.form, signature)):
        log.warning("twilio webhook %s: bad or missing signature", request.path)
        abort(403)


@bp.post("/twilio/sms")
def twilio_sms():
    _require_twilio_signature()
    number, message_id = request.form.get("From", ""), request.form.get("MessageSid", "")
    if not (number and message_id):
        return jsonify({"error": "From and MessageSid are required"}), 400
    reply = handle_text(number, request.form.get("Body", ""), message_id,
                        opt_out_type=request.form.get("OptOutType"))
    twiml = MessagingResponse()
    if reply:
        twiml.message(reply)
    return Response(str(twiml), mimetype="application/xml")


@bp.post("/twilio/status")
def twilio_status():
    _require_twilio_signature()
    status = request.form.get("MessageStatus", "")
    if request.args.get("reminder"):
        # A reminder's delivery is not the invitation's: its invitation already went out.
        return "", 204
    matched = record_sms_status(request.args.get("invitation", type=int), request.form.get("MessageSid"),
                                status, request.form.get("ErrorCode"))
    if not matched:
        log.info("twilio status %s for no invitation of ours", status)
    return "", 204


@bp.post("/sendgrid/events")
def sendgrid_events():
    raw = request.get_data(as_text=True)
    if not _sendgrid_signed(raw):
        log.warning("sendgrid webhook: bad or missing signature")
        abort(403)
    try:
        events = json.loads(raw)
    except ValueError:
        events = None
    if not (isinstance(events, list) and all(isinstance(e, dict) for e in events)):
        return jsonify({"error": "expected a JSON array of event objects"}), 400
    return jsonify({"received": len(events), "matched": record_email_events(events)})


def _sendgrid_signed(raw: str) -> bool:
    verifier = current_app.extensions.get("sendgrid_webhook")
    signature = request.headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
    timestamp = request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
    if not (verifier and signature and timestamp):
        return False
    try:
        # The signature covers the body exactly as received: verify before parsing anything.
        return verifier.verify_signature(raw, signature, timestamp)
    except (ValueError, binascii.Error):
        return False


def init_app(app) -> None:
    """Load the SendGrid webhook key once; one that cannot work stops start-up, rather than every
    post being refused."""
    key = app.config.get("SENDGRID_WEBHOOK_PUBLIC_KEY")
    if key:
        try:
            app.extensions["sendgrid_webhook"] = EventWebhook(key)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise RuntimeError("SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid public key") from exc
