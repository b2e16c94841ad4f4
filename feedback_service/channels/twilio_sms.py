"""SMS through Twilio's Messages API, with the official SDK."""
from __future__ import annotations

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import NewConnectionError

from .base import (Delivery, Message, Pacer, PermanentSendError, PerThread, SendError, TransientSendError,
                   UncertainSendError)


class TwilioChannel:
    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str, *, status_callback: str,
                 messaging_service_sid: str = "", from_number: str = "", api_base_url: str = "",
                 rate: float | None = None, timeout: float = 15.0):
        if not (messaging_service_sid or from_number):
            raise RuntimeError("Twilio needs TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER")
        self.account_sid, self.auth_token = account_sid, auth_token
        self.sender = ({"messaging_service_sid": messaging_service_sid} if messaging_service_sid
                       else {"from_": from_number})
        self.status_callback = status_callback
        self.api_base_url = api_base_url.rstrip("/")
        self.timeout = timeout
        self.pacer = Pacer(rate)
        self._client = PerThread(self._new_client)

    def _new_client(self) -> Client:
        client = Client(self.account_sid, self.auth_token, http_client=TwilioHttpClient(timeout=self.timeout))
        if self.api_base_url:
            client.api.base_url = self.api_base_url
        return client

    def send(self, message: Message) -> Delivery:
        try:
            sent = self._client.get().messages.create(
                to=message.to, body=message.body, **self.sender,
                # The invitation id rides in the (signed) callback URL, so a status matches its
                # invitation even before the message's sid is stored, or after a crash lost it.
                status_callback=f"{self.status_callback}?invitation={message.invitation_id}"
                                + ("&reminder=1" if message.reminder else ""))
        except TwilioRestException as exc:
            raise _error(exc) from None
        except requests.RequestException as exc:
            if _never_reached(exc):
                raise TransientSendError(f"Twilio unreachable ({type(exc).__name__})", code="unreachable") from None
            # The request may have reached Twilio and been taken: only its status callback (or
            # the patient's answer) can tell, so it is not sent again.
            raise UncertainSendError(f"no answer from Twilio ({type(exc).__name__})") from None
        return Delivery(sent.sid, sent.status)


# Twilio error codes that mean the patient's number will not take our texts: the rule's next
# channel is tried. 21610 is a STOP the carrier holds: the number is opted out for good.
ADDRESS_CODES = {21211, 21408, 21610, 21612, 21614}
BLOCKED_CODES = {21610}
# Too many requests; the sender's queue is full.
THROTTLED_CODES = {20429, 21611}


def _error(exc: TwilioRestException) -> SendError:
    # Twilio's message quotes the number: keep only the status and code.
    code = str(exc.code or exc.status)
    text = f"Twilio {exc.status}"
    if exc.code in ADDRESS_CODES:
        return PermanentSendError(text, code=code, address_refused=True, address_blocked=exc.code in BLOCKED_CODES)
    # Throttling, Twilio's own trouble, and everything else (our credentials, sender or account
    # settings): not the patient's number, so retried, never failed over.
    return TransientSendError(text, code=code)


def _never_reached(exc: requests.RequestException) -> bool:
    """Whether the request surely never reached Twilio: no connection, no TLS session, no proxy."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError,
                        requests.exceptions.ProxyError)):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)
