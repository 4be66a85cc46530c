"""Loopback receivers for notification sinks: an HTTP server that records POSTs (and can answer
500 first) and a real SMTP server (aiosmtpd) that records mail."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import message_from_bytes
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.http_double import serving
from tests.support.processes import HOST, free_port


class HttpSink:
    """Records every POST body (parsed JSON) per path; ``fail_first`` requests get HTTP 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[str, Any]] = []
        self.attempts = 0
        self._lock = threading.Lock()

    def respond(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any, dict]:
        with self._lock:
            self.attempts += 1
            if self.attempts <= self.fail_first:
                return 500, {"error": "try later"}, {}
            self.requests.append((path, json.loads(body or b"null")))
        return 200, {"ok": True}, {}

    def bodies(self, path: str | None = None) -> list[Any]:
        with self._lock:
            return [b for p, b in self.requests if path is None or p == path]


@contextmanager
def http_sink(fail_first: int = 0) -> Iterator[tuple[str, HttpSink]]:
    sink = HttpSink(fail_first)
    with serving(sink.respond, name="http-sink") as url:
        yield url, sink


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@contextmanager
def smtp_server() -> Iterator[tuple[int, list[Any]]]:
    """A real SMTP server on a free loopback port; yields (port, received messages)."""
    box = _Mailbox()
    controller = Controller(box, hostname=HOST, port=free_port())
    controller.start()
    try:
        yield controller.port, box.messages
    finally:
        controller.stop()


def wait_for(check: Callable[[], Any], timeout: float = 5.0, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(every)
