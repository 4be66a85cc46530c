"""Reconciliation: what the arrival sensor alone cannot guarantee, run every 15 minutes.

- :func:`ingest_missed`: re-lists the hot store (``tenant=`` keys, not the archive) against
  the ledger and quarantine and ingests every batch object neither holds (late listings, a
  reset cursor, failed runs).
- :func:`admit_deferred`: re-evaluates batches deferred for ``hlc_too_far_ahead``; those now
  within the drift bound are admitted (``quarantine.resolved_at`` set, ledger row added).
- :func:`remove_duplicates`: if two concurrent ingest runs slipped the same rows in, keep one copy.
- :func:`find_gaps`: seq ranges per device and stream neither uploaded, evicted, deferred
  nor quarantined, from the ledger's and the evictions' ranges (no row scans).
- :func:`mark_offline`: devices whose last batch is older than the threshold.
- compaction: DuckLake maintenance, in :mod:`edgeplat.sync.compaction` (run in a child
  process, which survives DuckLake's crashes).

Every step is idempotent: running it twice gives the same tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb

from edge_sync.batch_keys import BATCH_PREFIX, BATCH_SUFFIX
from edge_sync.streams import STREAMS
from edgeplat.lakehouse import retried
from edgeplat.sync.arrivals import is_batch_key
from edgeplat.sync.compaction import compact_isolated
from edgeplat.sync.env import SyncEnv
from edgeplat.sync.ingest import IngestReport, ingest_objects
from edgeplat.sync.ledger import PENDING_SQL, all_settled_keys, pending_deferred

FIRST_SEQ = 1  # device caches number every stream from 1 (edge_sync.cache)
RECONCILE_CHUNK = 2_000  # objects per ingest call during reconciliation


def list_batch_keys(env: SyncEnv, prefix: str = "") -> Iterator[str]:
    """Every batch object key under ``prefix`` (default: every tenant's), paginated; the archive
    prefix is never listed."""
    after = None
    while True:
        page = env.store.list(prefix or BATCH_PREFIX, after=after, limit=1000)
        for o in page.objects:
            if o.key.endswith(BATCH_SUFFIX):
                yield o.key
        if page.next_after is None:
            return
        after = page.next_after


def ingest_missed(env: SyncEnv, con: duckdb.DuckDBPyConnection, prefix: str = "") -> tuple[IngestReport, int]:
    """Ingest every batch object the ledger and quarantine lack; returns (report, objects listed).

    ``prefix`` (``tenant=<T>/``) limits it to one tenant: a reconciliation run per tenant, as the
    ingest runs are, so N workers share it without meeting in one tenant's rows."""
    keys = list(list_batch_keys(env, prefix))
    settled = all_settled_keys(con, prefix)
    missing = [k for k in keys if k not in settled]
    report = IngestReport()
    for i in range(0, len(missing), RECONCILE_CHUNK):
        report.add(ingest_objects(env, missing[i : i + RECONCILE_CHUNK], con=con))
    return report, len(keys)


def admit_deferred(env: SyncEnv, con: duckdb.DuckDBPyConnection, prefix: str = "") -> IngestReport:
    """Re-evaluate deferred batches (those under ``prefix``); admit those whose HLCs are now
    within the drift bound."""
    keys = [k for k in pending_deferred(con) if k.startswith(prefix)]
    report = IngestReport()
    for i in range(0, len(keys), RECONCILE_CHUNK):
        report.add(ingest_objects(env, keys[i : i + RECONCILE_CHUNK], reevaluate_deferred=True, con=con))
    return report


# A stream row is stored once per (tenant, device, stream, seq).
_STREAM_KEY = ("tenant_id", "device_id", "stream", "seq")


def remove_duplicates(
    env: SyncEnv, con: duckdb.DuckDBPyConnection, *, window: timedelta | None = timedelta(days=1)
) -> dict[str, int]:
    """Remove exact duplicate rows of one (tenant, device, stream, seq) ingested within ``window``
    (None: the whole table); keeps the first copy (by ingest time, batch key). Returns rows removed."""
    since = None if window is None else datetime.fromtimestamp(env.now_ms() / 1000, UTC) - window
    removed: dict[str, int] = {}
    for table in (spec.table for spec in STREAMS.values()):
        removed[table] = retried(
            con,
            lambda c, t=table: _keep_first(c, t, _STREAM_KEY, "ingested_at, batch_key", since),
            what=f"dedupe {table}",
        )
    removed["batches"] = retried(
        con,
        lambda c: _keep_first(c, "batches", ("object_key",), "ingested_at, rows_new DESC", since),
        what="dedupe batches",
    )
    return removed


def _keep_first(
    con: duckdb.DuckDBPyConnection, table: str, key: Sequence[str], order: str, since: datetime | None
) -> int:
    """Delete every row of ``table`` but the first by ``order`` among rows sharing ``key``, for the
    keys with a row ingested since ``since`` (None: every key). Returns the rows removed."""
    recent = "" if since is None else "WHERE ingested_at >= $since"
    params = {} if since is None else {"since": since}
    cols = ", ".join(key)
    t_cols = ", ".join(f"t.{c}" for c in key)
    on = " AND ".join(f"t.{c} = d.{c}" for c in key)
    dups = con.execute(
        f"""SELECT {t_cols}, count(*) AS n FROM "{table}" t
            WHERE EXISTS (SELECT 1 FROM (SELECT DISTINCT {cols} FROM "{table}" {recent}) d WHERE {on})
            GROUP BY ALL HAVING count(*) > 1""",
        params,
    ).to_arrow_table()
    if dups.num_rows == 0:
        return 0
    con.register("_dups", dups)
    try:
        keep = con.execute(
            f"""SELECT t.* FROM "{table}" t WHERE EXISTS (SELECT 1 FROM _dups d WHERE {on})
                QUALIFY row_number() OVER (PARTITION BY {cols} ORDER BY {order}) = 1"""
        ).to_arrow_table()
        con.execute(f'DELETE FROM "{table}" t WHERE EXISTS (SELECT 1 FROM _dups d WHERE {on})')
        con.register("_keep", keep)
        con.execute(f'INSERT INTO "{table}" SELECT * FROM _keep')
        con.unregister("_keep")
    finally:
        con.unregister("_dups")
    return int(sum(dups.column("n").to_pylist())) - dups.num_rows


@dataclass(frozen=True)
class Gap:
    """Seqs first..last of a device's stream that were neither uploaded nor counted as evicted."""

    tenant_id: str
    device_id: str
    stream: str
    first_seq: int
    last_seq: int

    @property
    def size(self) -> int:
        return self.last_seq - self.first_seq + 1


GAPS_SQL = f"""
WITH r AS (
    SELECT tenant_id, device_id, stream, first_seq, last_seq FROM batches
    UNION ALL SELECT tenant_id, device_id, stream, first_seq, last_seq FROM evictions
    -- deferred batches are known and will be admitted: not a gap
    UNION ALL SELECT tenant_id, device_id, stream, first_seq, last_seq FROM quarantine
        WHERE {PENDING_SQL} AND first_seq IS NOT NULL
),
o AS (
    SELECT *, max(last_seq) OVER (PARTITION BY tenant_id, device_id, stream ORDER BY first_seq, last_seq
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS covered
    FROM r
)
SELECT tenant_id, device_id, stream, coalesce(covered, {FIRST_SEQ - 1}) + 1 AS gap_first, first_seq - 1 AS gap_last
FROM o WHERE first_seq > coalesce(covered, {FIRST_SEQ - 1}) + 1
ORDER BY ALL
"""


def find_gaps(con: duckdb.DuckDBPyConnection) -> list[Gap]:
    """Seq gaps per device and stream below each stream's highest known seq (a gap at the end
    cannot be told from data not uploaded yet). Quarantined ranges count as gaps: their rows are missing."""
    return [Gap(*r) for r in con.execute(GAPS_SQL).fetchall()]


def mark_offline(con: duckdb.DuckDBPyConnection, *, now_ms: int, offline_after_s: int) -> int:
    """Set ``status = 'offline'`` on devices with no batch for ``offline_after_s``; returns how many changed."""
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    cutoff = now - timedelta(seconds=offline_after_s)

    def unit(c: duckdb.DuckDBPyConnection) -> int:
        n = c.execute(
            "SELECT count(*) FROM devices WHERE coalesce(status, '') <> 'offline' "
            "AND (last_batch_at IS NULL OR last_batch_at < ?)",
            [cutoff],
        ).fetchone()[0]
        if n:
            c.execute(
                "UPDATE devices SET status = 'offline', updated_at = ? WHERE coalesce(status, '') <> 'offline' "
                "AND (last_batch_at IS NULL OR last_batch_at < ?)",
                [now, cutoff],
            )
        return int(n)

    return retried(con, unit, what="mark offline")


@dataclass
class ReconcileReport:
    """What one reconciliation did (numbers become Dagster metadata)."""

    listed: int = 0
    missed: IngestReport = field(default_factory=IngestReport)
    deferred: IngestReport = field(default_factory=IngestReport)
    pending_deferred: int = 0
    duplicates_removed: dict[str, int] = field(default_factory=dict)
    gaps: list[Gap] = field(default_factory=list)
    marked_offline: int = 0
    compaction: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "listed": self.listed,
            "missed": self.missed.as_dict(),
            "deferred": self.deferred.as_dict(),
            "pending_deferred": self.pending_deferred,
            "duplicates_removed": self.duplicates_removed,
            "gaps": [g.__dict__ for g in self.gaps],
            "marked_offline": self.marked_offline,
            "compaction": self.compaction,
        }


def reconcile(env: SyncEnv, *, compaction: bool = True) -> ReconcileReport:
    """Run every reconciliation step once, in order, on one lakehouse connection (compaction in a child)."""
    with env.lakehouse.session() as con:
        rep = ReconcileReport()
        rep.missed, rep.listed = ingest_missed(env, con)
        rep.deferred = admit_deferred(env, con)
        rep.pending_deferred = len(pending_deferred(con))
        rep.duplicates_removed = remove_duplicates(env, con)
        rep.gaps = find_gaps(con)
        rep.marked_offline = mark_offline(
            con, now_ms=env.now_ms(), offline_after_s=env.settings.offline_after_s
        )
    if compaction:
        rep.compaction = compact_isolated(env.lakehouse.config)
    return rep


__all__ = [
    "Gap",
    "ReconcileReport",
    "admit_deferred",
    "find_gaps",
    "ingest_missed",
    "is_batch_key",
    "list_batch_keys",
    "mark_offline",
    "reconcile",
    "remove_duplicates",
]
