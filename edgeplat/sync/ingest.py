"""Exactly-once ingest of batch objects: verify, quarantine, dedupe and append.

Per object: skip it if the ledger or quarantine already holds it; else fetch and verify it,
check the HLC drift bound, and decode it together with the other objects of its chunk
(:mod:`edgeplat.sync.decoding`). Rejects go to ``quarantine`` with ``BatchError.reason``;
``hlc_too_far_ahead`` rejects are *deferred* (see below). Errors of the key service's
infrastructure fail the run: the object stays unsettled and the next run or the
reconciliation picks it up.

Exactly once, keyed by (tenant, device, stream, seq), whatever the order, overlap or
repetition of batches, in one lakehouse transaction per chunk of objects (rows, ledger,
evictions, quarantine and devices together; ``retried`` repeats it whole). Chunks commit
in a second thread while the next chunk decodes; commits stay in order, one at a time.

1. Every accepted batch's rows are staged (:mod:`edgeplat.sync.staging`, steps 1 to 3) as
   one Arrow table per stream (strings stay dictionary-encoded, as the batches store them),
   with the ``day`` partition key computed from ``ts`` in numpy (see ``lakehouse_schema``:
   cheaper than letting DuckLake derive year/month/day of a TIMESTAMPTZ with ICU on insert).
2. Batches whose seq range overlaps no other staged batch and no ledger range cannot hold a
   stored or staged duplicate: their rows are appended as they are (the common case).
3. Overlapping batches' rows are *contested*: fingerprinted (DuckDB ``hash`` of hlc, node,
   ts and payload) and settled by :mod:`edgeplat.sync.contested`: a batch with a row that
   differs from a stored one is a ``replay_conflict`` (quarantined); among staged batches
   the first claimant by object key wins and the others that differ are quarantined.
   Identical re-deliveries (re-cut batches after a device crash) are dropped as duplicates;
   one copy of the rest is appended.
4. Rows are appended as Parquet files written by pyarrow and registered in the transaction
   (:mod:`edgeplat.lake_files`), not through DuckDB's ``INSERT``.

Clock drift: a batch whose ``hlc_max`` is more than ``max_drift_ms`` ahead of central now
is deferred (quarantine reason ``hlc_too_far_ahead``, ``deferred = true``). Its rows and
state edits stay out, so a device whose clock runs 24 h ahead cannot win later state
conflicts against honest edits: its edits only count once central time has caught up with
their HLCs, and by then every honest edit made meanwhile carries a comparable HLC.
Nothing is lost: reconciliation re-evaluates deferred batches and admits them (setting
``resolved_at``) once they are within the bound.

State edits (``state`` stream) are stored raw in ``state_edits`` and merged into
``device_state``/``state_conflicts`` with the shared :class:`edge_sync.merge.StateMerger`,
in the same transaction as the rows and the ledger (the merge is idempotent anyway).

Replays from the archive (``replay=True``, :mod:`edgeplat.sync.archive`): objects the ledger
already holds are decoded again and go through the same steps, their rows contested against
their own ledger ranges, so only rows missing from the tables are appended; they get no second
ledger row, no quarantine row and no device update. One whose rows differ from the stored ones
is counted in ``replay_mismatches`` and left as it is.

Concurrency: two ingest runs of one tenant could both see an object as new and both
insert it (DuckLake appends do not conflict). The sensor's runs carry the tag
``edgeplat/ingest-tenant`` for a per-tenant concurrency limit of 1, the commit re-checks
the ledger inside its transaction, and reconciliation's :func:`~edgeplat.sync.reconcile.remove_duplicates`
removes exact duplicates if any slipped in.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa

from edge_sync import batch_errors
from edge_sync.batch_keys import ARCHIVE_PREFIX, BATCH_SUFFIX
from edge_sync.streams import STREAMS
from edgeplat.arrow_memory import prefer_jemalloc
from edgeplat.inventory.enrolled import enrolled_claims
from edgeplat.lake_files import append_rows, conform, insert_rows
from edgeplat.lakehouse import retried, sql_list
from edgeplat.lakehouse_schema import TABLES
from edgeplat.sync.central_state import central_merger
from edgeplat.sync.decoding import Accepted, DecodedGroup, Rejected, decoded
from edgeplat.sync.env import SyncEnv
from edgeplat.sync.ledger import DEFERRED_REASON, PENDING_SQL, settled_keys
from edgeplat.sync.staging import Stage, accepted_rows, stage_streams, stream_step

log = logging.getLogger(__name__)

REPLAY_REASON = "replay_conflict"
_ids = itertools.count()
# Decoded groups (``SyncSettings.rows_per_group`` rows each) one commit takes at most: an ingest
# holds about twice this many groups in memory (one commit's, and those decoded meanwhile).
MAX_GROUPS_PER_COMMIT = 6


@dataclass
class IngestReport:
    """What an ingest did; numeric fields become Dagster materialization metadata."""

    objects: int = 0  # keys asked for
    skipped_settled: int = 0  # already in the ledger or quarantine
    missing: int = 0  # listed but gone from the store
    accepted: int = 0
    rows_in: int = 0  # rows in accepted batches
    rows_new: int = 0
    duplicates_dropped: int = 0
    evictions: int = 0  # evicted rows newly counted
    deferred_admitted: int = 0
    quarantined: Counter = field(default_factory=Counter)  # reason -> objects
    state_edits_merged: int = 0
    conflicts: Counter = field(default_factory=Counter)  # rule -> conflict rows added
    replay_mismatches: int = 0  # replayed ledger objects whose rows differ from the stored ones

    def add(self, other: IngestReport) -> IngestReport:
        for name in (
            "objects",
            "skipped_settled",
            "missing",
            "accepted",
            "rows_in",
            "rows_new",
            "duplicates_dropped",
            "evictions",
            "deferred_admitted",
            "state_edits_merged",
            "replay_mismatches",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.quarantined.update(other.quarantined)
        self.conflicts.update(other.conflicts)
        return self

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if not isinstance(v, Counter)}
        d["quarantined"] = dict(sorted(self.quarantined.items()))
        d["conflicts"] = dict(sorted(self.conflicts.items()))
        d["quarantined_total"] = sum(self.quarantined.values())
        d["conflicts_total"] = sum(self.conflicts.values())
        return d


def quarantine_reasons() -> tuple[str, ...]:
    """Every reason the ingest quarantines an object for: each batch error's, a replay, a deferral."""
    return (*batch_errors.reasons(), REPLAY_REASON, DEFERRED_REASON)


# ----------------------------------------------------------------------------- entry point
def ingest_objects(
    env: SyncEnv,
    keys: Iterable[str],
    *,
    reevaluate_deferred: bool = False,
    con: duckdb.DuckDBPyConnection | None = None,
    replay: bool = False,
) -> IngestReport:
    """Ingest the batch objects at ``keys`` exactly once; safe to repeat with any keys, in any order.

    ``reevaluate_deferred``: also take objects deferred for ``hlc_too_far_ahead`` (reconciliation).
    ``con``: an open lakehouse connection to reuse (one is opened otherwise).
    ``replay``: take objects the ledger holds too (archive replays; see the module docstring).
    """
    # archived copies are never ingested as such (a replay passes their original keys)
    wanted = sorted({k for k in keys if k.endswith(BATCH_SUFFIX) and not k.startswith(ARCHIVE_PREFIX)})
    report = IngestReport(objects=len(wanted))
    if not wanted:
        return report
    prefer_jemalloc()
    if con is None:
        with env.lakehouse.session() as own:
            return _ingest(env, own, wanted, reevaluate_deferred, report, replay)
    return _ingest(env, con, wanted, reevaluate_deferred, report, replay)


def _ingest(
    env: SyncEnv,
    con: duckdb.DuckDBPyConnection,
    wanted: list[str],
    reevaluate_deferred: bool,
    report: IngestReport,
    replay: bool = False,
) -> IngestReport:
    settled = settled_keys(con, wanted, pending_too=not reevaluate_deferred)  # the ledger included
    if replay:  # ledgered objects are what a replay is for; quarantined ones stay out
        settled -= _ledgered_and_settled(con, wanted, pending_too=True)[0]
    todo = [k for k in wanted if k not in settled]
    report.skipped_settled = len(wanted) - len(todo)
    now_ms = env.now_ms()

    def on_missing() -> None:
        report.missing += 1

    # Commits run in a second thread while the next groups decode: decoding holds the GIL most of
    # the time, and DuckDB and pyarrow's writer release it, so the two overlap on two cores. A
    # commit takes every group decoded while the one before it ran (at most
    # MAX_GROUPS_PER_COMMIT): when committing is the slower side, commits grow and their fixed
    # costs (ledger re-check, devices, catalog) are paid fewer times; when decoding is, each
    # group commits as soon as it is decoded. Commits stay strictly in order, one at a time, so
    # every commit's ledger check sees the chunks before it.
    with cf.ThreadPoolExecutor(1, thread_name_prefix="ingest-commit") as committer:
        pending: cf.Future | None = None
        ready: list[DecodedGroup] = []
        for group in decoded(env, todo, on_missing, now_ms):
            ready.append(group)
            if pending is not None and (pending.done() or len(ready) >= MAX_GROUPS_PER_COMMIT):
                report.add(pending.result())
                pending = None
            if pending is None:
                pending = committer.submit(
                    _commit_chunk, env, con, ready, now_ms, reevaluate_deferred, replay
                )
                ready = []
        if pending is not None:
            report.add(pending.result())
        if ready:
            report.add(_commit_chunk(env, con, ready, now_ms, reevaluate_deferred, replay))
    return report


def _ledgered_and_settled(
    con: duckdb.DuckDBPyConnection, keys: Sequence[str], pending_too: bool
) -> tuple[set[str], set[str]]:
    """Those of ``keys`` in the ledger, and those settled (ledger or quarantine), in one query."""
    view = f"_lk{next(_ids)}"
    con.register(view, pa.table({"object_key": pa.array(sorted(set(keys)), pa.string())}))
    quarantined = "TRUE" if pending_too else f"NOT coalesce({PENDING_SQL}, FALSE)"
    try:
        rows = con.execute(
            f"""
            SELECT k.object_key, EXISTS (SELECT 1 FROM batches b WHERE b.object_key = k.object_key) AS ledgered,
                   EXISTS (SELECT 1 FROM quarantine q WHERE q.object_key = k.object_key AND {quarantined}) AS held
            FROM {view} k
            """
        ).fetchall()
    finally:
        con.unregister(view)
    ledgered = {k for k, in_ledger, _ in rows if in_ledger}
    return ledgered, ledgered | {k for k, _, held in rows if held}


# ----------------------------------------------------------------------------- commit
def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def merge_state_edits(env: SyncEnv, con: duckdb.DuckDBPyConnection, edits: pa.Table) -> tuple[int, Counter]:
    """Merge device state edits into ``device_state``/``state_conflicts`` inside the caller's open transaction.

    Everything in a device's ``state`` stream is the device's own edit, whatever the row
    claims: ``origin`` and ``node_id`` are forced to the device, so a device cannot pose as
    the platform to win ``prefer_central`` fields or forge another node's counter share.
    """
    if edits.num_rows == 0:
        return 0, Counter()
    edits = _plain_strings(edits, STREAMS["state"].schema.names)
    n = edits.num_rows
    for name, value in (("origin", pa.array(["device"] * n)), ("node_id", edits.column("device_id"))):
        edits = edits.set_column(edits.schema.get_field_index(name), name, value)
    stats = central_merger(con, env.rules).merge(edits, own_transaction=False)
    return stats.edits_in, Counter(stats.conflicts_by_rule)


def _plain_strings(table: pa.Table, names: Sequence[str]) -> pa.Table:
    """``table`` with its dictionary-encoded columns among ``names`` decoded (the merge takes plain strings)."""
    for name in names:
        i = table.schema.get_field_index(name)
        if i >= 0 and pa.types.is_dictionary(table.schema.field(i).type):
            table = table.set_column(i, name, table.column(i).cast(table.schema.field(i).type.value_type))
    return table


def _commit_chunk(
    env: SyncEnv,
    con: duckdb.DuckDBPyConnection,
    groups: list[DecodedGroup],
    now_ms: int,
    reevaluate_deferred: bool,
    replay: bool = False,
) -> IngestReport:
    items = [i for g in groups for i in g.items]
    accepted = [i for i in items if isinstance(i, Accepted)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    stages = stage_streams(groups, accepted)
    now = _ts(now_ms)
    stamp = pa.scalar(now, pa.timestamp("us", tz="UTC"))

    def unit(con: duckdb.DuckDBPyConnection) -> IngestReport:
        r = IngestReport()

        def append(table: str, parts: list[pa.Table]) -> None:
            spec = TABLES[table]
            rows = [
                conform(p.append_column("ingested_at", pa.repeat(stamp, p.num_rows)), spec)
                for p in parts
                if p.num_rows
            ]
            if rows:
                append_rows(con, env.lakehouse.config, spec, pa.concat_tables(rows))

        # Another run may have settled some of these objects since we looked: re-check in this transaction.
        keys = [i.object_key for i in items]
        ledgered, settled = _ledgered_and_settled(con, keys, pending_too=not reevaluate_deferred)
        acc = [a for a in accepted if replay or a.object_key not in ledgered]
        st = stages if len(acc) == len(accepted) else stage_streams(groups, acc)
        rej = [x for x in rejected if x.object_key not in settled]
        if reevaluate_deferred:  # still too far ahead: it keeps its one pending quarantine row
            pending = _pending(con, [x.object_key for x in rej if x.deferred])
            rej = [x for x in rej if not (x.deferred and x.object_key in pending)]
        ledger_rows, bad_keys = [], {}
        for stage in st.values():
            result = stream_step(con, stage, append)
            for bidx, detail in result.bad.items():
                bad_keys[stage.keys[bidx]] = detail
            for bidx, n in result.new_by_bidx.items():
                ledger_rows.append((stage.keys[bidx], n))
        new_by_key = dict(ledger_rows)
        if "state" in st:  # merged in this transaction: state, rows and ledger commit together
            r.state_edits_merged, r.conflicts = merge_state_edits(
                env, con, accepted_rows(st["state"], bad_keys)
            )
        good = [a for a in acc if a.object_key not in bad_keys]
        rej += [
            Rejected(a.object_key, a.size, REPLAY_REASON, bad_keys[a.object_key])
            for a in acc
            if a.object_key in bad_keys and a.object_key not in ledgered
        ]
        r.replay_mismatches = sum(1 for a in acc if a.object_key in bad_keys and a.object_key in ledgered)
        fresh = [a for a in good if a.object_key not in ledgered]  # all of good unless replaying
        _write_ledger(con, fresh, new_by_key, now)
        r.evictions = _write_evictions(con, good, now)
        _write_quarantine(con, rej, now)
        if reevaluate_deferred:
            admitted = _resolve_deferred(con, [a.object_key for a in good], now)
            r.deferred_admitted = admitted
        _update_devices(con, fresh, st.get("health"), now, env)
        r.accepted = len(good)
        r.rows_in = sum(a.rows for a in good)
        r.rows_new = sum(new_by_key.get(a.object_key, 0) for a in good)
        r.duplicates_dropped = r.rows_in - r.rows_new
        r.quarantined = Counter(x.reason for x in rej)
        return r

    return retried(con, unit, what="ingest", max_retries=env.lakehouse.config.max_retries)


def _pending(con: duckdb.DuckDBPyConnection, keys: Sequence[str]) -> set[str]:
    if not keys:
        return set()
    rows = con.execute(
        f"SELECT object_key FROM quarantine WHERE {PENDING_SQL} AND object_key IN ({sql_list(keys)})"
    ).fetchall()
    return {r[0] for r in rows}


def _resolve_deferred(con: duckdb.DuckDBPyConnection, keys: Sequence[str], now: datetime) -> int:
    pending = _pending(con, keys)
    if pending:
        con.execute(
            f"UPDATE quarantine SET resolved_at = ? WHERE {PENDING_SQL} AND object_key IN ({sql_list(pending)})",
            [now],
        )
    return len(pending)


def _write_ledger(
    con: duckdb.DuckDBPyConnection, good: Sequence[Accepted], new_by_key: dict[str, int], now: datetime
) -> None:
    rows = []
    for a in good:
        m = a.manifest
        new = new_by_key.get(a.object_key, 0)
        rows.append(
            {
                "tenant_id": m.tenant_id,
                "device_id": m.device_id,
                "stream": m.stream,
                "first_seq": m.first_seq,
                "last_seq": m.last_seq,
                "row_count": m.row_count,
                "hlc_min": m.hlc_min,
                "hlc_max": m.hlc_max,
                "object_key": a.object_key,
                "object_size": a.size,
                "plaintext_sha256": m.plaintext_sha256,
                "key_id": m.key_id,
                "rows_new": new,
                "rows_duplicate": m.row_count - new,
                "ingested_at": now,
            }
        )
    if rows:
        insert_rows(con, "batches", pa.Table.from_pylist(rows))


def _write_evictions(con: duckdb.DuckDBPyConnection, good: Sequence[Accepted], now: datetime) -> int:
    rows = {}
    for a in good:
        m = a.manifest
        for e in m.evictions:
            k = (m.tenant_id, m.device_id, m.stream, e.first_seq, e.last_seq)
            rows.setdefault(
                k,
                {
                    "tenant_id": m.tenant_id,
                    "device_id": m.device_id,
                    "stream": m.stream,
                    "first_seq": e.first_seq,
                    "last_seq": e.last_seq,
                    "count": e.count,
                    "reason": e.reason,
                    "batch_key": a.object_key,
                    "ingested_at": now,
                },
            )
    if not rows:
        return 0
    view = f"_ev{next(_ids)}"
    con.register(view, pa.Table.from_pylist(list(rows.values())))
    try:
        # the same eviction range arrives again in a re-cut batch: count it once
        fresh = con.execute(
            f"""SELECT * FROM {view} v WHERE NOT EXISTS (SELECT 1 FROM evictions e WHERE e.tenant_id = v.tenant_id
                AND e.device_id = v.device_id AND e.stream = v.stream AND e.first_seq = v.first_seq
                AND e.last_seq = v.last_seq)"""
        ).to_arrow_table()
    finally:
        con.unregister(view)
    insert_rows(con, "evictions", fresh)
    return int(sum(fresh.column("count").to_pylist()))


def _write_quarantine(con: duckdb.DuckDBPyConnection, rej: Sequence[Rejected], now: datetime) -> None:
    if rej:
        rows = [x.row(now) for x in {x.object_key: x for x in rej}.values()]
        schema = pa.schema(
            [(n, pa.string()) for n in ("tenant_id", "device_id", "stream", "object_key", "reason", "detail")]
            + [
                ("object_size", pa.int64()),
                ("first_seq", pa.int64()),
                ("last_seq", pa.int64()),
                ("quarantined_at", pa.timestamp("us", tz="UTC")),
                ("deferred", pa.bool_()),
                ("resolved_at", pa.timestamp("us", tz="UTC")),
            ]
        )
        insert_rows(con, "quarantine", pa.Table.from_pylist(rows, schema=schema))


def _update_devices(
    con: duckdb.DuckDBPyConnection,
    good: Sequence[Accepted],
    health: Stage | None,
    now: datetime,
    env: SyncEnv,
) -> None:
    """``devices``: last_batch_at, online, and the latest reported version/slot (by HLC) from health rows."""
    devs = sorted({(a.manifest.tenant_id, a.manifest.device_id) for a in good})
    if not devs:
        return
    good_keys = {a.object_key for a in good}
    inc = pa.table({"tenant_id": [d[0] for d in devs], "device_id": [d[1] for d in devs]})
    h = f"_hv{next(_ids)}"
    hv = f"_inc{next(_ids)}"
    con.register(hv, inc)
    if health is not None:
        good_bidx = [i for i, k in enumerate(health.keys) if k in good_keys]
        rows = health.rows.filter(pa.array(np.isin(health.rows.column("_bidx").to_numpy(), good_bidx)))
        rows = rows.select(["tenant_id", "device_id", "hlc", "version", "slot"])
    else:
        rows = pa.table(
            {
                "tenant_id": pa.array([], pa.string()),
                "device_id": pa.array([], pa.string()),
                "hlc": pa.array([], pa.int64()),
                "version": pa.array([], pa.string()),
                "slot": pa.array([], pa.string()),
            }
        )
    con.register(h, rows)
    try:
        merged = con.execute(
            f"""
            WITH rep AS (SELECT tenant_id, device_id, max(hlc) AS hlc, arg_max(version, hlc) AS version,
                                arg_max(slot, hlc) AS slot FROM {h} GROUP BY ALL),
                 cur AS (SELECT * FROM devices d WHERE EXISTS (SELECT 1 FROM {hv} i WHERE i.tenant_id = d.tenant_id
                           AND i.device_id = d.device_id)
                         QUALIFY row_number() OVER (PARTITION BY tenant_id, device_id
                                                    ORDER BY last_batch_at DESC NULLS LAST) = 1)
            SELECT i.tenant_id, i.device_id, c.platform, c.tags, c.connectivity, c.last_seen, c.sources,
                   c.conflicts, c.platform_version, c.platform_state, c.platform_observed_at,
                   coalesce(c.registered_at, $now) AS registered_at,
                   greatest(c.last_batch_at, $now) AS last_batch_at, 'online' AS status,
                   CASE WHEN r.hlc > coalesce(c.reported_hlc, -1) THEN r.version ELSE c.reported_version END
                       AS reported_version,
                   CASE WHEN r.hlc > coalesce(c.reported_hlc, -1) THEN r.slot ELSE c.reported_slot END AS reported_slot,
                   $now AS updated_at, greatest(c.reported_hlc, r.hlc) AS reported_hlc
            FROM {hv} i LEFT JOIN cur c USING (tenant_id, device_id) LEFT JOIN rep r USING (tenant_id, device_id)
            """,
            {"now": now},
        ).to_arrow_table()
        con.execute(
            f"DELETE FROM devices d WHERE EXISTS (SELECT 1 FROM {hv} i WHERE i.tenant_id = d.tenant_id "
            "AND i.device_id = d.device_id)"
        )
    finally:
        con.unregister(h)
        con.unregister(hv)
    insert_rows(con, "devices", enrolled_claims(merged, good, now))
