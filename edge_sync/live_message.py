"""The live-path message: rows of one stream, signed, on ``edgeplat/<tenant>/<device>/<stream>``.

Shared by the device (which builds and signs it) and the central subscriber (which parses
and verifies it), like the batch format is. A message is the device's 64-byte Ed25519
signature followed by the JSON body it signs: ``v``, ``tenant_id``, ``device_id``,
``stream``, ``key_id`` and up to ``MAX_ROWS`` rows, each ``[seq, hlc, ts, {payload}]`` with
the envelope as the cache stamped it, so the central side can tell it is the same row a
batch will deliver later. Signing the exact bytes (no canonical re-encoding) and one
signature per message rather than per row keep the device's cost per published row to a
few microseconds (docs/decisions.md, "Live alerts over MQTT beside the batch path").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge_sync.identity import SIGNATURE_BYTES, DeviceIdentity, verify_signature
from edge_sync.ids import validate_id
from edge_sync.streams import STREAMS

VERSION = 2
TOPIC_ROOT = "edgeplat"
MAX_MESSAGE_BYTES = 1024 * 1024  # a few hundred small rows; anything bigger is hostile
MAX_ROWS = 500
_FIELDS = ("v", "tenant_id", "device_id", "stream", "key_id", "rows")


class LiveMessageError(ValueError):
    """A live message that cannot be trusted; ``reason`` is machine-readable (quarantine reason)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def topic_for(tenant_id: str, device_id: str, stream: str, root: str = TOPIC_ROOT) -> str:
    return f"{root}/{tenant_id}/{device_id}/{stream}"


def sign_rows(
    identity: DeviceIdentity, stream: str, rows: list[tuple[int, int, int, dict[str, Any]]]
) -> bytes:
    """The signed message for recorded rows of ``stream``: (seq, hlc, ts_ms, row) each.

    A row dict may hold keys beyond the payload columns (``ts``); the central side reads
    only the stream's payload columns.
    """
    return RowSigner(identity).sign(stream, rows)


class RowSigner:
    """Signs messages of one device, with each stream's fixed JSON head encoded once.

    The head (version, tenant, device, stream, key id) is the same in every message of a
    stream, so only the rows are encoded per message; the bytes equal ``json.dumps`` of the
    whole document with compact separators.
    """

    def __init__(self, identity: DeviceIdentity) -> None:
        self._identity = identity
        self._heads: dict[str, bytes] = {}
        self._encode = json.JSONEncoder(separators=(",", ":"), default=str).encode

    def _head(self, stream: str) -> bytes:
        head = self._heads.get(stream)
        if head is None:
            identity = self._identity
            doc = {
                "v": VERSION,
                "tenant_id": identity.tenant_id,
                "device_id": identity.device_id,
                "stream": stream,
                "key_id": identity.key_id,
            }
            head = self._heads[stream] = json.dumps(doc, separators=(",", ":")).encode()[:-1] + b',"rows":'
        return head

    def sign(self, stream: str, rows: list[tuple[int, int, int, dict[str, Any]]]) -> bytes:
        body = self._head(stream) + self._encode(rows).encode() + b"}"
        return self._identity.sign(body) + body


def sign_row(
    identity: DeviceIdentity, stream: str, seq: int, hlc: int, ts_ms: int, row: dict[str, Any]
) -> bytes:
    """A message of one row (see :func:`sign_rows`)."""
    return sign_rows(identity, stream, [(seq, hlc, ts_ms, row)])


@dataclass(frozen=True)
class LiveMessage:
    """One row of a verified live message, with its envelope."""

    tenant_id: str
    device_id: str
    stream: str
    seq: int
    hlc: int
    ts_ms: int
    row: dict[str, Any]
    key_id: str

    @property
    def identity(self) -> tuple[str, str, str, int]:
        return (self.tenant_id, self.device_id, self.stream, self.seq)


@dataclass(frozen=True)
class LiveBatch:
    """A parsed live message whose signature has not been checked yet (see :func:`verify`)."""

    tenant_id: str
    device_id: str
    stream: str
    rows: list[LiveMessage]
    key_id: str
    signed_bytes: bytes
    signature: bytes


def _non_negative_ints(values: list[Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


def parse(topic: str, payload: bytes, root: str = TOPIC_ROOT) -> LiveBatch:
    """Parse and check the shape of one message; the topic must name the same tenant, device and stream."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise LiveMessageError("live_too_large", f"{len(payload)} bytes > {MAX_MESSAGE_BYTES}")
    signature, body = bytes(payload[:SIGNATURE_BYTES]), bytes(payload[SIGNATURE_BYTES:])
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LiveMessageError("live_not_json", str(exc)[:200]) from None
    if not isinstance(doc, dict) or set(doc) != set(_FIELDS):
        raise LiveMessageError("live_bad_shape", f"expected the fields {sorted(_FIELDS)}")
    if doc["v"] != VERSION:
        raise LiveMessageError("live_bad_shape", f"unknown message version {doc['v']!r}")
    try:
        tenant = validate_id("tenant", doc["tenant_id"])
        device = validate_id("device", doc["device_id"])
    except (ValueError, TypeError) as exc:
        raise LiveMessageError("live_bad_shape", str(exc)[:200]) from None
    stream = doc["stream"]
    if stream not in STREAMS or stream == "state":
        raise LiveMessageError("live_bad_shape", f"stream {stream!r} is not published live")
    if topic != topic_for(tenant, device, stream, root):
        raise LiveMessageError(
            "live_topic_mismatch", f"topic {topic!r} does not name {tenant}/{device}/{stream}"
        )
    rows = doc["rows"]
    if not isinstance(rows, list) or not 0 < len(rows) <= MAX_ROWS:
        raise LiveMessageError("live_bad_shape", f"rows must be a list of 1 to {MAX_ROWS} rows")
    if not all(
        isinstance(r, list) and len(r) == 4 and _non_negative_ints(r[:3]) and isinstance(r[3], dict)
        for r in rows
    ):
        raise LiveMessageError("live_bad_shape", "each row is [seq, hlc, ts, {payload}]")
    columns = STREAMS[stream].payload_names
    key_id = str(doc["key_id"])
    parsed = [
        LiveMessage(tenant, device, stream, seq, hlc, ts, {c: values.get(c) for c in columns}, key_id)
        for seq, hlc, ts, values in rows
    ]
    return LiveBatch(tenant, device, stream, parsed, key_id, body, signature)


def verify(message: LiveBatch, public_keys: list[tuple[str, bytes]]) -> None:
    """Raise ``live_bad_signature`` unless one of the device's registered keys signed ``message``."""
    if not public_keys:
        raise LiveMessageError("live_unknown_device", f"{message.tenant_id}/{message.device_id} has no key")
    for _key_id, key in public_keys:
        if verify_signature(key, message.signature, message.signed_bytes):
            return
    raise LiveMessageError("live_bad_signature", f"no registered key of {message.device_id} signed it")
