"""The MLLP listener (`feedback-service mllp`): HL7 v2 over TCP, framed 0x0B ... 0x1C 0x0D.

Each connection answers its frames in the order they came (those of one read are stored together).
A message we act on is stored, committed, and only then acknowledged (MSA|AA); storing is done by one thread that
commits whatever all connections have waiting in one transaction, so ten senders cost about what
one does. Turning stored messages into events is done by a second thread, in arrival order.
Bytes that are no message get an AR, a message with bad content an AE; the connection stays up.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import queue
import sys
import threading
import time
from concurrent.futures import Future

from ..extensions import db
from .hl7v2 import ack, control_id, decode, message_type, normalise
from .inbound import MessageError
from .intake import REUSED_ID, check_hl7, process_pending, store_messages

log = logging.getLogger(__name__)

START, END = b"\x0b", b"\x1c\x0d"
STORE_BATCH = 500
QUIET = 0.05  # seconds without a store: the feed is quiet, the backlog is worked off at full speed
BUSY_REST = 3.0  # while it is busy, processing takes a quarter of the time at most
PROCESS_BATCH = 50


def frame(text: str) -> bytes:
    return START + text.encode("utf-8") + END


class Deframer:
    """Splits a byte stream into ("message", bytes) and ("garbage", bytes) items, however the
    stream was cut into reads. Bytes outside a frame are garbage (whitespace between frames is
    not); a frame that grows past `max_bytes` is answered as ("too-large", b"") and skipped to its
    end."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.buffer = bytearray()
        self.skipping = False

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self.buffer += data
        out: list[tuple[str, bytes]] = []
        while self.buffer:
            if self.skipping:
                end = self.buffer.find(END)
                if end == -1:
                    # Keep a trailing 0x1C: its 0x0D may come in the next read.
                    del self.buffer[:-1 if self.buffer.endswith(END[:1]) else len(self.buffer)]
                    break
                del self.buffer[:end + len(END)]
                self.skipping = False
                continue
            start = self.buffer.find(START)
            if start != 0:
                # Bytes before a frame, or with no frame in sight: answer them now, keep the rest.
                junk = bytes(self.buffer if start == -1 else self.buffer[:start])
                del self.buffer[:len(junk)]
                if junk.strip():
                    out.append(("garbage", junk))
                continue
            end = self.buffer.find(END, 1)
            restart = self.buffer.find(START, 1)
            if restart != -1 and (end == -1 or restart < end):
                out.append(("garbage", bytes(self.buffer[1:restart])))  # a frame that never ended
                del self.buffer[:restart]
                continue
            if end == -1:
                if len(self.buffer) > self.max_bytes:
                    out.append(("too-large", b""))
                    self.skipping = True
                    continue  # skipped to its end, which may be in this read or a later one
                break
            out.append(("message", bytes(self.buffer[1:end])) if end - 1 <= self.max_bytes else ("too-large", b""))
            del self.buffer[:end + len(END)]
        return out


class Listener:
    """The listener, its storing thread and its processing thread, for one app."""

    def __init__(self, app, source: str, max_bytes: int, allowed: str = ""):
        self.app = app
        # A bad entry stops start-up (ValueError names it).
        self.allowed = [ipaddress.ip_network(a.strip(), strict=False) for a in allowed.split(",") if a.strip()]
        self.source = source
        self.max_bytes = max_bytes
        self.settings = app.extensions["feedback_intake"]
        self.pending: queue.Queue = queue.Queue()
        self.stored = threading.Event()  # wakes the processor
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._store_loop, name="mllp-store", daemon=True),
                        threading.Thread(target=self._process_loop, name="mllp-process", daemon=True)]
        self.counts = {"acknowledged": 0, "stored": 0, "rejected": 0, "ignored": 0}
        # One writer at a time in this process: on SQLite a second one would wait in the
        # driver's sleep-and-retry loop, far longer than the first one's transaction.
        self.writing = threading.Lock()
        self.store_waiting = threading.Event()
        self.last_store = 0.0

    # -- the network side (asyncio) --

    async def serve(self, host: str, port: int, ready: threading.Event | None = None,
                    stop: asyncio.Event | None = None):
        for t in self.threads:
            t.start()
        server = await asyncio.start_server(self._connection, host, port, limit=self.max_bytes + 1024)
        self.port = server.sockets[0].getsockname()[1]
        log.info("MLLP listening on %s:%s (source %s)", host, self.port, self.source)
        if ready is not None:
            ready.set()
        async with server:
            if stop is None:
                await server.serve_forever()
            else:
                await stop.wait()
        # No new connections; those open are still answered while the backlog is drained.
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        peer = writer.get_extra_info("peername")
        if self.allowed and not (peer and any(ipaddress.ip_address(peer[0]) in net for net in self.allowed)):
            log.warning("MLLP connection from %s refused: not in FEEDBACK_MLLP_ALLOWED_CLIENTS", peer[0] if peer else "?")
            writer.close()
            return
        log.info("MLLP connection from %s", peer[0] if peer else "?")
        deframer = Deframer(self.max_bytes)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                # Frames that came in one read (a sender that does not wait for each ACK) are
                # stored together, and answered in order.
                answers = await asyncio.gather(*(self._answer(kind, body) for kind, body in deframer.feed(data)))
                for answer in answers:
                    writer.write(frame(answer))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the listener is stopping; every ACK already written stands
        finally:
            writer.close()

    async def _answer(self, kind: str, body: bytes) -> str:
        try:
            return await self._answer_frame(kind, body)
        except Exception:  # noqa: BLE001  (a bug must cost one message an AR, not the connection)
            log.exception("MLLP: a message could not be answered")
            return ack(None, "AR", "the message could not be handled; it was not stored")

    async def _answer_frame(self, kind: str, body: bytes) -> str:
        if kind == "too-large":
            self.counts["rejected"] += 1
            return ack(None, "AR", f"message larger than {self.max_bytes} bytes")
        text = decode(body)
        if kind == "garbage":
            self.counts["rejected"] += 1
            return ack(text, "AR", "not an MLLP-framed HL7 v2 message")
        try:
            message, acted_on = check_hl7(text, self.settings)
        except MessageError as exc:
            self.counts["rejected"] += 1
            # The field only: the reason may quote a value (a birth date), which stays out of logs.
            log.info("MLLP message refused (%s): %s", "AR" if exc.reject else "AE", exc.reason.split(":")[0])
            return ack(text, "AR" if exc.reject else "AE", exc.reason)
        if not acted_on:
            self.counts["ignored"] += 1
            return ack(message, "AA")  # a type we do not act on: acknowledged, not kept
        done: Future = Future()
        self.pending.put(((self.source, "hl7v2", control_id(message), message_type(message), normalise(text)), done))
        try:
            stored = await asyncio.wrap_future(done)
        except Exception:  # noqa: BLE001  (the store failed: the sender must keep the message)
            return ack(message, "AR", "the message could not be stored just now; send it again")
        if not stored:
            self.counts["rejected"] += 1
            return ack(message, "AE", REUSED_ID)
        self.counts["acknowledged"] += 1
        return ack(message, "AA")

    # -- the database side (threads) --

    def _store_loop(self):
        with self.app.app_context():
            while not (self.stopping.is_set() and self.pending.empty()):
                try:
                    batch = [self.pending.get(timeout=0.2)]
                except queue.Empty:
                    continue
                while len(batch) < STORE_BATCH:
                    try:
                        batch.append(self.pending.get_nowait())
                    except queue.Empty:
                        break
                self._store(batch)
                self.stored.set()

    def _store(self, batch: list) -> None:
        """Commit a batch, and answer each sender; if the batch fails, each message is tried on
        its own, so that one bad message costs only its own sender an AR."""
        try:
            self.store_waiting.set()
            with self.writing:
                self.store_waiting.clear()
                stored = store_messages([item for item, _ in batch])
                self.last_store = time.monotonic()
        except Exception as exc:  # noqa: BLE001
            self.store_waiting.clear()
            db.session.rollback()
            if len(batch) > 1:
                for one in batch:
                    self._store([one])
                return
            log.exception("MLLP: a message could not be stored; its sender gets an AR")
            batch[0][1].set_exception(exc)
            return
        self.counts["stored"] += sum(stored)
        for (_, done), ok in zip(batch, stored):
            done.set_result(ok)

    def _process_loop(self):
        """Turn stored messages into events, oldest first. While senders are busy (a store in the
        last QUIET seconds) it takes one message at a time and then rests BUSY_REST times as long
        as that took, so that ACKs keep most of the machine and the backlog still moves; when the
        feed is quiet it works the backlog off at full speed, giving way whenever a store waits."""
        def store_first() -> bool:
            return self.store_waiting.is_set() or not self.pending.empty()

        with self.app.app_context():
            while True:
                self.stored.wait(timeout=1.0)
                finishing = self.stopping.is_set() and self.pending.empty() and not self.threads[0].is_alive()
                busy = not finishing and (store_first() or time.monotonic() - self.last_store < QUIET)
                started = time.monotonic()
                try:
                    with self.writing:
                        done = process_pending(self.settings, limit=1 if busy else PROCESS_BATCH,
                                               yield_to=None if finishing else store_first)
                except Exception:  # noqa: BLE001  (the database went away: try again shortly)
                    log.exception("MLLP: processing stored messages failed; will retry")
                    db.session.rollback()
                    done = 0
                    time.sleep(1)
                if busy and done:
                    time.sleep((time.monotonic() - started) * BUSY_REST)
                if not done:
                    self.stored.clear()
                    if finishing:
                        return

    def stop(self):
        self.stopping.set()
        self.stored.set()
        for t in self.threads:
            t.join(timeout=30)
        log.info("MLLP stopped: %s", ", ".join(f"{n} {what}" for what, n in self.counts.items()))


def run(app, host: str, port: int, source: str) -> None:
    """Serve until SIGINT or SIGTERM; what was acknowledged is stored, and processed before exit."""
    import signal

    config = app.config
    listener = Listener(app, source, config["FEEDBACK_MLLP_MAX_MESSAGE_BYTES"], config["FEEDBACK_MLLP_ALLOWED_CLIENTS"])
    # The network thread must get the interpreter back quickly from the processing thread: a
    # sender waits for each ACK.
    sys.setswitchinterval(0.0005)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await listener.serve(host, port, stop=stop)
    asyncio.run(main())
