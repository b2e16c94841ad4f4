"""Email through SendGrid's Mail Send API, with the official SDK."""
from __future__ import annotations

import urllib.error

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (Category, ClickTracking, Content, CustomArg, Header, Mail, SubscriptionTracking,
                                   TrackingSettings)

from .base import Delivery, Message, Pacer, PermanentSendError, PerThread, TransientSendError, UncertainSendError

DEFAULT_HOST = "https://api.sendgrid.com"


class SendGridChannel:
    name = "sendgrid"

    def __init__(self, api_key: str, from_email: str, *, api_base_url: str = "", rate: float | None = None,
                 timeout: float = 15.0):
        if not from_email:
            raise RuntimeError("SendGrid needs SENDGRID_FROM_EMAIL")
        self.api_key, self.from_email = api_key, from_email
        self.host = api_base_url.rstrip("/") or DEFAULT_HOST
        self.timeout = timeout
        self.pacer = Pacer(rate)
        self._client = PerThread(self._new_client)

    def _new_client(self) -> SendGridAPIClient:
        client = SendGridAPIClient(self.api_key, host=self.host)
        client.client.timeout = self.timeout
        return client

    def mail(self, message: Message) -> Mail:
        mail = Mail(from_email=self.from_email, to_emails=message.to, subject=message.subject)
        mail.add_content(Content("text/plain", message.body))
        if message.html:
            mail.add_content(Content("text/html", message.html))
        if message.unsubscribe_url:
            mail.add_header(Header("List-Unsubscribe", f"<{message.unsubscribe_url}>"))
            mail.add_header(Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        # Opaque ids only: these come back on every event-webhook post.
        if message.alert_id is not None:
            # A notice to staff: its events must never be taken for an invitation's.
            mail.add_custom_arg(CustomArg("alert_id", str(message.alert_id)))
            mail.add_category(Category("staff-alert"))
        else:
            mail.add_custom_arg(CustomArg("invitation_id", str(message.invitation_id)))
            if message.reminder:
                mail.add_custom_arg(CustomArg("reminder", "1"))
            mail.add_category(Category("survey-reminder" if message.reminder else "survey-invitation"))
        # Click tracking would rewrite the survey link through SendGrid's redirector, putting the
        # token in a third party's logs; opens are tracked by a pixel and are enough. SendGrid's
        # own unsubscribe footer and header would compete with ours.
        mail.tracking_settings = TrackingSettings(click_tracking=ClickTracking(False, False),
                                                  subscription_tracking=SubscriptionTracking(False))
        return mail

    def send(self, message: Message) -> Delivery:
        try:
            response = self._client.get().send(self.mail(message))
        except HTTPError as exc:
            status = exc.status_code
            text = f"SendGrid {status}"
            if status in (401, 403, 429) or status >= 500:
                raise TransientSendError(text, code=str(status)) from None
            # A 400 or 413 is our request, not the patient's address (SendGrid reports bad
            # addresses later, as bounce and dropped events): no other channel is tried.
            raise PermanentSendError(text, code=str(status)) from None
        except urllib.error.URLError as exc:
            # urllib wraps only what fails while connecting or writing the request: SendGrid
            # cannot have acted on a request it did not receive whole.
            raise TransientSendError(f"SendGrid unreachable ({type(exc.reason).__name__})",
                                     code="unreachable") from None
        except OSError as exc:
            # Read timeouts and resets come after the request was sent. SendGrid has no look-up
            # by message, so its event webhook settles these (scheduling/delivery.py).
            raise UncertainSendError(f"no answer from SendGrid ({type(exc).__name__})") from None
        return Delivery(response.headers.get("X-Message-Id"), "accepted")
