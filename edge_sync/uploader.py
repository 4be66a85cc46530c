"""The device uploader: move cached rows to the object store, most important streams first.

One sync walks the streams in ``BY_PRIORITY`` order (alerts, state, health, telemetry,
logs) and, within a stream, oldest seq first. For each batch the protocol is::

    read    rows = cache.pending(stream, max_rows)  + cache.eviction_report(stream)
    encode  write_batch(rows, evictions)  -> deterministic key (the seq range), signed bytes
    put     store.put_if_absent(key, data)  (True or False: either way the object is there)
    ack     cache.ack(stream, last row seq)          (only after the put)
    confirm cache.mark_evictions_reported(stream, max eviction id)

A crash between any two steps is harmless: nothing is acknowledged before the object
exists, the same rows give the same key when nothing was evicted meanwhile, and a
re-cut batch (different key, overlapping seqs) is deduplicated centrally by
(tenant, device, stream, seq); re-sent eviction ranges are deduplicated by range. So
uploads are at-least-once on the wire and exactly-once in the lakehouse (invariant 1).

One case the central side must resolve: rows put but not yet acknowledged (a crash
between put and ack, or a record on another thread filling the cache during the put) can
be evicted before the ack, so their seqs arrive both as rows and inside an eviction range.
A delivered row wins: an eviction range accounts only for the seqs of it that never
arrived (tests/edge_sync/test_upload_crash.py checks exactly that).

Transient failures (store unreachable, key service down) are retried in the sync with
capped exponential backoff and full jitter; when they persist the sync stops and reports
``offline``; the rows stay cached. A batch that does not fit the per-sync bandwidth
allowance is deferred (alerts never are); a byte rate limit makes the sync wait.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from edge_sync.bandwidth import Backoff, BandwidthBudget, SyncAllowance, TokenBucket
from edge_sync.batch import EncodedBatch, write_batch
from edge_sync.cache import DeviceCache
from edge_sync.identity import DeviceIdentity
from edge_sync.keys import KeyService
from edge_sync.objectstore import ObjectStore, StoreUnavailable
from edge_sync.streams import BY_PRIORITY, get_stream

log = logging.getLogger(__name__)


_TRANSIENT_BASE: tuple[type[BaseException], ...] = (StoreUnavailable, ConnectionError, TimeoutError)


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "try again later", not "this batch is bad" (a sync retries, then reports offline).

    ``edge_sync.vault.VaultUnavailable`` counts once that module is loaded; it is looked up
    lazily so a device without Vault never imports hvac (and the requests stack behind it).
    """
    vault = sys.modules.get("edge_sync.vault")
    return (*_TRANSIENT_BASE, vault.VaultUnavailable) if vault is not None else _TRANSIENT_BASE


# Steps of the upload protocol, in order; a hook is called after each (crash tests kill the process there).
STEPS = ("read", "encoded", "put", "acked", "evictions_confirmed")
StepHook = Callable[[str, str], None]


@dataclass(frozen=True)
class UploadPolicy:
    """How batches are cut and how hard a sync retries.

    ``max_span_ms`` cuts a batch where the device time (``ts``) enters the next span
    (one device-hour by default), so a telemetry batch is about one device-hour.
    """

    max_rows: int = 5000
    max_span_ms: int | None = 3_600_000
    max_evictions_per_batch: int = 500
    attempts: int = 3  # per batch step, before the sync gives up as offline
    retry_base_s: float = 0.5
    retry_cap_s: float = 30.0
    never_deferred: tuple[str, ...] = ("alerts",)

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ValueError(f"UploadPolicy.max_rows must be >= 1, got {self.max_rows}")
        if self.max_span_ms is not None and self.max_span_ms < 1:
            raise ValueError(f"UploadPolicy.max_span_ms must be >= 1 ms or None, got {self.max_span_ms}")
        if self.attempts < 1:
            raise ValueError(f"UploadPolicy.attempts must be >= 1, got {self.attempts}")
        if not 1 <= self.max_evictions_per_batch <= 1000:
            raise ValueError("UploadPolicy.max_evictions_per_batch must be 1..1000 (the manifest is bounded)")


@dataclass
class StreamReport:
    """What one sync did for one stream."""

    rows_sent: int = 0
    batches: int = 0
    bytes: int = 0
    evicted_rows_reported: int = 0
    deferred_rows: int = 0  # rows left pending because the bandwidth allowance ran out
    already_present: int = 0  # batches the store already had (a resumed upload)
    errors: list[str] = field(default_factory=list)


@dataclass
class SyncReport:
    """The outcome of one sync: per stream figures, errors, and the downlink result (agent)."""

    streams: dict[str, StreamReport] = field(default_factory=lambda: {s: StreamReport() for s in BY_PRIORITY})
    errors: list[str] = field(default_factory=list)
    offline: bool = False
    budget_exhausted: bool = False
    waited_s: float = 0.0
    started_ms: int = 0
    finished_ms: int = 0
    downlink: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.offline and not self.errors and not any(r.errors for r in self.streams.values())

    @property
    def rows_sent(self) -> int:
        return sum(r.rows_sent for r in self.streams.values())

    @property
    def bytes_sent(self) -> int:
        return sum(r.bytes for r in self.streams.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ok=self.ok, rows_sent=self.rows_sent, bytes_sent=self.bytes_sent)
        return d


class _GiveUp(Exception):
    """A transient failure outlived its retries: stop this sync, keep everything cached."""


class Uploader:
    """Uploads one device cache's pending rows; one ``upload()`` call is one sync's upload."""

    def __init__(
        self,
        cache: DeviceCache,
        store: ObjectStore,
        *,
        key_service: KeyService,
        identity: DeviceIdentity,
        budget: BandwidthBudget | None = None,
        policy: UploadPolicy | None = None,
        wall_ms: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        backoff: Backoff | None = None,
        hook: StepHook | None = None,
    ) -> None:
        if (identity.tenant_id, identity.device_id) != (cache.tenant_id, cache.device_id):
            raise ValueError(
                f"identity is for {identity.tenant_id}/{identity.device_id} but the cache for "
                f"{cache.tenant_id}/{cache.device_id}: configure the device's own identity file"
            )
        self.cache, self.store = cache, store
        self.key_service, self.identity = key_service, identity
        self.budget = budget or BandwidthBudget()
        self.policy = policy or UploadPolicy()
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self._sleep = sleep
        self._backoff = backoff or Backoff(self.policy.retry_base_s, self.policy.retry_cap_s)
        self._hook = hook
        self._bucket = (
            TokenBucket(self.budget.bytes_per_second, self.budget.burst_bytes, clock=clock, sleep=sleep)
            if self.budget.bytes_per_second
            else None
        )

    @property
    def rate_limiter(self) -> TokenBucket | None:
        """The byte-rate bucket (``bytes_per_second``), shared with the installer's downloads."""
        return self._bucket

    # -- one sync ------------------------------------------------------------------------
    def upload(self, streams: Sequence[str] = BY_PRIORITY) -> SyncReport:
        """Send pending rows and evictions of ``streams`` (in the order given), within the budget."""
        for s in streams:
            get_stream(s)
        report = SyncReport(started_ms=self._wall_ms())
        allowance = SyncAllowance(self.budget.bytes_per_sync)
        waited0 = self._bucket.waited_s if self._bucket else 0.0
        deferred: list[str] = []
        try:
            for i, stream in enumerate(streams):
                if not self._guarded(stream, report, allowance):
                    report.budget_exhausted = True
                    deferred = [stream, *(s for s in streams[i + 1 :] if s not in self.policy.never_deferred)]
                    # later never-deferred streams (alerts, if listed after) still go
                    for late in streams[i + 1 :]:
                        if late in self.policy.never_deferred:
                            self._guarded(late, report, allowance)
                    break
        except _GiveUp as exc:
            report.offline = True
            report.errors.append(str(exc))
        if deferred:
            depth = self.cache.stats()["streams"]
            for s in deferred:
                report.streams[s].deferred_rows = depth[s]["queue_depth"]
        report.waited_s = (self._bucket.waited_s if self._bucket else 0.0) - waited0
        report.finished_ms = self._wall_ms()
        return report

    def _guarded(self, stream: str, report: SyncReport, allowance: SyncAllowance) -> bool:
        """``_upload_stream``, with a non-transient failure reported on the stream, not raised."""
        try:
            return self._upload_stream(stream, report, allowance)
        except _GiveUp:
            raise
        except Exception as exc:  # e.g. a missing bucket: the other streams still get their chance
            log.exception("upload of stream %s failed", stream)
            report.streams[stream].errors.append(f"{stream}: {type(exc).__name__}: {exc}")
            return True

    def _upload_stream(self, stream: str, report: SyncReport, allowance: SyncAllowance) -> bool:
        """Drain one stream; False when the allowance ran out (the rest is deferred)."""
        sr = report.streams.setdefault(stream, StreamReport())
        while True:
            # evictions first: one that happens in between then cannot overlap the rows read
            evictions = self.cache.eviction_report(stream)[: self.policy.max_evictions_per_batch]
            rows = self._cut(self.cache.pending(stream, max_rows=self.policy.max_rows))
            if rows.num_rows == 0 and not evictions:
                return True
            self._step("read", stream)
            batch = self._retrying(f"encode {stream}", lambda r=rows, e=evictions: self._encode(stream, r, e))
            self._step("encoded", stream)
            size = len(batch.data)
            if stream not in self.policy.never_deferred and not allowance.allows(size):
                return False
            if self._bucket is not None:
                self._bucket.take(size)
            fresh = self._retrying(
                f"put {batch.key}", lambda b=batch: self.store.put_if_absent(b.key, b.data)
            )
            self._step("put", stream)
            allowance.spend(size)
            if rows.num_rows:
                self.cache.ack(stream, int(rows.column("seq")[-1].as_py()))
            self._step("acked", stream)
            if evictions:
                self.cache.mark_evictions_reported(stream, max(e["id"] for e in evictions))
            self._step("evictions_confirmed", stream)
            sr.rows_sent += rows.num_rows
            sr.batches += 1
            sr.bytes += size
            sr.already_present += 0 if fresh else 1
            sr.evicted_rows_reported += sum(e["count"] for e in evictions)
            if allowance.exhausted and stream not in self.policy.never_deferred:
                return not self._has_pending(stream)

    def _has_pending(self, stream: str) -> bool:
        return self.cache.pending(stream, max_rows=1).num_rows > 0 or bool(self.cache.eviction_report(stream))

    # -- pieces --------------------------------------------------------------------------
    def _cut(self, rows: pa.Table) -> pa.Table:
        """Stop the batch where device time enters a later span (e.g. the next device-hour)."""
        span = self.policy.max_span_ms
        if span is None or rows.num_rows < 2:
            return rows
        ts = rows.column("ts").cast(pa.int64()).to_numpy()
        later = np.nonzero(ts // span > ts[0] // span)[0]
        return rows.slice(0, int(later[0])) if later.size else rows

    def _encode(self, stream: str, rows: pa.Table, evictions: list[dict[str, Any]]) -> EncodedBatch:
        return write_batch(
            rows,
            tenant_id=self.cache.tenant_id,
            device_id=self.cache.device_id,
            stream=stream,
            evictions=[{k: e[k] for k in ("first_seq", "last_seq", "count", "reason")} for e in evictions],
            key_service=self.key_service,
            identity=self.identity,
            created_ms=self._wall_ms(),
        )

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        for attempt in range(1, self.policy.attempts + 1):
            try:
                result = fn()
            except transient_errors() as exc:
                if attempt == self.policy.attempts:
                    raise _GiveUp(f"{what}: {type(exc).__name__}: {exc} (after {attempt} attempts)") from exc
                delay = self._backoff.next_delay()
                log.info("%s failed (%s); retry %d in %.2fs", what, type(exc).__name__, attempt, delay)
                self._sleep(delay)
            else:
                self._backoff.reset()
                return result
        raise AssertionError("unreachable")

    def _step(self, step: str, stream: str) -> None:
        if self._hook is not None:
            self._hook(step, stream)
