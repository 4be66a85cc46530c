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

DEFERRED_REASON = "hlc_too_far_ahead"
_seq = itertools.count()

PENDING_SQL = "deferred AND resolved_at IS NULL"


def _register_keys(con: duckdb.DuckDBPyConnection, keys: Iterable[str]) -> str:
    name = f"_keys{next(_seq)}"
    con.register(name, pa.table({"object_key": pa.array(sorted(set(keys)), pa.string())}))
    return name


def settled_keys(
    con: duckdb.DuckDBPyConnection, keys: Iterable[str], *, pending_too: bool = True
) -> set[str]:
    """Those of ``keys`` already in the ledger or quarantined (pending deferred ones too unless told)."""
    view = _register_keys(con, keys)
    quarantined = "TRUE" if pending_too else f"NOT coalesce({PENDING_SQL}, FALSE)"
    try:
        rows = con.execute(
            f"""
            SELECT k.object_key FROM {view} k
            WHERE EXISTS (SELECT 1 FROM batches b WHERE b.object_key = k.object_key)
               OR EXISTS (SELECT 1 FROM quarantine q WHERE q.object_key = k.object_key AND {quarantined})
            """
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
