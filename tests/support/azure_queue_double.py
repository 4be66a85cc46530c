"""A loopback test double of the Azure Storage Queue service REST API (not an emulator).

``running_azure_queue_double()`` serves on 127.0.0.1 (free port), path-style as Azurite does
(``/<account>/<queue>...``), the calls ``azure-storage-queue``'s ``QueueClient`` makes to create
a queue and to put, get and delete messages:

- ``PUT /<account>/<queue>`` (create), ``POST /<account>/<queue>/messages`` (XML
  ``<QueueMessage><MessageText>``), ``GET /<account>/<queue>/messages?numofmessages=&visibilitytimeout=``
  (``QueueMessagesList`` with ``PopReceipt``, ``DequeueCount``, ``TimeNextVisible``),
  ``DELETE /<account>/<queue>/messages/<id>?popreceipt=``.

It keeps what the service keeps and a reader could get wrong: a received message is invisible
until its visibility timeout passes, each receive gives a new pop receipt, and a delete with an
old one is refused (400 ``PopReceiptMismatch``; an unknown id: 404 ``MessageNotFound``). Errors
use the service's XML shape and ``x-ms-error-code``. It does not check the SharedKey signature.
``outage = True`` answers every request with 503 ``ServerBusy``. ``messages(queue)`` shows what
a queue holds.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

HOST = "127.0.0.1"
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "RGV2U3RvcmVBY2NvdW50S2V5Rm9yVGhlRG91YmxlT25seQ=="  # any Base64: the double checks no signature


@dataclass
class StoredMessage:
    id: str
    text: str
    inserted: float
    visible_at: float
    pop_receipt: str = ""
    dequeue_count: int = 0


@dataclass
class AzureQueueDouble:
    """The service's state: queues of messages; ``outage`` makes it answer 503."""

    queues: dict[str, list[StoredMessage]] = field(default_factory=dict)
    outage: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    endpoint: str = ""

    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"QueueEndpoint={self.endpoint}/{ACCOUNT};"
        )

    def messages(self, queue: str) -> list[StoredMessage]:
        with self.lock:
            return list(self.queues.get(queue, []))

    # -- the service

    def respond(self, method: str, path: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        if self.outage:
            return _error(503, "ServerBusy", "The server is currently unable to receive requests.")
        url = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != ACCOUNT:
            return _error(400, "InvalidUri", f"unknown path {url.path}")
        queue, rest = parts[1], parts[2:]
        with self.lock:
            if method == "PUT" and not rest:
                self.queues.setdefault(queue, [])
                return 201, b"", {}
            if queue not in self.queues:
                return _error(404, "QueueNotFound", f"queue {queue} does not exist")
            stored = self.queues[queue]
            now = time.time()
            if method == "POST" and rest == ["messages"]:
                text = ET.fromstring(body).findtext("MessageText") or ""
                m = StoredMessage(uuid.uuid4().hex, text, now, now + int(query.get("visibilitytimeout", 0)))
                m.pop_receipt = uuid.uuid4().hex
                stored.append(m)
                return 201, _list([m], with_text=False), {}
            if method == "GET" and rest == ["messages"]:
                n = int(query.get("numofmessages", 1))
                if not 1 <= n <= 32:
                    return _error(400, "OutOfRangeQueryParameterValue", "numofmessages must be 1..32")
                hide = int(query.get("visibilitytimeout", 30))
                out = [m for m in stored if m.visible_at <= now][:n]
                for m in out:
                    m.visible_at, m.pop_receipt = now + hide, uuid.uuid4().hex
                    m.dequeue_count += 1
                return 200, _list(out, with_text=True), {}
            if method == "DELETE" and len(rest) == 2 and rest[0] == "messages":
                m = next((m for m in stored if m.id == rest[1]), None)
                if m is None:
                    return _error(404, "MessageNotFound", "The specified message does not exist.")
                if m.pop_receipt != query.get("popreceipt"):
                    return _error(400, "PopReceiptMismatch", "The specified pop receipt did not match.")
                stored.remove(m)
                return 204, b"", {}
        return _error(400, "UnsupportedHttpVerb", f"{method} {url.path} is not served by the double")


def _rfc1123(t: float) -> str:
    return formatdate(t, usegmt=True)


def _list(messages: list[StoredMessage], *, with_text: bool) -> bytes:
    root = ET.Element("QueueMessagesList")
    for m in messages:
        el = ET.SubElement(root, "QueueMessage")
        fields = {
            "MessageId": m.id,
            "InsertionTime": _rfc1123(m.inserted),
            "ExpirationTime": _rfc1123(m.inserted + 7 * 86400),
            "PopReceipt": m.pop_receipt,
            "TimeNextVisible": _rfc1123(m.visible_at),
        }
        if with_text:
            fields |= {"DequeueCount": str(m.dequeue_count), "MessageText": m.text}
        for k, v in fields.items():
            ET.SubElement(el, k).text = v
    return b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(root)


def _error(status: int, code: str, message: str) -> tuple[int, bytes, dict[str, str]]:
    body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return status, body.encode(), {"x-ms-error-code": code}


@contextmanager
def running_azure_queue_double() -> Iterator[AzureQueueDouble]:
    """Serve a fresh double on a free loopback port; stop the server on exit."""
    double = AzureQueueDouble()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, out, headers = double.respond(self.command, self.path, body)
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(out)))
            self.send_header("x-ms-request-id", uuid.uuid4().hex)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="azure-queue-double", daemon=True)
    thread.start()
    double.endpoint = f"http://{HOST}:{server.server_address[1]}"
    try:
        yield double
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
