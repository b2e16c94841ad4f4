"""A small fake of Twilio's Messages API and SendGrid's Mail Send API on 127.0.0.1, for the real
SDKs to talk to: it records every request exactly as it arrived, answers as the providers do,
and can be told to fail, throttle or be slow. Used by the tests and by bench/."""
from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from email.utils import format_datetime
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TWILIO_MESSAGES = re.compile(r"/2010-04-01/Accounts/(?P<sid>AC\w+)/Messages\.json")
SENDGRID_SEND = "/v3/mail/send"


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict
    headers: dict
    form: dict | None = None
    json: object = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class Reply:
    status: int = 0
    body: object = None
    delay: float = 0.0
    accept: bool = False  # act as usual (take the message), only after the delay
    to: str | None = None  # only for sends to this recipient (None: the next send, whoever it is to)


class _Server(ThreadingHTTPServer):
    # The dispatcher opens up to FEEDBACK_SEND_CONCURRENCY connections at once: the default listen
    # backlog of 5 drops some of them under load, which the service rightly takes as sends in doubt.
    request_queue_size = 128


class FakeProvider:
    def __init__(self):
        self.requests: list[Seen] = []
        self.messages: list[dict] = []  # what Twilio accepted, newest last
        self.latency = 0.0
        self.in_flight = self.max_in_flight = 0  # requests being answered at once
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the providers do

            def do_GET(self):
                fake._handle(self)

            def do_POST(self):
                fake._handle(self)

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reply_next(self, status: int, body=None, delay: float = 0.0, times: int = 1, to: str | None = None) -> None:
        """Answer the next `times` sends (to `to`) with this instead of accepting them."""
        with self._lock:
            self._script.extend(Reply(status, body, delay, to=to) for _ in range(times))

    def accept_slowly(self, delay: float, times: int = 1, to: str | None = None) -> None:
        """Take the next `times` sends (to `to`), but answer only after `delay` seconds."""
        with self._lock:
            self._script.extend(Reply(delay=delay, accept=True, to=to) for _ in range(times))

    def _scripted_for(self, seen: Seen) -> Reply | None:
        if seen.method != "POST":
            return None
        for reply in self._script:
            if reply.to is None or reply.to == _recipient(seen):
                self._script.remove(reply)
                return reply
        return None

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.messages.clear()
            self._script.clear()
            self.latency = 0.0
            self.max_in_flight = 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sends(self, to: str | None = None) -> list[Seen]:
        """Message sends received (accepted or not), optionally to one recipient."""
        with self._lock:
            seen = [r for r in self.requests if r.method == "POST"]
        return seen if to is None else [r for r in seen if _recipient(r) == to]

    # -- the providers' behaviour -------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        seen = Seen(handler.command, url.path, {k: v[0] for k, v in parse_qs(url.query).items()},
                    dict(handler.headers.items()))
        ctype = handler.headers.get("Content-Type", "")
        if ctype.startswith("application/x-www-form-urlencoded"):
            seen.form = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        elif ctype.startswith("application/json") and raw:
            seen.json = json.loads(raw)
        with self._lock:
            self.requests.append(seen)
            scripted = self._scripted_for(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._respond(handler, url.path, seen, scripted)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _respond(self, handler, path: str, seen: Seen, scripted: Reply | None) -> None:
        if scripted and not scripted.accept:
            answer = (scripted.status, scripted.body, None)
        else:
            answer = self._default(handler.command, path, seen)
        # The provider acts first, then its answer takes the time: a client that gives up early
        # has still had its message taken (Twilio creates the resource before it responds).
        delay = scripted.delay if scripted else self.latency
        if delay:
            time.sleep(delay)
        try:
            self._answer(handler, *answer)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting

    def _default(self, method: str, path: str, seen: Seen) -> tuple:
        twilio = TWILIO_MESSAGES.fullmatch(path)
        if twilio and method == "POST":
            return 201, self._accept_text(twilio["sid"], seen.form or {}), None
        if path == "/_stats":  # for a benchmark running the fake in a process of its own
            with self._lock:
                return 200, {"posts": sum(r.method == "POST" for r in self.requests),
                             "max_in_flight": self.max_in_flight,
                             "sample_body": self.messages[-1]["body"] if self.messages else None}, None
        if path == SENDGRID_SEND and method == "POST":
            return 202, None, {"X-Message-Id": uuid.uuid4().hex[:22]}
        return 404, {"code": 20404, "message": "not found", "status": 404}, None

    def _accept_text(self, account_sid: str, form: dict) -> dict:
        message = {
            "sid": "SM" + uuid.uuid4().hex, "account_sid": account_sid, "to": form.get("To"),
            "from": form.get("From"), "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form.get("Body"), "status": "queued", "num_segments": "1", "direction": "outbound-api",
            "date_created": format_datetime(datetime.now(timezone.utc), usegmt=True), "date_sent": None,
            "error_code": None, "error_message": None, "price": None, "api_version": "2010-04-01",
        }
        with self._lock:
            self.messages.append(message)
        return message

    @staticmethod
    def _answer(handler, status: int, body, headers: dict | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        if data:
            handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def _recipient(seen: Seen) -> str | None:
    if seen.form is not None:
        return seen.form.get("To")
    personalizations = (seen.json or {}).get("personalizations") or [{}]
    return (personalizations[0].get("to") or [{}])[0].get("email")


if __name__ == "__main__":
    # python -m tests.fake_providers [LATENCY_SECONDS]: serve until killed, after printing the URL.
    import sys
    provider = FakeProvider()
    provider.latency = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    print(provider.url, flush=True)
    provider.thread.join()
