"""What the lakehouse already knows about batch objects: the ``batches`` ledger and ``quarantine``.

An object is *settled* once it is in the ledger (accepted) or quarantined for good. A batch
deferred for ``hlc_too_far_ahead`` is quarantined but *pending*: ordinary ingest skips it,
reconciliation re-evaluates it until it is admitted (``resolved_at`` set, ledger row added).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import duckdb
import pyarrow as pa

from edge_sync.batch_keys import parse_object_key

DEFERRED_REASON = "hlc_too_far_ahead"
_seq = itertools.count()

PENDING_SQL = "deferred AND resolved_at IS NULL"


def _register_keys(con: duckdb.DuckDBPyConnection, keys: Iterable[str]) -> str:
    name = f"_keys{next(_seq)}"
    con.register(name, pa.table({"object_key": pa.array(sorted(set(keys)), pa.string())}))
    return name


def _tenant_filter(keys: Iterable[str]) -> tuple[str, list[str]]:
    """A ``tenant_id IN (...)`` filter on the ledger the keys' tenants allow, with its parameters.

    An accepted batch's ledger row carries the tenant of its verified manifest, which ingest
    checks against the object key, so a batch key can only match a row of the tenant its key
    names; the filter lets DuckLake skip other tenants' data files. With a key that is not a
    batch key (nothing to prune on) it is ``TRUE``."""
    tenants = set()
    for key in keys:
        try:
            tenants.add(parse_object_key(key).tenant_id)
        except ValueError:
            return "TRUE", []
    return f"tenant_id IN ({', '.join('?' * len(tenants))})", sorted(tenants)


def settled_keys(
    con: duckdb.DuckDBPyConnection, keys: Iterable[str], *, pending_too: bool = True
) -> set[str]:
    """Those of ``keys`` already in the ledger or quarantined (pending deferred ones too unless told).

    Two semi-joins of the asked keys, one per table, united: the cost follows the keys and the
    tenants they name (an ``OR`` of two correlated ``EXISTS`` costed two to three times as much
    against a million-row ledger, whatever the number of keys; docs/operations.md)."""
    keys = sorted(set(keys))
    if not keys:
        return set()
    view = _register_keys(con, keys)
    tenants, params = _tenant_filter(keys)
    quarantined = "TRUE" if pending_too else f"NOT coalesce({PENDING_SQL}, FALSE)"
    try:
        rows = con.execute(
            f"""
            SELECT object_key FROM {view}
            SEMI JOIN (SELECT object_key FROM batches WHERE {tenants}) b USING (object_key)
            UNION
            SELECT object_key FROM {view}
            SEMI JOIN (SELECT object_key FROM quarantine WHERE {quarantined}) q USING (object_key)
            """,
            params,
        ).fetchall()
    finally:
        con.unregister(view)
    return {r[0] for r in rows}


def all_settled_keys(con: duckdb.DuckDBPyConnection, prefix: str = "") -> set[str]:
    """Every object key the ledger or quarantine holds (pending deferred included)."""
    rows = con.execute(
        "SELECT object_key FROM batches WHERE starts_with(object_key, ?) "
        "UNION SELECT object_key FROM quarantine WHERE starts_with(object_key, ?)",
        [prefix, prefix],
    ).fetchall()
    return {r[0] for r in rows}


def pending_deferred(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Object keys deferred for a clock too far ahead and not admitted yet."""
    rows = con.execute(
        f"SELECT DISTINCT object_key FROM quarantine WHERE {PENDING_SQL} "
        "AND object_key NOT IN (SELECT object_key FROM batches) ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]
