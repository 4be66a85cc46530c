"""Keyed device state in the cache: checking and encoding edits, preparing merged rows.

``DeviceCache.put`` turns an edit into one ``state`` stream row per field (values as JSON
text); ``DeviceCache.replace_state_rows`` upserts rows the downlink merged. Both end in
``state_current(namespace, key, field, value, hlc, node_id, origin)``.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from edge_sync.cache_store import STATE_SCHEMA


def encode_fields(namespace: str, key: str, fields: dict[str, Any]) -> dict[str, str]:
    """JSON text of each field of an edit (sorted keys, compact), after checking names."""
    if not fields:
        raise ValueError(f"put({namespace!r}, {key!r}) needs at least one field")
    for name, value in (("namespace", namespace), ("key", key)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"put: {name} must be a non-empty string, got {value!r}")
    encoded = {}
    for field, value in fields.items():
        if not isinstance(field, str) or not field:
            raise ValueError(
                f"put({namespace!r}, {key!r}): field names must be non-empty strings, got {field!r}"
            )
        try:
            encoded[field] = json.dumps(value, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"put({namespace!r}, {key!r}): field {field!r} is not JSON-encodable: {exc}"
            ) from None
    return encoded


def decode_record(table: pa.Table) -> dict[str, Any]:
    """Fields of one state record from its ``state_current`` rows."""
    return {
        f: json.loads(v) for f, v in zip(table["field"].to_pylist(), table["value"].to_pylist(), strict=True)
    }


def merged_rows(table: pa.Table) -> pa.Table:
    """Check rows for ``replace_state_rows`` and keep the last of each (namespace, key, field).

    Deduplicated here because DuckDB's INSERT OR REPLACE keeps the first of duplicate keys
    inside one statement, while a sequence of upserts means the last one holds.
    """
    missing = [c for c in STATE_SCHEMA.names if c not in table.column_names]
    if missing:
        raise ValueError(f"replace_state_rows: missing column(s) {missing}; need {STATE_SCHEMA.names}")
    rows = table.select(STATE_SCHEMA.names).cast(STATE_SCHEMA)
    for name in ("namespace", "key", "field", "hlc", "node_id"):
        if rows.column(name).null_count:
            raise ValueError(f"replace_state_rows: column {name!r} has nulls")
    if rows.num_rows == 0:
        return rows
    # A dict, not Table.group_by: that imports pyarrow.acero and pyarrow.dataset, whose memory a
    # device would pay for what is a handful of rows per sync.
    last: dict[tuple[str, str, str], int] = {}
    keys = zip(*(rows.column(c).to_pylist() for c in ("namespace", "key", "field")), strict=True)
    for i, k in enumerate(keys):
        last[k] = i
    return rows.take(pa.array(sorted(last.values()), pa.int64()))


def dedupe_edits(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the last buffered edit of each (namespace, key, field): the buffer is in issue order."""
    last: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        last[(r["namespace"], r["key"], r["field"])] = r
    return list(last.values())
