"""The channel interface: one outgoing message in, one delivery record (or an error) out."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol


MEDIA = ("sms", "email")  # what a trigger rule can choose between, in the rule's order


@dataclass(frozen=True)
class Message:
    invitation_id: int | None  # None: a message to staff (alert_id says which)
    medium: str  # sms | email
    to: str
    body: str
    survey_url: str
    locale: str
    subject: str | None = None
    html: str | None = None
    unsubscribe_url: str | None = None  # one-click unsubscribe (RFC 8058) for email
    # The rule's one reminder: providers' reports about it must not change the invitation's
    # own delivery status (a reminder's bounce is not the invitation's).
    reminder: bool = False
    alert_id: int | None = None  # an alert's notice to a stage owner


@dataclass(frozen=True)
class Delivery:
    provider_message_id: str | None
    status: str = "sent"


class SendError(Exception):
    """A send the provider did not take. `transient` ones are retried with backoff, up to the
    attempt limit, and never fall over to another channel: a provider or account problem is not
    the patient's. `address_refused` means the provider will not deliver to this address: the
    invitation fails and the rule's next channel is tried; `address_blocked`, that the address
    must not be used again (a STOP the carrier holds)."""

    transient = False

    def __init__(self, message: str, code: str | None = None, address_refused: bool = False,
                 address_blocked: bool = False):
        super().__init__(message)
        self.code = code
        self.address_refused = address_refused or address_blocked
        self.address_blocked = address_blocked


class TransientSendError(SendError):
    transient = True


class PermanentSendError(SendError):
    pass


class UncertainSendError(Exception):
    """The provider may or may not have taken the message (its answer was lost on the way back):
    it must not be sent again blindly."""


class Pacer:
    """Spaces the sends of all threads to at most `rate` a second (None or 0: no limit)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, units: int = 1) -> None:
        """Block until `units` more (messages, or SMS segments) may go out."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval * units
        if slot > now:
            time.sleep(slot - now)


class PerThread:
    """One object per sending thread, made on first use: the SDKs' clients hold connection pools
    that are not safe to share between threads."""

    def __init__(self, make):
        self._make, self._local = make, threading.local()

    def get(self):
        made = getattr(self._local, "made", None)
        if made is None:
            made = self._local.made = self._make()
        return made


# The GSM 03.38 alphabet: a text in it takes 160 characters a segment (153 when split); one
# character outside it (an accented Spanish vowel) makes the whole text UCS-2, 70 (67).
GSM7 = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
           "¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENDED = set("^{}\\[~]|€")  # two septets each


def sms_segments(body: str) -> int:
    if all(c in GSM7 or c in GSM7_EXTENDED for c in body):
        length, single, multi = len(body) + sum(c in GSM7_EXTENDED for c in body), 160, 153
    else:
        length, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if length <= single else -(-length // multi)


def rate_units(message: Message) -> int:
    """What a message counts against its channel's rate: carriers' and Twilio's throughput
    limits count SMS segments, not messages."""
    return sms_segments(message.body) if message.medium == "sms" else 1


class Channel(Protocol):
    name: str
    pacer: Pacer

    def send(self, message: Message) -> Delivery:
        """Hand the message to the provider; raise SendError if it did not take it, or
        UncertainSendError if it cannot tell. Called from several threads at once."""
