"""A loopback HTTP server for API doubles: the double answers requests, this serves them.

A double supplies ``respond(method, path, headers, body) -> (status, json_body, headers)``
(``json_body`` None sends no body, bytes are sent as they are) and maps its own errors to statuses; the server reads the
request, writes the JSON answer, and is stopped (shutdown, close, thread joined) on exit.
With ``tls`` (a server-side ``ssl.SSLContext``) it serves HTTPS, and ``respond`` gets a fifth
argument: the client certificate (``getpeercert()``, None without one), for doubles of
mutual-TLS APIs.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"
Respond = Callable[[str, str, Any, bytes], tuple[int, Any, dict[str, str]]]


def _handler(
    respond: Respond, content_type: str, protocol: str, tls: bool = False
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = protocol

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            args: tuple[Any, ...] = (self.command, self.path, self.headers, body)
            if tls:
                args += (self.connection.getpeercert() or None,)
            status, out, headers = respond(*args)
            data = b"" if out is None else out if isinstance(out, bytes) else json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

    return Handler


@contextmanager
def serving(
    respond: Respond,
    *,
    name: str,
    content_type: str = "application/json",
    protocol: str = "HTTP/1.0",
    tls: ssl.SSLContext | None = None,
) -> Iterator[str]:
    """Serve ``respond`` on a free loopback port; yield the base URL; stop the server on exit."""
    server = ThreadingHTTPServer((HOST, 0), _handler(respond, content_type, protocol, tls is not None))
    if tls is not None:
        # the handshake runs in the handler thread, so a client that stalls blocks no one
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
