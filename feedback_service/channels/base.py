"""The channel interface: one outgoing message in, one delivery record (or an error) out."""
from __future__ import annotations

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


@dataclass(frozen=True)
class Delivery:
    provider_message_id: str | None
    status: str = "sent"


class SendError(Exception):
    """A send that did not go out. `transient` ones are retried with backoff."""

    transient = False

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class TransientSendError(SendError):
    transient = True


class PermanentSendError(SendError):
    pass


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> Delivery:
        """Hand the message to the provider; raise SendError if it did not accept it."""
