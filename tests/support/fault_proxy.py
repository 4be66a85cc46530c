"""A loopback HTTP proxy that injects faults in front of an S3 endpoint (moto) for tests.

The client talks to the proxy as if it were the endpoint, so botocore's real retry path
runs: an injected 5xx is a real HTTP response, and an injected hang is a real socket that
answers nothing until the client's read timeout fires. Faults match requests by method and
a regular expression searched in the path (with query string), and fire a set number of
times; every request is logged so tests can count attempts.

    proxy = FaultProxy(moto_endpoint)
    with proxy as endpoint:
        proxy.inject("PUT", r"/bucket/key$", status=503)
"""

from __future__ import annotations

import http.client
import re
import select
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# headers that belong to one hop, not to the request being forwarded
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


@dataclass
class Fault:
    """Answer matching requests ``times`` times with ``status``, or, if ``hang_seconds`` is set, with
    nothing until the client hangs up or ``hang_seconds`` pass (then drop the connection)."""

    method: str
    path_pattern: str
    times: int = 1
    status: int = 503
    code: str = "ServiceUnavailable"  # the S3 error code in the XML body
    hang_seconds: float | None = None
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.fired < self.times
            and self.method in ("*", method)
            and re.search(self.path_pattern, path) is not None
        )


class FaultProxy:
    """Forward HTTP requests to ``upstream``, injecting the configured faults first."""

    def __init__(self, upstream: str, *, serialize: bool = False) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request received
        self._lock = threading.Lock()
        # serialize=True forwards one request at a time: moto checks If-None-Match and then
        # stores without a lock, while S3 decides a conditional write atomically
        self._forward_lock: threading.Lock | None = threading.Lock() if serialize else None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def inject(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int = 503,
        code: str = "ServiceUnavailable",
        hang_seconds: float | None = None,
        times: int = 1,
    ) -> Fault:
        fault = Fault(method.upper(), path_pattern, times, status, code, hang_seconds)
        with self._lock:
            self.faults.append(fault)
        return fault

    def count(self, method: str, path_pattern: str) -> int:
        """How many requests with this method whose path matches the pattern were received."""
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and re.search(path_pattern, p))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.fired += 1
                    return fault
        return None

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like a real endpoint

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # quiet test output

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._read_body()
                fault = proxy._take_fault(self.command, self.path)
                if fault is not None and fault.hang_seconds is not None:
                    # hold the request unanswered past the client's read timeout, then drop it
                    self._hang(fault.hang_seconds)
                    self.close_connection = True
                    return
                if fault is not None:
                    payload = (
                        '<?xml version="1.0" encoding="UTF-8"?>'
                        f"<Error><Code>{fault.code}</Code><Message>injected by FaultProxy</Message></Error>"
                    ).encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                if proxy._forward_lock is None:
                    self._forward(body)
                else:
                    with proxy._forward_lock:
                        self._forward(body)

            def _hang(self, seconds: float) -> None:
                """Answer nothing until the client hangs up (its read timeout) or ``seconds`` pass."""
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    readable, _, _ = select.select([self.connection], [], [], 0.05)
                    if not readable:
                        continue
                    try:
                        if not self.connection.recv(1, socket.MSG_PEEK):
                            return  # the client closed the connection
                    except OSError:
                        return
                    time.sleep(0.05)

            def _forward(self, body: bytes) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    for name, value in response.getheaders():
                        # send_response already wrote Server and Date
                        if name.lower() not in _HOP_BY_HOP | {"content-length", "server", "date"}:
                            self.send_header(name, value)
                    if self.command == "HEAD":
                        # HEAD carries the object's length with no body: pass it through
                        self.send_header("Content-Length", response.getheader("Content-Length", "0"))
                    else:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
