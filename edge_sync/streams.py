"""The device streams: their schemas, priority classes, time-to-live and central tables.

One definition shared by the device cache, the batch format (schema fingerprints and
grouping columns) and the central ingest (the lakehouse table each stream's rows go to),
so both sides agree on what a ``telemetry`` row is and where it lands.

Every stream row carries the envelope columns ``tenant_id``, ``device_id``, ``stream``,
``seq`` (per device and stream), ``hlc``, ``node_id`` and ``ts`` (device wall time);
the payload columns follow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa

ENVELOPE = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("hlc", pa.int64(), nullable=False),
        pa.field("node_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)
ENVELOPE_NAMES = tuple(ENVELOPE.names)


@dataclass(frozen=True)
class StreamSpec:
    """A stream: payload schema, priority (higher is more important), default TTL, the
    lakehouse table of its rows (``table``, the stream's name unless set) and the payload
    columns that group its rows into series (``group_by``: the batch encoding sorts and
    scales per series)."""

    name: str
    payload: pa.Schema
    priority: int
    ttl_seconds: int | None
    table: str = ""
    group_by: tuple[str, ...] = ()
    # String payload columns appended after agents shipped: batches of older agents lack them
    # (their rows read as null), and their schema's fingerprint stays accepted (legacy_fingerprint).
    added: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.table:
            object.__setattr__(self, "table", self.name)
        unknown = [c for c in self.group_by if c not in self.payload.names]
        if unknown:
            raise ValueError(f"stream {self.name!r} groups by {unknown}, which are not payload columns")
        tail = self.payload.names[len(self.payload.names) - len(self.added) :] if self.added else []
        if list(self.added) != tail or any(
            not pa.types.is_string(self.payload.field(c).type) for c in self.added
        ):
            raise ValueError(
                f"stream {self.name!r}: added columns {self.added} must be the last, string, columns"
            )

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(list(ENVELOPE) + list(self.payload))

    @property
    def payload_names(self) -> tuple[str, ...]:
        return tuple(self.payload.names)

    @property
    def fingerprint(self) -> str:
        return schema_fingerprint(self.schema)

    @property
    def legacy_fingerprint(self) -> str | None:
        """The fingerprint of the schema before ``added`` (older agents' batches), or None."""
        if not self.added:
            return None
        return schema_fingerprint(pa.schema([f for f in self.schema if f.name not in self.added]))


def schema_fingerprint(schema: pa.Schema) -> str:
    """A stable short hash of column names and types (not metadata)."""
    desc = [[f.name, str(f.type)] for f in schema]
    return hashlib.sha256(json.dumps(desc, separators=(",", ":")).encode()).hexdigest()[:16]


DAY = 86_400

STREAMS: dict[str, StreamSpec] = {
    s.name: s
    for s in (
        StreamSpec(
            "alerts",
            pa.schema(
                [
                    pa.field("severity", pa.string()),
                    pa.field("code", pa.string()),
                    pa.field("message", pa.string()),
                ]
            ),
            priority=40,
            ttl_seconds=None,  # alerts never expire on the device
            group_by=("code",),
        ),
        StreamSpec(
            "health",
            pa.schema(
                [
                    pa.field("version", pa.string()),
                    pa.field("slot", pa.string()),
                    pa.field("desired_revision", pa.int64()),
                    pa.field("error_rate", pa.float64()),
                    # request and error counts since the previous health row: gates test
                    # rates on counts (a rate alone hides how much evidence it carries)
                    pa.field("requests", pa.int64()),
                    pa.field("errors", pa.int64()),
                    pa.field("crash_count", pa.int64()),
                    pa.field("cpu_pct", pa.float64()),
                    pa.field("mem_mb", pa.float64()),
                    pa.field("heartbeat", pa.int64()),
                    pa.field("queue_depth", pa.int64()),
                    # the edge agent's installer reports each step of an update (see
                    # edge_sync.slot_installer): downloading, installed, activated, committed,
                    # reverted; the version it concerns and, for a revert or a refusal, why
                    pa.field("update_state", pa.string()),
                    pa.field("update_version", pa.string()),
                    pa.field("update_reason", pa.string()),
                ]
            ),
            priority=30,
            ttl_seconds=30 * DAY,
            group_by=("version", "slot"),
            added=("update_state", "update_version", "update_reason"),
        ),
        StreamSpec(
            "telemetry",
            pa.schema([pa.field("metric", pa.string()), pa.field("value", pa.float64())]),
            priority=20,
            ttl_seconds=14 * DAY,
            group_by=("metric",),
        ),
        StreamSpec(
            "logs",
            pa.schema([pa.field("level", pa.string()), pa.field("message", pa.string())]),
            priority=10,
            ttl_seconds=7 * DAY,
            group_by=("level",),
        ),
        # Edits to keyed mutable state records travel as a stream too: one row per field edit.
        StreamSpec(
            "state",
            pa.schema(
                [
                    pa.field("namespace", pa.string()),
                    pa.field("key", pa.string()),
                    pa.field("field", pa.string()),
                    pa.field("value", pa.string()),  # JSON text
                    pa.field("origin", pa.string()),  # 'device' or 'central'
                ]
            ),
            priority=35,
            ttl_seconds=None,
            table="state_edits",
            group_by=("namespace", "key", "field"),
        ),
    )
}

# Streams in the order the uploader spends bandwidth on them: most important first.
BY_PRIORITY: tuple[str, ...] = tuple(sorted(STREAMS, key=lambda n: -STREAMS[n].priority))


def get_stream(name: str) -> StreamSpec:
    try:
        return STREAMS[name]
    except KeyError:
        raise ValueError(f"unknown stream {name!r}; known streams: {', '.join(STREAMS)}") from None


def stream_for_fingerprint(fingerprint: str) -> StreamSpec | None:
    for spec in STREAMS.values():
        if fingerprint in (spec.fingerprint, spec.legacy_fingerprint):
            return spec
    return None
