# Over 500 lines on purpose: one lock-guarded facade whose parts are the cache_* modules.
"""The device-side offline cache: every row a device records waits here until it is uploaded.

A DuckDB file encrypted at rest with the device key (32 bytes from the caller's keyring or
Vault; the key is never written beside the database). Rows of each stream in
``edge_sync.streams.STREAMS`` get a per-stream ``seq`` (per device and stream, from 1,
gapless as issued) and an HLC from ``edge_sync.hlc.HybridLogicalClock`` (node id = device
id). The last issued seq of every stream and the last HLC are persisted in the same
transaction as the rows, so a reopened cache continues both monotonically, even when the
wall clock went backwards while it was closed.

Durability: single-row ``record()`` calls are buffered in memory and written as one Arrow
batch when the durability window is exceeded (``Durability.max_rows`` rows, or
``Durability.max_ms`` since the first buffered row; a timer thread flushes an idle window).
**A crash loses at most the durability window of un-flushed single-row records.** Alerts
and state edits (``put``) are written at once, and ``record_batch`` is written before it
returns. Rows lost in a crash never reached the file, and neither did their seqs: the
reopened cache issues those seqs again, so the central side never sees a gap or duplicate.

Size bound: measured as the *accounted* bytes of stored rows (``cache_rows.row_nbytes``:
fixed widths plus UTF-8 bytes of strings, the uncompressed size), not the file size: a
DuckDB file never shrinks (freed blocks are reused after a checkpoint), so only an
accounted figure goes down as rows are acknowledged or evicted, and it costs no checkpoint.
DuckDB compresses, so the file is usually smaller than the accounted figure; ``stats()``
reports both. Eviction order and records: see ``edge_sync.cache_evict``. A full disk on
write (ENOSPC, or a DuckDB IO error saying so) is handled like the bound: evict, then
retry; only when nothing is left to evict does ``CacheFullError`` reach the caller, and the
rows stay buffered.

Delivery: the uploader reads ``pending(stream)`` (flushes first), uploads, then calls
``ack(stream, upto_seq)``, which moves the watermark and deletes the delivered rows.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from edge_sync import cache_evict, cache_state
from edge_sync.cache_rows import StreamBuffer, batch_table, ts_to_ms
from edge_sync.cache_store import STATE_SCHEMA, CacheKeyError, CacheStore
from edge_sync.hlc import HybridLogicalClock
from edge_sync.streams import STREAMS, get_stream

__all__ = ["CacheFullError", "CacheKeyError", "DeviceCache", "Durability", "DEFAULT_MAX_BYTES"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
IMMEDIATE_STREAMS = frozenset({"alerts", "state"})  # written at once, never wait for the window
DISK_FULL_RETRIES = 8
DISK_FULL_SHRINK = 0.75  # on a full disk, evict down to this fraction of the accounted size


class CacheFullError(OSError):
    """The disk stayed full after everything evictable was evicted; the rows are still buffered."""


@dataclass(frozen=True)
class Durability:
    """How many single-row records may wait in memory: at most ``max_rows`` rows or ``max_ms``."""

    # The time bound is what limits a crash's loss; the row bound only caps the buffer's memory
    # and how often a busy device pays for a DuckDB commit.
    max_rows: int = 10_000
    max_ms: int = 1000

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_ms < 0:
            raise ValueError(f"Durability needs max_rows >= 1 and max_ms >= 0, got {self}")


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc).lower()
    return isinstance(exc, duckdb.Error) and ("no space left" in text or "disk is full" in text)


class DeviceCache:
    """The encrypted offline cache of one device: record, buffer, bound, hand rows to the uploader.

    Thread-safe: one lock serialises every call (and the durability timer).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        tenant_id: str,
        device_id: str,
        key: bytes,
        max_bytes: int = DEFAULT_MAX_BYTES,
        durability: Durability | None = None,
        ttl_overrides: dict[str, int | None] | None = None,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        if not tenant_id or not device_id:
            raise ValueError("DeviceCache needs a non-empty tenant_id and device_id")
        self.tenant_id, self.device_id = tenant_id, device_id
        self.durability = durability or Durability()
        self.max_bytes = max_bytes
        self._ttls = self._resolve_ttls(ttl_overrides or {})
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._closed = False
        # called under the lock with each single-row record, stamped as cached (the live path)
        self.on_record: Callable[[str, int, int, int, dict[str, Any]], None] | None = None
        self._store = CacheStore(path, key, tenant_id, device_id)
        self.path = self._store.path
        try:
            self._clock = HybridLogicalClock(device_id, self._wall_ms, last=self._store.last_hlc())
            counters = self._store.counters()
            self._last_seq = {s: counters[s][0] for s in STREAMS}  # issued (buffered included)
            self._flushed_seq = dict(self._last_seq)  # in the file
            self._acked = {s: counters[s][1] for s in STREAMS}
            usage = {s: self._store.usage(s) for s in STREAMS}
            self._rows = {s: usage[s][0] for s in STREAMS}
            self._bytes = {s: usage[s][1] for s in STREAMS}
            self._buffers = {s: StreamBuffer(STREAMS[s]) for s in STREAMS}
            self._extra: dict[str, list[pa.Table]] = {}  # record_batch tables awaiting the write
            self._state_rows: list[dict[str, Any]] = []
            self._buffered = 0  # single-row records waiting in memory, all streams
            self._first_buffered = 0.0  # time.monotonic() of the oldest of them
            self._last_flush_ms: int | None = None
            self._enforce_bound()
        except BaseException:
            self._store.con.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike, **options: Any) -> DeviceCache:
        """Open (or create) the cache file at ``path``; ``options`` are the constructor's keywords.
        Raises ``CacheKeyError`` on a wrong key."""
        return cls(path, **options)

    @staticmethod
    def _resolve_ttls(overrides: dict[str, int | None]) -> dict[str, int | None]:
        ttls = {name: spec.ttl_seconds for name, spec in STREAMS.items()}
        for name, ttl in overrides.items():
            spec = get_stream(name)
            if spec.ttl_seconds is None and ttl is not None:
                raise ValueError(f"stream {name!r} never expires on the device; remove it from ttl_overrides")
            if ttl is not None and ttl <= 0:
                raise ValueError(f"ttl_overrides[{name!r}] must be positive seconds or None, got {ttl}")
            ttls[name] = ttl
        return ttls

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Flush what is buffered, persist the clock and close the file."""
        with self._lock:
            if self._closed:
                return
            self._cancel_timer()
            try:
                self.flush()
                self._store.save_clock(self._clock.last)
            finally:
                self._closed = True
                self._store.close()

    def __enter__(self) -> DeviceCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"cache {self.path} is closed; open it again with DeviceCache.open")

    # -- recording ------------------------------------------------------------------------
    def record(self, stream: str, row: dict[str, Any]) -> tuple[int, int]:
        """Record one row; returns (seq, hlc). ``ts`` (aware datetime or epoch ms) defaults to now."""
        with self._lock:
            self._check_open()
            buf = self._buffers.get(stream)
            if buf is None:
                get_stream(stream)  # raises the unknown-stream error
            if stream == "state":
                raise ValueError(
                    "state rows are recorded with put(namespace, key, fields), not record('state', ...)"
                )
            buf.check(row)
            ts = row.get("ts")
            ts = self._wall_ms() if ts is None else ts_to_ms(ts)
            seq = self._last_seq[stream] + 1
            hlc = self._clock.now()
            self._last_seq[stream] = seq
            buf.append(seq, hlc, ts, row)
            self._buffered += 1
            if self._buffered == 1:
                self._first_buffered = time.monotonic()
            if self.on_record is not None:
                self.on_record(stream, seq, hlc, ts, row)
            if (
                stream in IMMEDIATE_STREAMS
                or self._buffered >= self.durability.max_rows
                or (time.monotonic() - self._first_buffered) * 1000 >= self.durability.max_ms
            ):
                self.flush()
            elif self._buffered == 1:
                self._arm_timer()  # an idle window is flushed by the timer
            return seq, hlc

    def record_batch(self, stream: str, table: pa.Table) -> tuple[int, int]:
        """Record an Arrow table of payload columns (and optional ``ts``); returns (first_seq, last_seq).

        Written (with anything buffered) in one transaction before it returns. An empty table
        issues nothing and returns ``(next_seq, next_seq - 1)``.
        """
        spec = get_stream(stream)
        if stream == "state":
            raise ValueError("state rows are recorded with put(namespace, key, fields), not record_batch")
        with self._lock:
            self._check_open()
            first = self._last_seq[stream] + 1
            n = table.num_rows
            if n == 0:
                return first, first - 1
            first_hlc, _ = self._clock.reserve(n)
            # seqs are taken only once the table converted; a bad table wastes no seq
            stored = batch_table(spec, table, first, first_hlc, self._wall_ms())
            self._last_seq[stream] = first + n - 1
            self._extra.setdefault(stream, []).append(stored)
            self.flush()
            return first, first + n - 1

    def put(self, namespace: str, key: str, fields: dict[str, Any]) -> int:
        """A state edit made on the device; returns its HLC (shared by all fields of the edit).

        Appends one ``state`` row per field (origin ``device``, so it is uploaded) and updates
        ``state_current``, in one transaction, at once.
        """
        encoded = cache_state.encode_fields(namespace, key, fields)
        with self._lock:
            self._check_open()
            hlc = self._clock.now()
            ts = self._wall_ms()
            buf = self._buffers["state"]
            for field, value in encoded.items():
                seq = self._last_seq["state"] + 1
                self._last_seq["state"] = seq
                row = {"namespace": namespace, "key": key, "field": field, "value": value, "origin": "device"}
                buf.append(seq, hlc, ts, row)
                self._buffered += 1
                self._state_rows.append({**row, "hlc": hlc, "node_id": self.device_id})
            self.flush()
            return hlc

    def observe_hlc(self, remote_hlc: int) -> int:
        """Pull the clock past an HLC seen elsewhere (the downlink); persisted at once."""
        with self._lock:
            self._check_open()
            hlc = self._clock.observe(remote_hlc)
            self._store.save_clock(hlc)
            return hlc

    # -- state ----------------------------------------------------------------------------
    def get_state(self, namespace: str, key: str) -> dict[str, Any]:
        """Current fields of one state record, JSON-decoded ({} when unknown)."""
        with self._lock:
            self._check_open()
            self.flush()
            return cache_state.decode_record(self._store.state_table(namespace, key))

    def state_table(self) -> pa.Table:
        """The whole ``state_current`` table (values as JSON text), ordered by namespace, key, field."""
        with self._lock:
            self._check_open()
            self.flush()
            return self._store.state_table()

    def replace_state_rows(self, table: pa.Table) -> None:
        """Upsert merged state rows by (namespace, key, field); later duplicates in ``table`` win.

        Columns: namespace, key, field, value (JSON text), hlc, node_id, origin. Not uploaded
        (these are central or already-uploaded edits); the clock observes their largest HLC.
        """
        rows = cache_state.merged_rows(table)
        if rows.num_rows == 0:
            return
        with self._lock:
            self._check_open()
            self.flush()
            hlc = self._clock.observe(pc.max(rows["hlc"]).as_py())
            self._store.replace_state(rows, hlc)

    # -- flushing -------------------------------------------------------------------------
    def _arm_timer(self) -> None:
        if self._timer is not None or self.durability.max_ms <= 0:
            return
        self._timer = threading.Timer(self.durability.max_ms / 1000, self._timer_flush)
        self._timer.daemon = True
        self._timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timer_flush(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed:
                return
            try:
                self.flush()
            except Exception:  # the rows stay buffered; the next record or flush retries
                log.exception("background flush of cache %s failed", self.path)

    def flush(self) -> None:
        """Write every buffered row (one transaction), then enforce the size bound (``max_bytes``)."""
        with self._lock:
            self._check_open()
            self._cancel_timer()
            tables: dict[str, list[pa.Table]] = {}
            for stream, buf in self._buffers.items():
                if len(buf):
                    tables[stream] = [buf.to_table()]
            for stream, extra in self._extra.items():
                tables.setdefault(stream, []).extend(extra)
            if not tables:
                self._enforce_bound()
                return
            state = (
                pa.Table.from_pylist(cache_state.dedupe_edits(self._state_rows), schema=STATE_SCHEMA)
                if self._state_rows
                else None
            )
            last_seqs = {s: self._last_seq[s] for s in tables}
            self._write_retrying(tables, last_seqs, state)
            for stream, batches in tables.items():
                self._rows[stream] += sum(b.num_rows for b in batches)
                self._bytes[stream] += sum(pc.sum(b["nbytes"]).as_py() or 0 for b in batches)
                self._buffers[stream].clear()
                self._flushed_seq[stream] = last_seqs[stream]
            self._extra.clear()
            self._state_rows = []
            self._buffered = 0
            self._last_flush_ms = self._wall_ms()
            self._enforce_bound()

    def _write(
        self, tables: dict[str, list[pa.Table]], last_seqs: dict[str, int], state: pa.Table | None
    ) -> None:
        """The one place rows reach the file (tests replace it to inject a full disk)."""
        self._store.write(tables, last_seqs, self._clock.last, state)

    def _write_retrying(self, tables, last_seqs, state) -> None:
        for attempt in range(DISK_FULL_RETRIES + 1):
            try:
                self._write(tables, last_seqs, state)
                return
            except Exception as exc:
                if not _is_disk_full(exc):
                    raise
                log.warning(
                    "cache %s: disk full on write (attempt %d): evicting and retrying", self.path, attempt + 1
                )
                self._recover_connection()
                if not self._evict_for_full_disk():
                    raise CacheFullError(
                        errno.ENOSPC,
                        f"cache {self.path}: the disk is full and nothing is left to evict; "
                        "free space on the device or lower max_bytes (the rows stay buffered)",
                    ) from exc
        raise CacheFullError(
            errno.ENOSPC, f"cache {self.path}: the disk stayed full after {DISK_FULL_RETRIES} evictions"
        )

    def _recover_connection(self) -> None:
        self._store.rollback()
        try:
            self._store.con.execute("SELECT 1 FROM c.clock").fetchall()
        except duckdb.Error:  # DuckDB invalidates a database after a failed write
            self._store.reconnect()

    # -- eviction -------------------------------------------------------------------------
    def _apply(self, evicted: list[cache_evict.Eviction]) -> int:
        freed = 0
        for e in evicted:
            self._rows[e.stream] -= e.count
            self._bytes[e.stream] -= e.nbytes
            freed += e.nbytes
        return freed

    def size_bytes(self) -> int:
        """Accounted bytes of the rows in the file (the figure the size bound applies to)."""
        return sum(self._bytes.values())

    def evict_expired(self) -> int:
        """Evict rows past their stream's TTL now; returns how many rows went."""
        with self._lock:
            self._check_open()
            got = cache_evict.evict_expired(self._store, self._ttls, self._wall_ms())
            self._apply(got)
            return sum(e.count for e in got)

    def _enforce_bound(self) -> None:
        if self.size_bytes() <= self.max_bytes:
            return
        self._apply(cache_evict.evict_expired(self._store, self._ttls, self._wall_ms()))
        if self.size_bytes() <= self.max_bytes:
            return
        target = int(self.max_bytes * cache_evict.LOW_WATER)
        self._apply(cache_evict.evict_to(self._store, dict(self._bytes), target, self._wall_ms()))

    def _evict_for_full_disk(self) -> bool:
        now = self._wall_ms()
        freed = self._apply(cache_evict.evict_expired(self._store, self._ttls, now))
        if freed:
            return True
        target = int(self.size_bytes() * DISK_FULL_SHRINK)
        return self._apply(cache_evict.evict_to(self._store, dict(self._bytes), target, now)) > 0

    # -- delivery -------------------------------------------------------------------------
    def pending(self, stream: str, *, after_seq: int | None = None, max_rows: int | None = None) -> pa.Table:
        """Unacknowledged rows (past ``after_seq`` too, if given) in seq order, full stream schema."""
        spec = get_stream(stream)
        if max_rows is not None and max_rows < 0:
            raise ValueError(f"pending: max_rows must be >= 0, got {max_rows}")
        with self._lock:
            self._check_open()
            self.flush()
            after = max(self._acked[stream], after_seq or 0)
            return self._store.pending(spec, after, max_rows, last_seq=self._flushed_seq[stream])

    def ack(self, stream: str, upto_seq: int) -> int:
        """Rows up to ``upto_seq`` were delivered: move the watermark (forward only), delete them.

        Returns the new watermark. Acknowledging at or below the watermark changes nothing.
        """
        get_stream(stream)
        with self._lock:
            self._check_open()
            self.flush()
            if upto_seq <= self._acked[stream]:
                return self._acked[stream]
            if upto_seq > self._flushed_seq[stream]:
                raise ValueError(
                    f"ack({stream!r}, {upto_seq}): only seqs up to {self._flushed_seq[stream]} were issued"
                )
            rows, nbytes = self._store.ack(stream, upto_seq)
            self._rows[stream] -= rows
            self._bytes[stream] -= nbytes
            self._acked[stream] = upto_seq
            return upto_seq

    def watermark(self, stream: str) -> int:
        """The highest acknowledged seq of ``stream`` (0 when nothing was acknowledged)."""
        get_stream(stream)
        with self._lock:
            return self._acked[stream]

    # -- eviction reporting ---------------------------------------------------------------
    def eviction_report(self, stream: str) -> list[dict[str, Any]]:
        """Evictions of ``stream`` not yet confirmed as reported, oldest first.

        Each: ``id, first_seq, last_seq, count, reason ('ttl'|'size'), evicted_ms``. Put them in
        the batch manifest, then after the upload succeeded call
        ``mark_evictions_reported(stream, max id)``.
        """
        get_stream(stream)
        with self._lock:
            self._check_open()
            return self._store.eviction_report(stream)

    def mark_evictions_reported(self, stream: str, upto_id: int) -> int:
        """Confirm the evictions of ``stream`` with id <= ``upto_id`` as reported; returns how many."""
        get_stream(stream)
        with self._lock:
            self._check_open()
            return self._store.mark_evictions_reported(stream, upto_id)

    def evictions(self) -> dict[str, dict[str, int]]:
        """Evicted row totals per stream and reason (reported or not): ``{stream: {ttl, size, total}}``."""
        with self._lock:
            self._check_open()
            totals = self._store.eviction_totals()
        out = {st: {"ttl": 0, "size": 0, "total": 0} for st in STREAMS}
        for (stream, reason), n in totals.items():
            out[stream][reason] = n
            out[stream]["total"] += n
        return out

    # -- status ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Figures for ``edge-sync status``."""
        with self._lock:
            self._check_open()
            evicted = self.evictions()
            streams = {
                s: {
                    "queue_depth": self._rows[s] + len(self._buffers[s]),
                    "buffered": len(self._buffers[s]),
                    "watermark": self._acked[s],
                    "last_seq": self._last_seq[s],
                    "bytes": self._bytes[s],
                    "evicted": evicted[s],
                }
                for s in STREAMS
            }
            return {
                "streams": streams,
                "size_bytes": self.size_bytes(),
                "max_bytes": self.max_bytes,
                "file_bytes": self._store.file_bytes(),
                "last_flush_ms": self._last_flush_ms,
                "last_hlc": self._clock.last,
            }
