"""Fetch, verify and decode batch objects for the ingest: accepted batches and rejects.

Verification is :func:`edge_sync.batch.read_batch` (device key, AEAD, hash, schema, ranges,
object key). A bad batch becomes a :class:`Rejected` with ``BatchError.reason``; errors of
the key service's infrastructure (anything but a ``KeyServiceError``) are retried and then
raise :class:`KeyServiceUnavailable`: the object stays unsettled for a later run.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from edge_sync.batch import BatchError, DecodedBatch, parse_object_key, read_batch
from edge_sync.hlc import physical_ms
from edge_sync.identity import DeviceRegistry
from edge_sync.keys import KeyService
from edge_sync.objectstore import ObjectNotFound
from edgeplat.sync.env import SyncEnv
from edgeplat.sync.ledger import DEFERRED_REASON

# Fewer objects than this decode in the calling thread (see ``decoded``).
POOL_MIN_OBJECTS = 256
# Objects per task sent to a worker process: enough to amortize the hand-off.
_GROUP_OBJECTS = 16


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


def decode_object(
    key: str, data: bytes, key_service: KeyService, registry: DeviceRegistry | RunRegistry, retries: int = 3
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
    env: SyncEnv, keys: Sequence[str], on_missing: Callable[[], None]
) -> Iterator[Accepted | Rejected]:
    """Fetch and decode ``keys`` in order; ``on_missing()`` for each object gone from the store.

    With ``decode_workers > 1``, a ``decoder`` factory and at least ``POOL_MIN_OBJECTS``
    objects, decoding runs in that many worker processes. Decoding is mostly Python (manifest,
    checks, column assembly) around short native calls, so threads did not scale past one
    core; processes do, and they leave the ingest's own thread free to commit while the next
    objects decode. A small run decodes in this thread: spawning workers costs more than it
    saves there.
    """
    retries = env.settings.key_service_retries
    workers = env.settings.decode_workers
    if workers > 1 and env.decoder is not None and len(keys) >= POOL_MIN_OBJECTS:
        yield from _decoded_in_processes(env, keys, on_missing, workers)
        return
    registry = RunRegistry(env.registry)
    for key, data in _fetch(env, keys, on_missing):
        yield decode_object(key, data, env.key_service, registry, retries)


def _decoded_in_processes(
    env: SyncEnv, keys: Sequence[str], on_missing: Callable[[], None], workers: int
) -> Iterator[Accepted | Rejected]:
    task = partial(_decode_group, env.decoder, env.settings.key_service_retries)
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
                    yield from pending.popleft().result()
        if group:
            pending.append(pool.submit(task, group))
        while pending:
            yield from pending.popleft().result()


# One (key service, registry) per worker process, made on its first group: those hold locks
# and clients and cannot be pickled; the run's workers live as long as the run.
_WORKER_PAIR: tuple[KeyService, RunRegistry] | None = None


def _decode_group(
    decoder: Callable[[], tuple[KeyService, DeviceRegistry]], retries: int, group: list[tuple[str, bytes]]
) -> list[Accepted | Rejected]:
    global _WORKER_PAIR
    if _WORKER_PAIR is None:
        key_service, registry = decoder()
        _WORKER_PAIR = (key_service, RunRegistry(registry))
    return [decode_object(key, data, *_WORKER_PAIR, retries=retries) for key, data in group]


def drift_check(item: Accepted | Rejected, now_ms: int, max_drift_ms: int) -> Accepted | Rejected:
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
