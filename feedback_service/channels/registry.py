"""Which channel carries each medium, chosen by settings, built once per app."""
from __future__ import annotations

from flask import current_app

from .base import MEDIA, Channel
from .console import ConsoleChannel


def build_channels(config) -> dict[str, Channel]:
    factories = {"console": lambda: ConsoleChannel(config["FEEDBACK_CONSOLE_OUTBOX"])}
    channels = {}
    for medium in MEDIA:
        name = config[f"FEEDBACK_{medium.upper()}_CHANNEL"]
        if name not in factories:
            raise RuntimeError(f"FEEDBACK_{medium.upper()}_CHANNEL: unknown channel {name!r}")
        channels[medium] = factories[name]()
    return channels


def init_app(app) -> None:
    app.extensions["feedback_channels"] = build_channels(app.config)


def channel_for(medium: str) -> Channel:
    return current_app.extensions["feedback_channels"][medium]
