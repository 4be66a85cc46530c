"""Fetch, verify and decode batch objects for the ingest, in groups: accepted batches and rejects.

Each object is opened alone (:func:`edge_sync.batch.open_batch`: device key, signature,
manifest, object key, schema, AEAD, hash) and checked against the HLC drift bound; then a
group's payloads are decoded and range-checked together, one stream at a time
(:func:`edge_sync.batch.decode_batches`: one pass over their concatenated columns, where
one per object cost the ingest about half of its decoding). A bad batch becomes a
:class:`Rejected` with ``BatchError.reason``, whatever failed while parsing or verifying it;
only failures of the platform's services fail a run: the key service or registry
(``ServiceError``) after retries, as :class:`KeyServiceUnavailable`, and the store (its
errors pass through): the object stays unsettled for a later run.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import numpy as np
import pyarrow as pa

from edge_sync.batch import OpenedBatch, decode_batches, open_batch
from edge_sync.batch_errors import BatchError, ServiceError
from edge_sync.batch_keys import parse_object_key
from edge_sync.batch_manifest import Manifest
from edge_sync.hlc import physical_ms
from edge_sync.identity import DeviceRegistry
from edge_sync.keys import KeyService
from edge_sync.objectstore import ObjectNotFound
from edgeplat.sync.env import SyncEnv
from edgeplat.sync.ledger import DEFERRED_REASON

# Fewer objects than this decode in the calling thread (see ``decoded``).
POOL_MIN_OBJECTS = 256
# Objects per task sent to a worker process: enough to amortize the hand-off and to decode
# in one pass.
_GROUP_OBJECTS = 64


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
    """A verified batch object whose ``rows`` rows are in its group's :class:`StreamRows`."""

    object_key: str
    size: int
    manifest: Manifest
    rows: int


@dataclass(frozen=True)
class StreamRows:
    """One stream's rows of a group's accepted objects: object after object, in ``keys`` order.

    ``counts[i]`` rows belong to ``keys[i]``; string columns are dictionary-encoded.
    """

    table: pa.Table
    keys: list[str]
    counts: np.ndarray


@dataclass
class DecodedGroup:
    """Objects fetched and decoded together: every one accepted or rejected, in key order."""

    items: list[Accepted | Rejected] = field(default_factory=list)
    streams: dict[str, StreamRows] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(s.table.num_rows for s in self.streams.values())


def _rejected(key: str, size: int, exc: BatchError) -> Rejected:
    return Rejected(key, size, exc.reason, str(exc) + (f" (key service: {exc.detail})" if exc.detail else ""))


@dataclass(frozen=True)
class _Opened:
    object_key: str
    size: int
    batch: OpenedBatch


def _open_object(
    key: str,
    data: bytes,
    key_service: KeyService,
    registry: DeviceRegistry | RunRegistry,
    clock: _DriftBound,
    retries: int = 3,
) -> _Opened | Rejected:
    """Verify one object up to its decrypted payload; a bad batch is a :class:`Rejected`, infrastructure errors raise."""
    for attempt in range(retries + 1):
        try:
            opened = open_batch(
                data, key_service=key_service, public_keys=registry.public_keys, expected_key=key
            )
            return clock.check(key, len(data), opened.manifest) or _Opened(key, len(data), opened)
        except BatchError as exc:
            return _rejected(key, len(data), exc)
        except ServiceError as exc:  # the key service or registry failed: never quarantine for that
            if attempt == retries:
                raise KeyServiceUnavailable(
                    f"decoding {key} failed {retries + 1} times for an infrastructure reason ({exc!r}); "
                    "check the key service / device registry and re-run (the object stays unsettled)"
                ) from exc
            time.sleep(min(2.0, 0.1 * 2**attempt))
    raise AssertionError("unreachable")


def _decode_group(opened: Sequence[_Opened | Rejected]) -> DecodedGroup:
    """Decode the payloads of a group of opened objects, one pass per stream."""
    by_stream: dict[str, list[_Opened]] = {}
    for o in opened:
        if isinstance(o, _Opened):
            by_stream.setdefault(o.batch.manifest.stream, []).append(o)
    group = DecodedGroup()
    outcome: dict[str, Accepted | Rejected] = {o.object_key: o for o in opened if isinstance(o, Rejected)}
    for stream, items in by_stream.items():
        keys = [o.object_key for o in items]
        decoded = decode_batches([o.batch for o in items], keys)
        for i, o in enumerate(items):
            if i in decoded.errors:
                outcome[o.object_key] = _rejected(o.object_key, o.size, decoded.errors[i])
            else:
                outcome[o.object_key] = Accepted(
                    o.object_key, o.size, o.batch.manifest, int(decoded.counts[i])
                )
        good = [i for i in range(len(items)) if i not in decoded.errors]
        group.streams[stream] = StreamRows(decoded.table, [keys[i] for i in good], decoded.counts[good])
    group.items = [outcome[o.object_key] for o in opened]
    return group


class RunRegistry:
    """The registry, with each device's public keys looked up once per ingest run.

    A run holds many batches of each device, and a registry that is not a local file costs a round
    trip per lookup. A key revoked while a run is under way still verifies that run's batches
    (the run lasts seconds); the next run sees the revocation. Failed lookups are not
    remembered.
    """

    def __init__(self, registry: DeviceRegistry) -> None:
        self._registry = registry
        self._keys: dict[tuple[str, str], list] = {}

    def public_keys(self, tenant_id: str, device_id: str) -> list:
        k = (tenant_id, device_id)
        if k not in self._keys:
            self._keys[k] = self._registry.public_keys(tenant_id, device_id)
        return self._keys[k]


def _fetch(env: SyncEnv, keys: Sequence[str], on_missing: Callable[[], None]) -> Iterator[tuple[str, bytes]]:
    for key in keys:
        try:
            yield key, env.store.get(key)
        except ObjectNotFound:
            on_missing()


def decoded(
    env: SyncEnv, keys: Sequence[str], on_missing: Callable[[], None], now_ms: int
) -> Iterator[DecodedGroup]:
    """Fetch and decode ``keys`` in order, in groups; ``on_missing()`` for each object gone from the store.

    A group closes once its batches hold ``rows_per_group`` rows. With
    ``decode_workers > 1``, a ``decoder`` factory and at least ``POOL_MIN_OBJECTS`` objects,
    decoding runs in that many worker processes, in groups of ``_GROUP_OBJECTS``. Decoding
    is mostly Python (manifest, checks, column assembly) around short native calls, so
    threads did not scale past one core; processes do, and they leave the ingest's own
    thread free to commit while the next objects decode. A small run decodes in this thread:
    spawning workers costs more than it saves there.
    """
    retries = env.settings.key_service_retries
    workers = env.settings.decode_workers
    clock = _DriftBound(now_ms, env.settings.max_drift_ms)
    if workers > 1 and env.decoder is not None and len(keys) >= POOL_MIN_OBJECTS:
        yield from _decoded_in_processes(env, keys, on_missing, workers, clock)
        return
    registry = RunRegistry(env.registry)
    opened: list[_Opened | Rejected] = []
    rows = 0
    for key, data in _fetch(env, keys, on_missing):
        item = _open_object(key, data, env.key_service, registry, clock, retries)
        opened.append(item)
        rows += item.batch.manifest.row_count if isinstance(item, _Opened) else 0
        if rows >= env.settings.rows_per_group:
            yield _decode_group(opened)
            opened, rows = [], 0
    if opened:
        yield _decode_group(opened)


def _decoded_in_processes(
    env: SyncEnv, keys: Sequence[str], on_missing: Callable[[], None], workers: int, clock: _DriftBound
) -> Iterator[DecodedGroup]:
    task = partial(_decode_in_worker, env.decoder, env.settings.key_service_retries, clock)
    # spawn, not fork: the parent holds DuckDB's threads and open connections
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: collections.deque[cf.Future] = collections.deque()
        group: list[tuple[str, bytes]] = []
        for item in _fetch(env, keys, on_missing):
            group.append(item)
            if len(group) == _GROUP_OBJECTS:
                pending.append(pool.submit(task, group))
                group = []
                if len(pending) >= 2 * workers:  # bounded read-ahead: memory stays flat
                    yield pending.popleft().result()
        if group:
            pending.append(pool.submit(task, group))
        while pending:
            yield pending.popleft().result()


# One (key service, registry) per worker process, made on its first group: those hold locks
# and clients and cannot be pickled; the run's workers live as long as the run.
_WORKER_PAIR: tuple[KeyService, RunRegistry] | None = None


def _decode_in_worker(
    decoder: Callable[[], tuple[KeyService, DeviceRegistry]],
    retries: int,
    clock: _DriftBound,
    group: list[tuple[str, bytes]],
) -> DecodedGroup:
    global _WORKER_PAIR
    if _WORKER_PAIR is None:
        key_service, registry = decoder()
        _WORKER_PAIR = (key_service, RunRegistry(registry))
    return _decode_group([_open_object(key, data, *_WORKER_PAIR, clock, retries) for key, data in group])


@dataclass(frozen=True)
class _DriftBound:
    """The HLC drift bound: a batch whose ``hlc_max`` is too far ahead of central time is deferred."""

    now_ms: int
    max_drift_ms: int

    def check(self, key: str, size: int, manifest: Manifest) -> Rejected | None:
        if manifest.hlc_max is None:
            return None
        ahead = physical_ms(manifest.hlc_max) - self.now_ms
        if ahead <= self.max_drift_ms:
            return None
        return Rejected(
            key,
            size,
            DEFERRED_REASON,
            f"hlc_max is {ahead / 1000:.0f} s ahead of central time (bound {self.max_drift_ms / 1000:.0f} s): "
            "deferred; reconciliation admits it once central time is within the bound",
            deferred=True,
        )
