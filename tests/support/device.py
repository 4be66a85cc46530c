"""A device under test: its ids, cache key and fixed wall time, its cache, store, keyring and
identity (``Env``, the ``env`` fixture of tests/edge_sync), a store that records puts and can
fail, the central view of what it uploaded, and an agent of any tenant and device."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from edge_sync.agent import DeviceAgent
from edge_sync.batch import read_batch
from edge_sync.cache import DeviceCache
from edge_sync.identity import DeviceIdentity, PlatformSigner
from edge_sync.keys import KeyService, LocalKeyring
from edge_sync.objectstore import LocalObjectStore, ObjectStore, StoreUnavailable
from edge_sync.uploader import Uploader

TENANT, DEVICE = "t1", "dev-1"
KEY = bytes(range(32))
NOW = 1_800_000_000_000  # fixed device wall time, ms (on an hour boundary + 0)


@dataclass
class Env:
    root: Path
    cache: DeviceCache
    store: ObjectStore
    keys: LocalKeyring
    identity: DeviceIdentity

    def uploader(self, **kw) -> Uploader:
        kw.setdefault("sleep", lambda s: None)
        kw.setdefault("wall_ms", lambda: NOW)
        return Uploader(self.cache, self.store, key_service=self.keys, identity=self.identity, **kw)


def make_env(root: Path, identity: DeviceIdentity | None = None, **cache_kw) -> Env:
    cache_kw.setdefault("wall_ms", lambda: NOW)
    cache = DeviceCache.open(root / "cache.db", tenant_id=TENANT, device_id=DEVICE, key=KEY, **cache_kw)
    return Env(
        root,
        cache,
        LocalObjectStore(root / "store"),
        LocalKeyring(root / "keys"),
        identity or DeviceIdentity.generate(TENANT, DEVICE),
    )


def central_view(store: ObjectStore, keys, public_key: bytes):
    """What the central ingest would hold: rows deduplicated by (stream, seq), evictions by range."""
    rows: dict[tuple[str, int], dict] = {}
    evictions: set[tuple[str, int, int, int]] = set()
    after = None
    while True:
        page = store.list(f"tenant={TENANT}/device={DEVICE}/stream=", after=after)
        for obj in page.objects:
            batch = read_batch(
                store.get(obj.key), key_service=keys, public_keys=[public_key], expected_key=obj.key
            )
            m = batch.manifest
            for r in batch.table.to_pylist():
                rows.setdefault((m.stream, r["seq"]), r)
            evictions |= {(m.stream, e.first_seq, e.last_seq, e.count) for e in m.evictions}
        if page.next_after is None:
            return rows, evictions
        after = page.next_after


class RecordingStore(ObjectStore):
    """Wraps a store: logs puts, can fail the next ``fail`` calls with an exception."""

    def __init__(self, inner: ObjectStore, fail: int = 0, exc: Exception | None = None) -> None:
        self.inner, self.fail, self.exc = inner, fail, exc or StoreUnavailable("offline (test)")
        self.puts: list[str] = []

    def _maybe_fail(self) -> None:
        if self.fail:
            self.fail -= 1
            raise self.exc

    def put_if_absent(self, key, data):
        self._maybe_fail()
        self.puts.append(key)
        return self.inner.put_if_absent(key, data)

    def put(self, key, data):
        self._maybe_fail()
        self.inner.put(key, data)

    def get(self, key):
        self._maybe_fail()
        return self.inner.get(key)

    def head(self, key):
        return self.inner.head(key)

    def list(self, prefix="", *, after=None, limit=1000):
        return self.inner.list(prefix, after=after, limit=limit)

    def delete(self, key):
        self.inner.delete(key)


def agent_on(
    root: Path, tenant: str, device: str, key_service: KeyService, store: ObjectStore | None = None
) -> tuple[DeviceAgent, DeviceIdentity]:
    """An agent of a fresh device identity with a random cache key under ``root``, its data keys from
    ``key_service``, uploading to ``store`` (default: a local store in ``root/store``); no retry sleeps."""
    identity = DeviceIdentity.generate(tenant, device)
    agent = DeviceAgent.for_device(
        tenant,
        device,
        cache_path=root / "cache.duckdb",
        cache_key=secrets.token_bytes(32),
        store=store if store is not None else LocalObjectStore(root / "store"),
        key_service=key_service,
        identity=identity,
        platform_keys=PlatformSigner.generate().public_key_bytes(),
        sleep=lambda s: None,
    )
    return agent, identity
