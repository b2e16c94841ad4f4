"""The console channel: each message as one JSON line in a file (or stdout), for development and demos."""
from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import asdict

from .base import Delivery, Message, Pacer, TransientSendError


class ConsoleChannel:
    name = "console"

    def __init__(self, outbox: str | None = None):
        self.outbox = outbox or None
        self.pacer = Pacer(None)

    def send(self, message: Message) -> Delivery:
        record = asdict(message)
        record = {"channel": record.pop("medium"), "transport": self.name, **record}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        try:
            if self.outbox is None:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                # One write() on an O_APPEND descriptor: lines from several workers never interleave.
                fd = os.open(self.outbox, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
        except OSError as exc:
            raise TransientSendError(f"outbox not writable: {exc.strerror}") from exc
        return Delivery(provider_message_id=f"console-{uuid.uuid4().hex}")
