"""Writes verified live messages to ``live_rows`` and refused ones to ``live_rejections``.

One lakehouse transaction per drained batch of messages (the subscriber drains for a
fraction of a second), so a burst of alerts is one DuckLake commit, not hundreds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from edge_sync.live_message import LiveMessage
from edgeplat.lakehouse import Lakehouse


@dataclass(frozen=True)
class Rejection:
    """A live message refused, with the machine-readable reason (what the quarantine calls it)."""

    topic: str
    reason: str
    detail: str
    tenant_id: str | None = None
    device_id: str | None = None
    stream: str | None = None
    seq: int | None = None


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def live_rows_table(messages: list[LiveMessage], received_at: datetime) -> pa.Table:
    return pa.table(
        {
            "tenant_id": [m.tenant_id for m in messages],
            "device_id": [m.device_id for m in messages],
            "stream": [m.stream for m in messages],
            "seq": pa.array([m.seq for m in messages], pa.int64()),
            "hlc": pa.array([m.hlc for m in messages], pa.int64()),
            "node_id": [m.device_id for m in messages],
            "ts": pa.array([_ts(m.ts_ms) for m in messages], pa.timestamp("ms", tz="UTC")),
            "payload": [json.dumps(m.row, sort_keys=True) for m in messages],
            "key_id": [m.key_id for m in messages],
            "received_at": pa.array([received_at] * len(messages), pa.timestamp("us", tz="UTC")),
        }
    )


def rejections_table(rejections: list[Rejection], received_at: datetime) -> pa.Table:
    return pa.table(
        {
            "tenant_id": pa.array([r.tenant_id for r in rejections], pa.string()),
            "device_id": pa.array([r.device_id for r in rejections], pa.string()),
            "stream": pa.array([r.stream for r in rejections], pa.string()),
            "seq": pa.array([r.seq for r in rejections], pa.int64()),
            "topic": [r.topic[:300] for r in rejections],
            "reason": [r.reason for r in rejections],
            "detail": [r.detail[:500] for r in rejections],
            "received_at": pa.array([received_at] * len(rejections), pa.timestamp("us", tz="UTC")),
        }
    )


def store(lake: Lakehouse, accepted: list[LiveMessage], rejected: list[Rejection]) -> None:
    """Append both lists in one transaction."""
    now = datetime.now(UTC)
    rows = live_rows_table(accepted, now) if accepted else None
    refused = rejections_table(rejected, now) if rejected else None

    def unit(con: duckdb.DuckDBPyConnection) -> None:
        if rows is not None:
            con.register("live_in", rows)
            con.execute("INSERT INTO live_rows BY NAME SELECT * FROM live_in")
            con.unregister("live_in")
        if refused is not None:
            con.register("refused_in", refused)
            con.execute("INSERT INTO live_rejections BY NAME SELECT * FROM refused_in")
            con.unregister("refused_in")

    lake.write(unit, what="live rows")


def replay_marks(lake: Lakehouse) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str, str], int]]:
    """The highest seq and hlc per (tenant, device, stream) already in ``live_rows``."""
    with lake.session(read_only=True) as con:
        marks = con.execute(
            "SELECT tenant_id, device_id, stream, max(seq), max(hlc) FROM live_rows GROUP BY ALL"
        ).fetchall()
    return ({(t, d, s): q for t, d, s, q, _ in marks}, {(t, d, s): h for t, d, s, _, h in marks})
