"""The live-path message: one stream row as signed JSON on ``edgeplat/<tenant>/<device>/<stream>``.

Shared by the device (which builds and signs it) and the central subscriber (which parses
and verifies it), like the batch format is. A message carries the row's envelope as the
cache stamped it (tenant, device, stream, seq, hlc, ts) so the central side can tell it
is the same row a batch will deliver later, plus the payload columns, the signing key's id
and an Ed25519 signature over the canonical JSON of everything else.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from edge_sync.identity import DeviceIdentity, canonical_json, verify_signature
from edge_sync.ids import validate_id
from edge_sync.streams import STREAMS

VERSION = 1
TOPIC_ROOT = "edgeplat"
MAX_MESSAGE_BYTES = 16 * 1024  # a row is small; anything bigger is hostile
_FIELDS = ("v", "tenant_id", "device_id", "stream", "seq", "hlc", "ts", "row", "key_id")


class LiveMessageError(ValueError):
    """A live message that cannot be trusted; ``reason`` is machine-readable (quarantine reason)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def topic_for(tenant_id: str, device_id: str, stream: str, root: str = TOPIC_ROOT) -> str:
    return f"{root}/{tenant_id}/{device_id}/{stream}"


def sign_row(
    identity: DeviceIdentity, stream: str, seq: int, hlc: int, ts_ms: int, row: dict[str, Any]
) -> bytes:
    """The signed message bytes for one recorded row (payload columns only; ``ts`` is the envelope's)."""
    payload = {name: row.get(name) for name in STREAMS[stream].payload_names}
    body = {
        "v": VERSION,
        "tenant_id": identity.tenant_id,
        "device_id": identity.device_id,
        "stream": stream,
        "seq": int(seq),
        "hlc": int(hlc),
        "ts": int(ts_ms),
        "row": payload,
        "key_id": identity.key_id,
    }
    signature = identity.sign(canonical_json(body))
    return canonical_json({**body, "sig": base64.b64encode(signature).decode("ascii")})


@dataclass(frozen=True)
class LiveMessage:
    """A parsed live message whose signature has not been checked yet (see :func:`verify`)."""

    tenant_id: str
    device_id: str
    stream: str
    seq: int
    hlc: int
    ts_ms: int
    row: dict[str, Any]
    key_id: str
    signed_bytes: bytes
    signature: bytes

    @property
    def identity(self) -> tuple[str, str, str, int]:
        return (self.tenant_id, self.device_id, self.stream, self.seq)


def parse(topic: str, payload: bytes, root: str = TOPIC_ROOT) -> LiveMessage:
    """Parse and check the shape of one message; the topic must name the same tenant, device and stream."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise LiveMessageError("live_too_large", f"{len(payload)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LiveMessageError("live_not_json", str(exc)[:200]) from None
    if not isinstance(doc, dict) or set(doc) != {*_FIELDS, "sig"}:
        raise LiveMessageError("live_bad_shape", f"expected the fields {sorted({*_FIELDS, 'sig'})}")
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
    ints = [doc[k] for k in ("seq", "hlc", "ts")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
        raise LiveMessageError("live_bad_shape", "seq, hlc and ts must be non-negative integers")
    row = doc["row"]
    if not isinstance(row, dict) or set(row) != set(STREAMS[stream].payload_names):
        raise LiveMessageError("live_bad_shape", f"row must hold exactly the {stream} payload columns")
    try:
        signature = base64.b64decode(doc["sig"], validate=True)
    except (ValueError, TypeError):
        raise LiveMessageError("live_bad_signature", "signature is not base64") from None
    body = {k: doc[k] for k in _FIELDS}
    return LiveMessage(
        tenant, device, stream, *ints, row, str(doc["key_id"]), canonical_json(body), signature
    )


def verify(message: LiveMessage, public_keys: list[tuple[str, bytes]]) -> None:
    """Raise ``live_bad_signature`` unless one of the device's registered keys signed ``message``."""
    if not public_keys:
        raise LiveMessageError("live_unknown_device", f"{message.tenant_id}/{message.device_id} has no key")
    for _key_id, key in public_keys:
        if verify_signature(key, message.signature, message.signed_bytes):
            return
    raise LiveMessageError("live_bad_signature", f"no registered key of {message.device_id} signed it")
