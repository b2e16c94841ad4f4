"""Which channel carries each medium, chosen by settings, built once per app."""
from __future__ import annotations

from flask import current_app

from ..config import public_url
from .base import MEDIA, Channel
from .console import ConsoleChannel
from .sendgrid_email import SendGridChannel
from .twilio_sms import TwilioChannel

# The provider each medium uses when its credentials are set and the setting says "auto".
PROVIDERS = {"sms": ("twilio", "TWILIO_ACCOUNT_SID"), "email": ("sendgrid", "SENDGRID_API_KEY")}


def _twilio(config) -> Channel:
    if not config["TWILIO_AUTH_TOKEN"]:
        raise RuntimeError("Twilio needs TWILIO_AUTH_TOKEN (also to check its webhooks' signatures)")
    return TwilioChannel(
        config["TWILIO_ACCOUNT_SID"], config["TWILIO_AUTH_TOKEN"],
        status_callback=public_url(config, "/webhooks/twilio/status"),
        messaging_service_sid=config["TWILIO_MESSAGING_SERVICE_SID"], from_number=config["TWILIO_FROM_NUMBER"],
        api_base_url=config["TWILIO_API_BASE_URL"], rate=config["FEEDBACK_SMS_RATE_PER_SECOND"],
        timeout=config["FEEDBACK_PROVIDER_TIMEOUT_SECONDS"])


def _sendgrid(config) -> Channel:
    return SendGridChannel(
        config["SENDGRID_API_KEY"], config["SENDGRID_FROM_EMAIL"], api_base_url=config["SENDGRID_API_BASE_URL"],
        rate=config["FEEDBACK_EMAIL_RATE_PER_SECOND"], timeout=config["FEEDBACK_PROVIDER_TIMEOUT_SECONDS"])


def _console(config) -> Channel:
    return ConsoleChannel(config["FEEDBACK_CONSOLE_OUTBOX"])


# channel name -> (media it can carry, factory)
FACTORIES = {"console": (MEDIA, _console), "twilio": (("sms",), _twilio), "sendgrid": (("email",), _sendgrid)}


def channel_name(config, medium: str) -> str:
    name = config[f"FEEDBACK_{medium.upper()}_CHANNEL"]
    if name == "auto":
        provider, credential = PROVIDERS[medium]
        return provider if config.get(credential) else "console"
    return name


def build_channels(config) -> dict[str, Channel]:
    channels = {}
    for medium in MEDIA:
        name = channel_name(config, medium)
        media, factory = FACTORIES.get(name, ((), None))
        if medium not in media:
            raise RuntimeError(f"FEEDBACK_{medium.upper()}_CHANNEL: {name!r} cannot carry {medium}")
        channels[medium] = factory(config)
    return channels


def init_app(app) -> None:
    app.extensions["feedback_channels"] = build_channels(app.config)


def channel_for(medium: str) -> Channel:
    return current_app.extensions["feedback_channels"][medium]
