"""Exactly-once ingest of batch objects: verify, quarantine, dedupe and append, set-based in DuckDB.

Per object: skip it if the ledger or quarantine already holds it; else fetch it, verify it
with :func:`edge_sync.batch.read_batch` (device key, AEAD, hash, schema, ranges, object key)
and check the HLC drift bound. Rejects go to ``quarantine`` with ``BatchError.reason``;
``hlc_too_far_ahead`` rejects are *deferred* (see below). Errors of the key service's
infrastructure (anything but a ``KeyServiceError``) are retried and then fail the run: the
object stays unsettled and the next run or the reconciliation picks it up.

Exactly once, keyed by (tenant, device, stream, seq), whatever the order, overlap or
repetition of batches, in one lakehouse transaction per chunk of objects (rows, ledger,
evictions, quarantine and devices together; ``Lakehouse.write`` retries it whole):

1. Every accepted batch's rows are staged as one Arrow table per stream, with the ``day``
   partition key computed from ``ts`` in numpy (see ``lakehouse_schema``: cheaper than
   letting DuckLake derive year/month/day of a TIMESTAMPTZ with ICU on insert).
2. Batches whose seq range overlaps no other staged batch and no ledger range cannot hold a
   stored or staged duplicate: their rows are inserted as they are (the common case).
3. Overlapping batches' rows are fingerprinted (hash of hlc, node, ts and payload) and
   compared with the stored rows of the same devices and seq ranges: a batch with a row that
   differs from a stored one is a ``replay_conflict`` (quarantined); among staged batches the
   first claimant by object key wins and the others that differ are quarantined. Identical
   re-deliveries (re-cut batches after a device crash) are dropped as duplicates. What is left
   is deduplicated, anti-joined against the stored keys and inserted.

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

Concurrency: two ingest runs of one tenant could both see an object as new and both
insert it (DuckLake appends do not conflict). The sensor's runs carry the tag
``edgeplat/ingest-tenant`` for a per-tenant concurrency limit of 1, the commit re-checks
the ledger inside its transaction, and reconciliation's :func:`~edgeplat.sync.reconcile.remove_duplicates`
removes exact duplicates if any slipped in.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa

from edge_sync.batch import BatchError, DecodedBatch, parse_object_key, read_batch
from edge_sync.hlc import physical_ms
from edge_sync.identity import DeviceRegistry
from edge_sync.keys import KeyService
from edge_sync.merge import StateMerger
from edge_sync.objectstore import ObjectNotFound
from edge_sync.streams import STREAMS
from edgeplat.lakehouse import retried
from edgeplat.lakehouse_schema import DAY_COLUMN, TABLES, utc_day
from edgeplat.sync.env import SyncEnv
from edgeplat.sync.ledger import DEFERRED_REASON, PENDING_SQL, settled_keys

log = logging.getLogger(__name__)

STREAM_TABLES: dict[str, str] = {
    "telemetry": "telemetry",
    "alerts": "alerts",
    "logs": "logs",
    "health": "health",
    "state": "state_edits",
}
REPLAY_REASON = "replay_conflict"
BATCH_SUFFIX = ".batch"
KEY4 = ("tenant_id", "device_id", "stream", "seq")
DAY = DAY_COLUMN[0]
_ids = itertools.count()


class KeyServiceUnavailable(RuntimeError):
    """The key service (or registry) kept failing for infrastructure reasons; the run must be retried."""


@dataclass(frozen=True)
class Rejected:
    """A batch object that goes to quarantine."""

    object_key: str
    size: int
    reason: str
    detail: str
    deferred: bool = False

    def row(self, now: datetime) -> dict:
        try:
            k = parse_object_key(self.object_key)
            where = {
                "tenant_id": k.tenant_id,
                "device_id": k.device_id,
                "stream": k.stream,
                "first_seq": k.first_seq,
                "last_seq": k.last_seq,
            }
        except ValueError:
            where = {
                "tenant_id": None,
                "device_id": None,
                "stream": None,
                "first_seq": None,
                "last_seq": None,
            }
        return {
            **where,
            "object_key": self.object_key,
            "object_size": self.size,
            "reason": self.reason,
            "detail": self.detail[:2000],
            "quarantined_at": now,
            "deferred": self.deferred,
            "resolved_at": None,
        }


@dataclass(frozen=True)
class Accepted:
    """A verified, decoded batch object ready to append."""

    object_key: str
    size: int
    batch: DecodedBatch


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


# ----------------------------------------------------------------------------- decoding
def decode_object(
    key: str, data: bytes, key_service: KeyService, registry: DeviceRegistry | _RunRegistry, retries: int = 3
) -> Accepted | Rejected:
    """Verify and decode one object; a bad batch is a :class:`Rejected`, infrastructure errors raise."""
    for attempt in range(retries + 1):
        try:
            batch = read_batch(
                data, key_service=key_service, public_keys=registry.public_keys, expected_key=key
            )
            return Accepted(key, len(data), batch)
        except BatchError as exc:
            detail = str(exc) + (f" (key service: {exc.detail})" if exc.detail else "")
            return Rejected(key, len(data), exc.reason, detail)
        except ValueError as exc:  # ids in the manifest the registry refuses: not a batch we can trust
            return Rejected(key, len(data), "bad_manifest", str(exc))
        except Exception as exc:  # the key service or registry is unreachable: never quarantine for that
            if attempt == retries:
                raise KeyServiceUnavailable(
                    f"decoding {key} failed {retries + 1} times for an infrastructure reason ({exc!r}); "
                    "check the key service / device registry and re-run (the object stays unsettled)"
                ) from exc
            time.sleep(min(2.0, 0.1 * 2**attempt))
    raise AssertionError("unreachable")


class _RunRegistry:
    """The registry, with each device's public keys looked up once per ingest run.

    The local registry re-reads and parses its tenant's whole file on every lookup, so
    verifying a batch cost O(devices of the tenant); a run holds many batches of each device.
    A key revoked while a run is under way still verifies that run's batches (the run lasts
    seconds); the next run sees the revocation. Failed lookups are not remembered.
    """

    def __init__(self, registry: DeviceRegistry) -> None:
        self._registry = registry
        self._keys: dict[tuple[str, str], list] = {}

    def public_keys(self, tenant_id: str, device_id: str) -> list:
        k = (tenant_id, device_id)
        if k not in self._keys:
            self._keys[k] = self._registry.public_keys(tenant_id, device_id)
        return self._keys[k]


def _fetch(env: SyncEnv, keys: Sequence[str], report: IngestReport) -> Iterator[tuple[str, bytes]]:
    for key in keys:
        try:
            yield key, env.store.get(key)
        except ObjectNotFound:
            report.missing += 1


def _decoded(env: SyncEnv, keys: Sequence[str], report: IngestReport) -> Iterator[Accepted | Rejected]:
    retries = env.settings.key_service_retries
    workers = env.settings.decode_workers
    decoder = env.decoder
    if workers > 1 and decoder is not None and len(keys) > workers:
        # Threads, not processes: decoding is mostly Parquet, zstd and AEAD work that releases the
        # GIL, while a process pool pays for spawning and for pickling every decoded table back.
        # Each thread makes its own (key service, registry) pair: those need not be thread-safe.
        local = threading.local()

        def decode(key: str, data: bytes) -> Accepted | Rejected:
            pair = getattr(local, "pair", None)
            if pair is None:
                key_service, registry = decoder()
                pair = local.pair = (key_service, _RunRegistry(registry))
            return decode_object(key, data, *pair, retries=retries)

        with cf.ThreadPoolExecutor(workers, thread_name_prefix="ingest-decode") as pool:
            pending: collections.deque[cf.Future] = collections.deque()
            for key, data in _fetch(env, keys, report):
                pending.append(pool.submit(decode, key, data))
                if len(pending) >= 4 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        return
    registry = _RunRegistry(env.registry)
    for key, data in _fetch(env, keys, report):
        yield decode_object(key, data, env.key_service, registry, retries)


def _drift_check(item: Accepted | Rejected, now_ms: int, max_drift_ms: int) -> Accepted | Rejected:
    if isinstance(item, Rejected) or item.batch.manifest.hlc_max is None:
        return item
    ahead = physical_ms(item.batch.manifest.hlc_max) - now_ms
    if ahead > max_drift_ms:
        return Rejected(
            item.object_key,
            item.size,
            DEFERRED_REASON,
            f"hlc_max is {ahead / 1000:.0f} s ahead of central time (bound {max_drift_ms / 1000:.0f} s): "
            "deferred; reconciliation admits it once central time is within the bound",
            deferred=True,
        )
    return item


# ----------------------------------------------------------------------------- entry point
def ingest_objects(
    env: SyncEnv,
    keys: Iterable[str],
    *,
    reevaluate_deferred: bool = False,
    con: duckdb.DuckDBPyConnection | None = None,
) -> IngestReport:
    """Ingest the batch objects at ``keys`` exactly once; safe to repeat with any keys, in any order.

    ``reevaluate_deferred``: also take objects deferred for ``hlc_too_far_ahead`` (reconciliation).
    ``con``: an open lakehouse connection to reuse (one is opened otherwise).
    """
    wanted = sorted({k for k in keys if k.endswith(BATCH_SUFFIX)})
    report = IngestReport(objects=len(wanted))
    if not wanted:
        return report
    if con is None:
        with env.lakehouse.session() as own:
            return _ingest(env, own, wanted, reevaluate_deferred, report)
    return _ingest(env, con, wanted, reevaluate_deferred, report)


def _ingest(
    env: SyncEnv,
    con: duckdb.DuckDBPyConnection,
    wanted: list[str],
    reevaluate_deferred: bool,
    report: IngestReport,
) -> IngestReport:
    settled = settled_keys(con, wanted, pending_too=not reevaluate_deferred)  # the ledger included
    todo = [k for k in wanted if k not in settled]
    report.skipped_settled = len(wanted) - len(todo)
    now_ms = env.now_ms()
    chunk: list[Accepted | Rejected] = []
    rows = 0
    for item in _decoded(env, todo, report):
        item = _drift_check(item, now_ms, env.settings.max_drift_ms)
        chunk.append(item)
        rows += item.batch.table.num_rows if isinstance(item, Accepted) else 0
        if rows >= env.settings.rows_per_commit:
            report.add(_commit_chunk(env, con, chunk, now_ms, reevaluate_deferred))
            chunk, rows = [], 0
    if chunk:
        report.add(_commit_chunk(env, con, chunk, now_ms, reevaluate_deferred))
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


# ----------------------------------------------------------------------------- staging
@dataclass
class _Stage:
    """One stream's accepted batches of a chunk: rows with ``_bidx``/``batch_key``, and their ranges."""

    stream: str
    rows: pa.Table
    ranges: pa.Table
    keys: list[str]  # _bidx -> object key


def _stages(accepted: Sequence[Accepted]) -> dict[str, _Stage]:
    by_stream: dict[str, list[Accepted]] = {}
    for a in sorted(accepted, key=lambda a: a.object_key):
        by_stream.setdefault(a.batch.manifest.stream, []).append(a)
    out = {}
    for stream, items in by_stream.items():
        keys = [a.object_key for a in items]
        tables, bidx = [], []
        for i, a in enumerate(items):
            t = a.batch.table
            tables.append(t)
            bidx.append(np.full(t.num_rows, i, dtype=np.int32))
        rows = pa.concat_tables(tables) if tables else STREAMS[stream].schema.empty_table()
        idx = pa.array(np.concatenate(bidx) if bidx else np.zeros(0, np.int32), pa.int32())
        rows = rows.append_column("_bidx", idx).append_column(
            "batch_key", pa.DictionaryArray.from_arrays(idx, pa.array(keys, pa.string()))
        )
        if DAY in TABLES[STREAM_TABLES[stream]].partitioned_by:  # computed here, not by DuckLake (ICU)
            rows = rows.append_column(DAY, utc_day(rows.column("ts")))
        m = [a.batch.manifest for a in items]
        ranges = pa.table(
            {
                "_bidx": pa.array(range(len(items)), pa.int32()),
                "tenant_id": [x.tenant_id for x in m],
                "device_id": [x.device_id for x in m],
                "stream": [x.stream for x in m],
                "first_seq": pa.array([x.first_seq for x in m], pa.int64()),
                "last_seq": pa.array([x.last_seq for x in m], pa.int64()),
            }
        )
        out[stream] = _Stage(stream, rows, ranges, keys)
    return out


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(set(values))) or "NULL"


@dataclass
class _StreamResult:
    bad: dict[int, str] = field(default_factory=dict)  # _bidx -> replay detail
    new_by_bidx: dict[int, int] = field(default_factory=dict)


def _stream_step(con: duckdb.DuckDBPyConnection, st: _Stage, ingested_at: datetime | None) -> _StreamResult:
    """Replay check, dedupe and (if ``ingested_at``) insert of one stream's staged rows.

    Only *contested* rows (seqs inside the overlap of two staged batches' ranges, or of a
    staged batch and a ledger range) can be duplicates or replays: they take the
    fingerprint path; every other row is appended as is.
    """
    table = STREAM_TABLES[st.stream]
    spec = STREAMS[st.stream]
    tag = f"_s{next(_ids)}"
    stg, rng, ct = f"{tag}_stg", f"{tag}_rng", f"{tag}_ct"
    views = [stg, rng]
    con.register(stg, st.rows)
    con.register(rng, st.ranges)
    res = _StreamResult()
    try:
        tenants = _sql_list(st.ranges.column("tenant_id").to_pylist())
        same3 = "a.tenant_id = b.tenant_id AND a.device_id = b.device_id AND a.stream = b.stream"
        overlap = "a.first_seq <= b.last_seq AND b.first_seq <= a.last_seq"
        span = "greatest(a.first_seq, b.first_seq) AS lo, least(a.last_seq, b.last_seq) AS hi"
        contested = con.execute(
            f"""
            SELECT a._bidx, a.tenant_id, a.device_id, a.stream, {span}, FALSE AS stored
            FROM {rng} a JOIN {rng} b ON {same3} AND a._bidx <> b._bidx AND {overlap}
            UNION ALL
            SELECT a._bidx, a.tenant_id, a.device_id, a.stream, {span}, TRUE AS stored
            FROM {rng} a JOIN (SELECT * FROM batches WHERE tenant_id IN ({tenants})) b ON {same3} AND {overlap}
            """
        ).to_arrow_table()
        cols = [n for n, _ in TABLES[table].columns if n not in ("batch_key", "ingested_at")]
        col_sql = ", ".join(f'"{c}"' for c in cols)
        insert_head = f'INSERT INTO "{table}" ({col_sql}, batch_key, ingested_at) '
        counts = np.bincount(st.rows.column("_bidx").to_numpy(), minlength=len(st.keys))
        if contested.num_rows == 0:
            if ingested_at is not None:
                con.execute(
                    insert_head + f"SELECT {col_sql}, CAST(batch_key AS VARCHAR), ? FROM {stg}", [ingested_at]
                )
            res.new_by_bidx = {i: int(n) for i, n in enumerate(counts)}
            return res

        con.register(ct, contested)
        views.append(ct)
        # Each batch's rows are one contiguous slice of the stage (see _stages): mark the contested
        # seqs slice by slice in numpy rather than probing the ranges row by row in SQL.
        offsets = np.concatenate([[0], np.cumsum(counts)])
        seqs = st.rows.column("seq").to_numpy()
        mask = np.zeros(st.rows.num_rows, dtype=bool)
        for b, lo, hi in zip(*(contested.column(c).to_numpy() for c in ("_bidx", "lo", "hi")), strict=True):
            part = slice(offsets[b], offsets[b + 1])
            mask[part] |= (seqs[part] >= lo) & (seqs[part] <= hi)
        fast, slow_in = f"{tag}_fast", f"{tag}_sin"
        con.register(fast, st.rows.filter(pa.array(~mask)))
        con.register(slow_in, st.rows.filter(pa.array(mask)))
        views += [fast, slow_in]
        fp_cols = ", ".join(["hlc", "node_id", "epoch_ms(ts)", *(f'"{c}"' for c in spec.payload_names)])
        fp_stored = ", ".join(
            ["t.hlc", "t.node_id", "epoch_ms(t.ts)", *(f't."{c}"' for c in spec.payload_names)]
        )
        slow, ex, kept = f"{tag}_slow", f"{tag}_ex", f"{tag}_keep"
        slow_rows = con.execute(f"SELECT s.*, hash({fp_cols}) AS _fp FROM {slow_in} s").to_arrow_table()
        con.register(slow, slow_rows)
        views.append(slow)
        on4 = " AND ".join(f"s.{c} = e.{c}" for c in KEY4)
        if any(contested.column("stored").to_pylist()):
            existing = con.execute(
                f"""
                SELECT t.tenant_id, t.device_id, t.stream, t.seq, hash({fp_stored}) AS fp
                FROM "{table}" t JOIN (SELECT tenant_id, device_id, stream, min(lo) AS lo, max(hi) AS hi
                                       FROM {ct} WHERE stored GROUP BY ALL) r
                  ON t.tenant_id = r.tenant_id AND t.device_id = r.device_id AND t.stream = r.stream
                 AND t.seq BETWEEN r.lo AND r.hi
                WHERE t.tenant_id IN ({tenants})
                """
            ).to_arrow_table()
        else:
            existing = pa.table(
                {
                    c: pa.array([], t)
                    for c, t in (
                        ("tenant_id", pa.string()),
                        ("device_id", pa.string()),
                        ("stream", pa.string()),
                        ("seq", pa.int64()),
                        ("fp", pa.uint64()),
                    )
                }
            )
        con.register(ex, existing)
        views.append(ex)
        for bidx, seq in con.execute(
            f"SELECT s._bidx, min(s.seq) FROM {slow} s JOIN {ex} e ON {on4} WHERE s._fp <> e.fp GROUP BY 1"
        ).fetchall():
            res.bad[bidx] = f"seq {seq} differs from the stored row of the same (tenant, device, stream, seq)"
        bad1 = ", ".join(map(str, res.bad)) or "-1"
        for bidx, seq in con.execute(
            f"""
            WITH w AS (SELECT tenant_id, device_id, stream, seq, arg_min(_fp, _bidx) AS fp0 FROM {slow}
                       WHERE _bidx NOT IN ({bad1}) GROUP BY ALL HAVING min(_fp) <> max(_fp))
            SELECT s._bidx, min(s.seq) FROM {slow} s JOIN w e ON {on4}
            WHERE s._fp <> e.fp0 AND s._bidx NOT IN ({bad1}) GROUP BY 1
            """
        ).fetchall():
            res.bad[bidx] = f"seq {seq} differs from another batch of this run claiming the same seq"
        bad = ", ".join(map(str, res.bad)) or "-1"
        # What is left of a key is identical in every copy: keep one (the first batch's, for batch_key).
        payload = ", ".join(f'any_value("{c}") AS "{c}"' for c in cols if c not in KEY4)
        con.register(
            kept,
            con.execute(
                f"""
            SELECT tenant_id, device_id, stream, seq, {payload}, min(_bidx) AS _bidx FROM {slow} s
            WHERE _bidx NOT IN ({bad}) AND NOT EXISTS (SELECT 1 FROM {ex} e WHERE {on4})
            GROUP BY tenant_id, device_id, stream, seq
            """
            ).to_arrow_table(),
        )
        views.append(kept)
        if ingested_at is not None:
            keys_view = f"{tag}_keys"
            con.register(
                keys_view,
                pa.table(
                    {
                        "_bidx": pa.array(range(len(st.keys)), pa.int32()),
                        "batch_key": pa.array(st.keys, pa.string()),
                    }
                ),
            )
            views.append(keys_view)
            # one statement for uncontested and deduplicated rows: one set of data files per commit
            con.execute(
                insert_head
                + f"SELECT {col_sql}, CAST(batch_key AS VARCHAR), $at FROM {fast} WHERE _bidx NOT IN ({bad}) "
                f"UNION ALL SELECT {col_sql}, k.batch_key, $at FROM {kept} JOIN {keys_view} k USING (_bidx)",
                {"at": ingested_at},
            )
        slow_counts = np.bincount(st.rows.column("_bidx").to_numpy()[mask], minlength=len(st.keys))
        new = dict(con.execute(f"SELECT _bidx, count(*) FROM {kept} GROUP BY 1").fetchall())
        for i in range(len(st.keys)):
            if i not in res.bad:
                res.new_by_bidx[i] = int(counts[i] - slow_counts[i]) + int(new.get(i, 0))
        return res
    finally:
        for v in views:
            con.unregister(v)


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
    n = edits.num_rows
    for name, value in (("origin", pa.array(["device"] * n)), ("node_id", edits.column("device_id"))):
        edits = edits.set_column(edits.schema.get_field_index(name), name, value)
    merger = StateMerger(
        con,
        env.rules,
        state_table="device_state",
        conflicts_table="state_conflicts",
        contributions_table="state_contributions",
    )
    stats = merger.merge(edits, own_transaction=False)
    return stats.edits_in, Counter(stats.conflicts_by_rule)


def _accepted_rows(stage: _Stage, bad: Iterable[str]) -> pa.Table:
    bad = set(bad)
    bad_idx = [i for i, k in enumerate(stage.keys) if k in bad]
    if not bad_idx:
        return stage.rows
    mask = ~np.isin(stage.rows.column("_bidx").to_numpy(), np.array(bad_idx, dtype=np.int32))
    return stage.rows.filter(pa.array(mask))


def _commit_chunk(
    env: SyncEnv,
    con: duckdb.DuckDBPyConnection,
    items: list[Accepted | Rejected],
    now_ms: int,
    reevaluate_deferred: bool,
) -> IngestReport:
    accepted = [i for i in items if isinstance(i, Accepted)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    stages = _stages(accepted)
    now = _ts(now_ms)

    def unit(con: duckdb.DuckDBPyConnection) -> IngestReport:
        r = IngestReport()
        # Another run may have settled some of these objects since we looked: re-check in this transaction.
        keys = [i.object_key for i in items]
        ledgered, settled = _ledgered_and_settled(con, keys, pending_too=not reevaluate_deferred)
        acc = [a for a in accepted if a.object_key not in ledgered]
        st = stages if len(acc) == len(accepted) else _stages(acc)
        rej = [x for x in rejected if x.object_key not in settled]
        if reevaluate_deferred:  # still too far ahead: it keeps its one pending quarantine row
            pending = _pending(con, [x.object_key for x in rej if x.deferred])
            rej = [x for x in rej if not (x.deferred and x.object_key in pending)]
        ledger_rows, bad_keys = [], {}
        for stage in st.values():
            result = _stream_step(con, stage, now)
            for bidx, detail in result.bad.items():
                bad_keys[stage.keys[bidx]] = detail
            for bidx, n in result.new_by_bidx.items():
                ledger_rows.append((stage.keys[bidx], n))
        new_by_key = dict(ledger_rows)
        if "state" in st:  # merged in this transaction: state, rows and ledger commit together
            r.state_edits_merged, r.conflicts = merge_state_edits(
                env, con, _accepted_rows(st["state"], bad_keys)
            )
        good = [a for a in acc if a.object_key not in bad_keys]
        rej += [
            Rejected(a.object_key, a.size, REPLAY_REASON, bad_keys[a.object_key])
            for a in acc
            if a.object_key in bad_keys
        ]
        _write_ledger(con, good, new_by_key, now)
        r.evictions = _write_evictions(con, good, now)
        _write_quarantine(con, rej, now)
        if reevaluate_deferred:
            admitted = _resolve_deferred(con, [a.object_key for a in good], now)
            r.deferred_admitted = admitted
        _update_devices(con, good, st.get("health"), now, env)
        r.accepted = len(good)
        r.rows_in = sum(a.batch.table.num_rows for a in good)
        r.rows_new = sum(new_by_key.get(a.object_key, 0) for a in good)
        r.duplicates_dropped = r.rows_in - r.rows_new
        r.quarantined = Counter(x.reason for x in rej)
        return r

    return retried(con, unit, what="ingest", max_retries=env.lakehouse.config.max_retries)


def _pending(con: duckdb.DuckDBPyConnection, keys: Sequence[str]) -> set[str]:
    if not keys:
        return set()
    rows = con.execute(
        f"SELECT object_key FROM quarantine WHERE {PENDING_SQL} AND object_key IN ({_sql_list(keys)})"
    ).fetchall()
    return {r[0] for r in rows}


def _resolve_deferred(con: duckdb.DuckDBPyConnection, keys: Sequence[str], now: datetime) -> int:
    pending = _pending(con, keys)
    if pending:
        con.execute(
            f"UPDATE quarantine SET resolved_at = ? WHERE {PENDING_SQL} AND object_key IN ({_sql_list(pending)})",
            [now],
        )
    return len(pending)


def _insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    if rows.num_rows == 0:
        return
    view = f"_ins{next(_ids)}"
    con.register(view, rows)
    try:
        cols = ", ".join(f'"{c}"' for c in rows.column_names)
        con.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM {view}')
    finally:
        con.unregister(view)


def _write_ledger(
    con: duckdb.DuckDBPyConnection, good: Sequence[Accepted], new_by_key: dict[str, int], now: datetime
) -> None:
    rows = []
    for a in good:
        m = a.batch.manifest
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
        _insert_rows(con, "batches", pa.Table.from_pylist(rows))


def _write_evictions(con: duckdb.DuckDBPyConnection, good: Sequence[Accepted], now: datetime) -> int:
    rows = {}
    for a in good:
        m = a.batch.manifest
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
    _insert_rows(con, "evictions", fresh)
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
        _insert_rows(con, "quarantine", pa.Table.from_pylist(rows, schema=schema))


def _update_devices(
    con: duckdb.DuckDBPyConnection,
    good: Sequence[Accepted],
    health: _Stage | None,
    now: datetime,
    env: SyncEnv,
) -> None:
    """``devices``: last_batch_at, online, and the latest reported version/slot (by HLC) from health rows."""
    devs = sorted({(a.batch.manifest.tenant_id, a.batch.manifest.device_id) for a in good})
    if not devs:
        return
    good_keys = {a.object_key for a in good}
    inc = pa.table(
        {
            "tenant_id": [d[0] for d in devs],
            "device_id": [d[1] for d in devs],
            "platform": [_platform(env, *d) for d in devs],
        }
    )
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
            SELECT i.tenant_id, i.device_id, coalesce(c.platform, i.platform) AS platform, c.tags,
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
    _insert_rows(con, "devices", merged)


def _platform(env: SyncEnv, tenant_id: str, device_id: str) -> str | None:
    """The device's platform from registry metadata, when the registry keeps any."""
    meta = getattr(env.registry, "metadata", None)
    if callable(meta):
        try:
            return (meta(tenant_id, device_id) or {}).get("platform")
        except Exception:  # metadata is a nicety: never fail an ingest for it
            return None
    return None
