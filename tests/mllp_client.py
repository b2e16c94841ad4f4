"""A plain MLLP client over a real socket, for the tests and the benchmark: frames what it sends
and reads back exactly one framed answer per call."""
from __future__ import annotations

import socket

START, END = b"\x0b", b"\x1c\x0d"


class MllpClient:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: str | bytes) -> None:
        body = message.encode("utf-8") if isinstance(message, str) else message
        self.sock.sendall(START + body + END)

    def read_ack(self) -> str:
        while END not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the listener closed the connection")
            self.buffer += chunk
        frame, _, self.buffer = self.buffer.partition(END)
        assert frame.startswith(START), f"an answer must be framed: {frame[:40]!r}"
        return frame[1:].decode("utf-8")

    def exchange(self, message: str | bytes) -> str:
        self.send(message)
        return self.read_ack()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
