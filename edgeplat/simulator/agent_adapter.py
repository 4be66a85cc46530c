"""The one place the simulator touches the device agent API (swap the agent here, nowhere else).

:class:`SimAgent` runs the real ``edge_sync.agent.DeviceAgent`` of one simulated device,
built with ``DeviceAgent.for_device`` (in-process: injected wall clock, object store, key
service, identity and platform key; no threads, no sleeping). It adds what a simulation
needs around it:

* a settable device wall clock (simulated time plus the device's skew);
* a :class:`DeviceLink` around the object store: raises ``StoreUnavailable`` while the
  device is offline, and can kill the device just before or just after a ``put``;
* crash injection at any step of the upload protocol (the uploader's step hook).

A crash is a :class:`SimulatedCrash`, a ``BaseException``, so no ``except Exception`` in the
agent swallows it: it unwinds the sync like a killed process. The simulator then closes
the cache without further work and reopens the agent (a restart). Closing is what a dead
process leaves behind, because the uploader's read flushes the durability window first
and nothing is recorded during a sync (rows are written in the same transaction as their
seqs, see ``edge_sync.cache``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_sync.agent import DeviceAgent
from edge_sync.cache import Durability
from edge_sync.downlink import active_release, applied_revision
from edge_sync.identity import DeviceIdentity
from edge_sync.keys import KeyService
from edge_sync.objectstore import ListPage, ObjectInfo, ObjectStore, StoreUnavailable
from edge_sync.streams import STREAMS
from edge_sync.uploader import SyncReport

# Flushes happen at syncs, alerts and state edits, never on a real-time timer, so the
# cache's eviction points (and so the ground truth) do not depend on how fast the host is.
SIM_DURABILITY = Durability(max_rows=20_000, max_ms=3_600_000)


class SimulatedCrash(BaseException):  # noqa: N818 - a process death, not an error to handle
    """The simulated agent process died here."""


class DeviceLink(ObjectStore):
    """One device's view of the object store: offline, online, or about to die around a put."""

    def __init__(self, store: ObjectStore) -> None:
        self.inner = store
        self.url = store.url
        self.online = True
        self.crash_at: str | None = None  # "before_put" or "after_put": die at the next batch put

    def _check(self) -> None:
        if not self.online:
            raise StoreUnavailable(f"simulated outage: {self.url} is unreachable from this device")

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._check()
        if self.crash_at == "before_put":
            self.crash_at = None
            raise SimulatedCrash("before put")
        fresh = self.inner.put_if_absent(key, data)
        if self.crash_at == "after_put":
            self.crash_at = None
            raise SimulatedCrash("after put")
        return fresh

    def put(self, key: str, data: bytes) -> None:
        self._check()
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        self._check()
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        self._check()
        return self.inner.head(key)

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ListPage:
        self._check()
        return self.inner.list(prefix, after=after, limit=limit)

    def delete(self, key: str) -> None:
        self._check()
        self.inner.delete(key)

    def close(self) -> None:
        """The shared store outlives every device: closing a device's link closes nothing."""


class SimAgent:
    """A running simulated device agent (open cache); ``close()`` it, or ``crashed()`` after a crash."""

    def __init__(
        self,
        *,
        tenant_id: str,
        device_id: str,
        cache_path: Path,
        cache_key: bytes,
        identity: DeviceIdentity,
        store: ObjectStore,
        key_service: KeyService,
        platform_key: bytes,
        max_cache_bytes: int | None = None,
    ) -> None:
        self.now_ms = 0
        self.link = DeviceLink(store)
        self._crash_step: str | None = None
        self.agent = DeviceAgent.for_device(
            tenant_id,
            device_id,
            cache_path=cache_path,
            cache_key=cache_key,
            wall_ms=lambda: self.now_ms,
            max_cache_bytes=max_cache_bytes,
            durability=SIM_DURABILITY,
            store=self.link,
            key_service=key_service,
            identity=identity,
            platform_keys=platform_key,
            sleep=lambda _s: None,  # retries back off in simulated, not real, time
            hook=self._hook,
        )

    def _hook(self, step: str, stream: str) -> None:
        if self._crash_step == step:
            self._crash_step = None
            raise SimulatedCrash(f"after step {step} of stream {stream}")

    # -- device code -----------------------------------------------------------------------
    def record(self, stream: str, row: dict[str, Any]) -> None:
        self.agent.record(stream, row)

    def put(self, namespace: str, key: str, fields: dict[str, Any]) -> int:
        return self.agent.put(namespace, key, fields)

    def sync(self, *, online: bool, crash_at: str | None = None) -> SyncReport:
        """One ``sync_once``; ``crash_at`` names where to die (an upload step, before_put, after_put)."""
        self.link.online = online
        self.link.crash_at = crash_at if crash_at in ("before_put", "after_put") else None
        self._crash_step = crash_at if crash_at not in ("before_put", "after_put") else None
        try:
            return self.agent.sync_once()
        finally:
            self._crash_step = None
            self.link.crash_at = None

    # -- what the device reports ---------------------------------------------------------------
    def release(self) -> tuple[str | None, str | None, int]:
        """(version, slot, applied desired revision) as the agent recorded them."""
        version, slot = active_release(self.agent.cache)
        return version, slot, applied_revision(self.agent.cache)

    def install_initial(self, version: str, slot: str = "a") -> None:
        """The factory image: ``version`` installed and running in ``slot`` before the first sync."""
        installer = self.agent.downlink.installer
        installer.install(version, slot)
        installer.switch(slot)

    def stream_stats(self) -> dict[str, dict[str, int]]:
        """Per stream: last issued seq, rows evicted, rows still pending (buffered included)."""
        stats = self.agent.cache.stats()["streams"]
        return {
            s: {
                "last_seq": int(stats[s]["last_seq"]),
                "evicted": int(stats[s]["evicted"]["total"]),
                "pending": int(stats[s]["queue_depth"]),
            }
            for s in STREAMS
        }

    def close(self) -> None:
        self.agent.close()

    def crashed(self) -> None:
        """After a :class:`SimulatedCrash`: release the file as a dead process would (nothing is buffered)."""
        self.agent.cache.close()
