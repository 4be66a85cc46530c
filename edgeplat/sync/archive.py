"""Settled batch objects leave the hot prefix: moved to the archive, and replayed from it on demand.

Without this, every batch ever uploaded stays under ``tenant=``, and the arrival sensor's
listing and the reconciliation's re-listing grow with history. Once an object is settled
(in the ledger as ingested, or quarantined for good) and older than the operator's
retention (``archive_after``, by its ingest or quarantine time), :func:`archive_settled`
moves it:

- ingested objects to ``archive/<hot key>``: ``archive/tenant=T/device=D/stream=S/<first>-<last>.batch``,
  the device's layout kept below the prefix, so a replay lists one device's range;
- quarantined objects to ``archive/quarantine/<hot key>`` (kept for forensics, never replayed;
  a bucket lifecycle rule may expire them sooner).

Batches deferred for a clock too far ahead are pending, not settled: they stay hot for the
reconciliation that admits them.

The move is crash-safe, in three steps per chunk of objects: copy (``put_if_absent`` to the
archive key; an object already there from an interrupted move must hold the same bytes),
record (``archived_batches``, one transaction, idempotent), delete the hot object. A crash
after the copy leaves the hot object settled in the ledger (reconciliation skips it) and the
next run finishes the move; a crash after the record leaves a hot copy the next run deletes.
Nothing is lost and nothing is ingested twice: the ledger, not the object's place, says what
was ingested. The archive prefix is never listed by the arrival sensor or the reconciliation
(both list ``tenant=``), and ``archive/...`` is not a batch key.

:func:`replay_archive` re-ingests a device's archived range (a table rebuilt after data loss,
a fresh lakehouse): the ingest reads the archived bytes under their original keys (so the
signed manifest still matches the key) with ``replay=True``, and its usual checks keep every
row exactly once: rows already stored are dropped as duplicates.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa

from edge_sync.batch_keys import ARCHIVE_PREFIX, BATCH_PREFIX, BATCH_SUFFIX, ObjectKey, parse_object_key
from edge_sync.ids import validate_id
from edge_sync.objectstore import ListPage, ObjectInfo, ObjectNotFound, ObjectStore, ObjectStoreError
from edge_sync.streams import get_stream
from edgeplat.lake_files import insert_rows
from edgeplat.lakehouse import Lakehouse, retried
from edgeplat.sync.env import SyncEnv, wall_ms
from edgeplat.sync.ingest import IngestReport, ingest_objects
from edgeplat.sync.ledger import PENDING_SQL

log = logging.getLogger(__name__)

QUARANTINE_ARCHIVE_PREFIX = f"{ARCHIVE_PREFIX}quarantine/"
DEFAULT_ARCHIVE_AFTER = timedelta(hours=72)
DEFAULT_MAX_OBJECTS = 50_000  # moved per run: a run's length stays bounded, the schedule catches up
MOVE_CHUNK = 500  # objects per record transaction
INGESTED, QUARANTINED = "ingested", "quarantined"
_ids = itertools.count()


def archive_key_for(key: str, settled: str) -> str:
    """Where the hot object ``key`` lives once archived (``settled``: ingested or quarantined)."""
    if settled not in (INGESTED, QUARANTINED):
        raise ValueError(f"settled must be {INGESTED!r} or {QUARANTINED!r}, got {settled!r}")
    return (ARCHIVE_PREFIX if settled == INGESTED else QUARANTINE_ARCHIVE_PREFIX) + key


class ArchivedObjects(ObjectStore):
    """A read-only view of the archived ingested objects under their original (hot) keys.

    The ingest verifies each batch against the key it was uploaded under (the signed manifest
    names it), so a replay reads ``archive/<key>`` while the ingest sees ``<key>``.
    """

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.url = f"{store.url}{ARCHIVE_PREFIX}"

    def get(self, key: str) -> bytes:
        try:
            return self._store.get(ARCHIVE_PREFIX + key)
        except ObjectNotFound:
            raise ObjectNotFound(key, self.url) from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._store.get_range(ARCHIVE_PREFIX + key, start, length)

    def head(self, key: str) -> ObjectInfo | None:
        info = self._store.head(ARCHIVE_PREFIX + key)
        return None if info is None else ObjectInfo(key, info.size, info.etag, info.last_modified)

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ListPage:
        page = self._store.list(
            ARCHIVE_PREFIX + prefix, after=None if after is None else ARCHIVE_PREFIX + after, limit=limit
        )
        n = len(ARCHIVE_PREFIX)
        objects = [ObjectInfo(o.key[n:], o.size, o.etag, o.last_modified) for o in page.objects]
        return ListPage(objects, None if page.next_after is None else page.next_after[n:])

    def _read_only(self, key: str) -> ObjectStoreError:
        return ObjectStoreError(f"the archive view {self.url} is read-only; cannot write {key!r}")

    def put_if_absent(self, key: str, data: bytes) -> bool:
        raise self._read_only(key)

    def put(self, key: str, data: bytes) -> None:
        raise self._read_only(key)

    def delete(self, key: str) -> None:
        raise self._read_only(key)


# ----------------------------------------------------------------------------- archiving
@dataclass(frozen=True)
class ArchiveEnv:
    """What archiving needs (a ``SyncEnv`` fits too): no key service, no registry, so an archive
    run does not depend on Vault."""

    lakehouse: Lakehouse
    store: ObjectStore
    now_ms: Callable[[], int] = wall_ms


@dataclass
class ArchiveReport:
    """What one archive run did (numbers become Dagster metadata)."""

    listed: int = 0  # hot batch keys listed
    moved: dict[str, int] = field(default_factory=lambda: {INGESTED: 0, QUARANTINED: 0})
    resumed: int = 0  # archive copy already there (an interrupted move finished)
    recent: int = 0  # settled, but within the retention: left hot
    unsettled: int = 0  # not ingested yet, or deferred: left hot
    vanished: int = 0  # gone from the hot prefix between listing and copy
    conflicts: list[str] = field(default_factory=list)  # archive copy with other bytes: left hot

    def as_dict(self) -> dict:
        return {
            "listed": self.listed,
            "moved_ingested": self.moved[INGESTED],
            "moved_quarantined": self.moved[QUARANTINED],
            "resumed": self.resumed,
            "recent": self.recent,
            "unsettled": self.unsettled,
            "vanished": self.vanished,
            "conflicts": len(self.conflicts),
        }


_SETTLED_SQL = f"""
WITH led AS (
    SELECT object_key, any_value(tenant_id) AS tenant_id, any_value(device_id) AS device_id,
           any_value(stream) AS stream, min(first_seq) AS first_seq, max(last_seq) AS last_seq,
           any_value(object_size) AS object_size, max(ingested_at) AS at, '{INGESTED}' AS settled
    FROM batches WHERE object_key IN (SELECT object_key FROM {{view}}) GROUP BY object_key
),
qua AS (
    SELECT object_key, any_value(tenant_id) AS tenant_id, any_value(device_id) AS device_id,
           any_value(stream) AS stream, min(first_seq) AS first_seq, max(last_seq) AS last_seq,
           any_value(object_size) AS object_size, max(quarantined_at) AS at, '{QUARANTINED}' AS settled
    FROM quarantine WHERE object_key IN (SELECT object_key FROM {{view}})
      AND object_key NOT IN (SELECT object_key FROM led)
      AND object_key NOT IN (SELECT object_key FROM quarantine WHERE {PENDING_SQL})
    GROUP BY object_key
)
SELECT * FROM led UNION ALL SELECT * FROM qua ORDER BY object_key
"""


def settled_rows(con: duckdb.DuckDBPyConnection, keys: Sequence[str]) -> list[dict]:
    """The settled ones of ``keys`` with what the ledger or quarantine knows of them (pending deferred
    batches are not settled), and when they settled (``at``)."""
    if not keys:
        return []
    view = f"_ak{next(_ids)}"
    con.register(view, pa.table({"object_key": pa.array(sorted(set(keys)), pa.string())}))
    try:
        return con.execute(_SETTLED_SQL.format(view=view)).to_arrow_table().to_pylist()
    finally:
        con.unregister(view)


def _hot_batch_pages(store: ObjectStore, prefix: str) -> Iterator[list[str]]:
    after = None
    while True:
        page = store.list(prefix or BATCH_PREFIX, after=after, limit=1000)
        yield [o.key for o in page.objects if o.key.endswith(BATCH_SUFFIX)]
        if page.next_after is None:
            return
        after = page.next_after


def _record(con: duckdb.DuckDBPyConnection, moved: list[dict], now: datetime) -> None:
    """Add ``moved`` to ``archived_batches`` unless recorded already (a resumed move): idempotent."""
    if not moved:
        return
    rows = pa.Table.from_pylist(
        [
            {
                "tenant_id": m["tenant_id"],
                "device_id": m["device_id"],
                "stream": m["stream"],
                "first_seq": m["first_seq"],
                "last_seq": m["last_seq"],
                "object_key": m["object_key"],
                "archive_key": archive_key_for(m["object_key"], m["settled"]),
                "settled": m["settled"],
                "object_size": m["object_size"],
                "archived_at": now,
            }
            for m in moved
        ],
        schema=pa.schema(
            [(n, pa.string()) for n in ("tenant_id", "device_id", "stream")]
            + [("first_seq", pa.int64()), ("last_seq", pa.int64())]
            + [(n, pa.string()) for n in ("object_key", "archive_key", "settled")]
            + [("object_size", pa.int64()), ("archived_at", pa.timestamp("us", tz="UTC"))]
        ),
    )

    def unit(c: duckdb.DuckDBPyConnection) -> None:
        view = f"_ar{next(_ids)}"
        c.register(view, rows)
        try:
            fresh = c.execute(
                f"SELECT * FROM {view} v WHERE NOT EXISTS "
                "(SELECT 1 FROM archived_batches a WHERE a.object_key = v.object_key)"
            ).to_arrow_table()
        finally:
            c.unregister(view)
        insert_rows(c, "archived_batches", fresh)

    retried(con, unit, what="record archived batches")


def _copy(store: ObjectStore, row: dict, report: ArchiveReport) -> bool:
    """Step 1: the object's bytes at its archive key (True), or why not (False, counted)."""
    key = row["object_key"]
    dest = archive_key_for(key, row["settled"])
    try:
        data = store.get(key)
    except ObjectNotFound:
        report.vanished += 1
        return False
    if store.put_if_absent(dest, data):
        return True
    if store.get(dest) != data:  # only the platform writes under archive/: a bug or tampering
        log.error("archive copy of %s at %s differs from the hot object: left hot", key, dest)
        report.conflicts.append(key)
        return False
    report.resumed += 1
    return True


def archive_settled(
    env: ArchiveEnv | SyncEnv,
    *,
    archive_after: timedelta = DEFAULT_ARCHIVE_AFTER,
    prefix: str = "",
    max_objects: int = DEFAULT_MAX_OBJECTS,
) -> ArchiveReport:
    """Move the hot objects settled longer than ``archive_after`` ago to the archive (at most
    ``max_objects``), each copied, recorded, then deleted. ``prefix`` (``tenant=<T>/``): one tenant."""
    if archive_after < timedelta(0) or max_objects < 1:
        raise ValueError(
            f"archive_after must not be negative and max_objects must be positive, got "
            f"{archive_after} and {max_objects}"
        )
    if prefix and not prefix.startswith(BATCH_PREFIX):
        raise ValueError(f"prefix {prefix!r} is not under the hot prefix {BATCH_PREFIX!r}: use 'tenant=<T>/'")
    now = datetime.fromtimestamp(env.now_ms() / 1000, UTC)
    cutoff = now - archive_after
    report = ArchiveReport()
    moved_total = 0
    with env.lakehouse.session() as con:
        for keys in _hot_batch_pages(env.store, prefix):
            report.listed += len(keys)
            settled = settled_rows(con, keys)
            report.unsettled += len(keys) - len(settled)
            due = [r for r in settled if r["at"] is not None and r["at"] < cutoff]
            report.recent += len(settled) - len(due)
            due = due[: max_objects - moved_total]
            for i in range(0, len(due), MOVE_CHUNK):
                chunk = due[i : i + MOVE_CHUNK]
                copied = [r for r in chunk if _copy(env.store, r, report)]  # 1. copy
                _record(con, copied, now)  # 2. record
                for r in copied:  # 3. delete the hot object
                    env.store.delete(r["object_key"])
                    report.moved[r["settled"]] += 1
                moved_total += len(copied)
            if moved_total >= max_objects:
                break
    return report


# ----------------------------------------------------------------------------- replay
@dataclass(frozen=True)
class ReplayRange:
    """A device's batches to replay: one stream or all, the batches overlapping a seq range."""

    tenant_id: str
    device_id: str
    stream: str | None = None
    from_seq: int | None = None
    to_seq: int | None = None

    def __post_init__(self) -> None:
        validate_id("tenant", self.tenant_id)
        validate_id("device", self.device_id)
        if self.stream is not None:
            get_stream(validate_id("stream", self.stream))
        lo = 0 if self.from_seq is None else self.from_seq
        if lo < 0 or (self.to_seq is not None and self.to_seq < lo):
            raise ValueError(
                f"seq range {self.from_seq}..{self.to_seq} is empty or negative: give 0 <= from-seq <= to-seq"
            )

    @property
    def hot_prefix(self) -> str:
        stream = f"stream={self.stream}/" if self.stream else ""
        return f"{BATCH_PREFIX}{self.tenant_id}/device={self.device_id}/{stream}"

    def covers(self, key: ObjectKey) -> bool:
        lo = 0 if self.from_seq is None else self.from_seq
        hi = key.last_seq if self.to_seq is None else self.to_seq
        return key.first_seq <= hi and lo <= key.last_seq

    def __str__(self) -> str:
        seqs = f" seqs {self.from_seq or 0}..{'' if self.to_seq is None else self.to_seq}"
        return f"{self.tenant_id}/{self.device_id}/{self.stream or '*'}" + (
            seqs if self.from_seq is not None or self.to_seq is not None else ""
        )


def range_keys(store: ObjectStore, rng: ReplayRange) -> list[str]:
    """The batch keys of ``rng`` in ``store`` (the hot store, or the :class:`ArchivedObjects` view), in key order."""
    keys: list[str] = []
    after = None
    while True:
        page = store.list(rng.hot_prefix, after=after, limit=1000)
        for o in page.objects:
            try:
                parsed = parse_object_key(o.key)
            except ValueError:  # not a batch (a stray name): nothing to replay
                continue
            if rng.covers(parsed):
                keys.append(o.key)
        if page.next_after is None:
            return keys
        after = page.next_after


@dataclass
class ReplayReport:
    """What a replay did: the archived objects found and the ingest's report over them."""

    range: str
    archived: int = 0  # objects read from the archive
    hot: int = 0  # objects of the range still in the hot prefix (within the retention)
    ingest: IngestReport = field(default_factory=IngestReport)

    @property
    def found(self) -> int:
        return self.archived + self.hot

    def as_dict(self) -> dict:
        return {"range": self.range, "archived": self.archived, "hot": self.hot, **self.ingest.as_dict()}


def replay_archive(env: SyncEnv, rng: ReplayRange) -> ReplayReport:
    """Re-ingest the batches of ``rng`` exactly once, from the archive and, for those still within
    the retention, from the hot prefix: rows the tables hold already are dropped as duplicates,
    missing ones appended; archived objects the ledger lacks (a fresh lakehouse) are ledgered and
    recorded as archived. Quarantined and deferred objects are not replayed."""
    hot = range_keys(env.store, rng)
    archived = [k for k in range_keys(ArchivedObjects(env.store), rng) if k not in set(hot)]
    report = ReplayReport(str(rng), archived=len(archived), hot=len(hot))
    with env.lakehouse.session() as con:
        if hot:  # mid-move objects are read here, from the hot copy (the same bytes)
            report.ingest.add(ingest_objects(env, hot, con=con, replay=True))
        if archived:
            view = replace(env, store=ArchivedObjects(env.store))
            report.ingest.add(ingest_objects(view, archived, con=con, replay=True))
            now = datetime.fromtimestamp(env.now_ms() / 1000, UTC)
            _record(con, [r for r in settled_rows(con, archived) if r["settled"] == INGESTED], now)
    return report


__all__ = [
    "ARCHIVE_PREFIX",
    "ArchiveEnv",
    "DEFAULT_ARCHIVE_AFTER",
    "QUARANTINE_ARCHIVE_PREFIX",
    "ArchiveReport",
    "ArchivedObjects",
    "ReplayRange",
    "ReplayReport",
    "archive_key_for",
    "archive_settled",
    "range_keys",
    "replay_archive",
    "settled_rows",
]
