"""The channel interface: one outgoing message in, one delivery record (or an error) out."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol


MEDIA = ("sms", "email")  # what a trigger rule can choose between, in the rule's order


@dataclass(frozen=True)
class Message:
    invitation_id: int
    medium: str  # sms | email
    to: str
    body: str
    survey_url: str
    locale: str
    subject: str | None = None
    html: str | None = None
    unsubscribe_url: str | None = None  # one-click unsubscribe (RFC 8058) for email


@dataclass(frozen=True)
class Delivery:
    provider_message_id: str | None
    status: str = "sent"


class SendError(Exception):
    """A send that did not go out. `transient` ones are retried with backoff; permanent ones fail
    the invitation (and `address_blocked` ones mean the provider will never deliver to it)."""

    transient = False

    def __init__(self, message: str, code: str | None = None, address_blocked: bool = False):
        super().__init__(message)
        self.code = code
        self.address_blocked = address_blocked


class TransientSendError(SendError):
    transient = True


class PermanentSendError(SendError):
    pass


class UncertainSendError(Exception):
    """The provider may or may not have accepted the message (an answer lost on the way back):
    it must not be sent again blindly."""


class Pacer:
    """Spaces the sends of all threads to at most `rate` a second (None or 0: no limit)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class Channel(Protocol):
    name: str
    pacer: Pacer

    def send(self, message: Message) -> Delivery:
        """Hand the message to the provider; raise SendError if it did not accept it, or
        UncertainSendError if it cannot tell. Called from several threads at once."""
