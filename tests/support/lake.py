"""Lakehouse test rows: telemetry as the ingest hands it to ``lake_files.append_rows``."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa


def ingest_rows(tenants: Sequence[str], ts: pa.Array, values: Sequence[float], day: pa.Array) -> pa.Table:
    """One telemetry row per tenant id of device d1 (seq and hlc 0, 1, ...), metric cpu, with the
    ingest's columns: a dictionary-encoded batch_key, ingested_at and the ``day`` partition key."""
    n = len(tenants)
    return pa.table(
        {
            "tenant_id": list(tenants),
            "device_id": ["d1"] * n,
            "stream": ["telemetry"] * n,
            "seq": pa.array(range(n), pa.int64()),
            "hlc": pa.array(range(n), pa.int64()),
            "node_id": ["d1"] * n,
            "ts": ts,
            "metric": ["cpu"] * n,
            "value": pa.array(values, pa.float64()),
            "batch_key": pa.array(["k"] * n).dictionary_encode(),
            "ingested_at": pa.array([0] * n, pa.timestamp("us", tz="UTC")),
            "day": day,
        }
    )
