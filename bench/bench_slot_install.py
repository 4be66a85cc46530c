"""The edge agent's slot installer: install throughput and the instant switch back.

- ``slot_install_throughput``: ``SlotInstaller.install`` of one incompressible artifact from a
  local object store (signature check, ranged 1 MiB reads each fsynced for resumability, sha256,
  the slot built and renamed into place, every file fsynced), against a naive install timed in
  the same run: one ``get``, one write, one fsync, one sha256. Target >= 0.3x: resumability and
  crash safety may cost, but not most of the throughput.
- ``slot_switch_back``: switching back to the slot that still holds the old release (the
  rollback) against installing that release again. Target <= 0.1x: blue/green's rollback is a
  rename, not a download.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import time
from pathlib import Path

from bench.harness import Result, best_of
from edge_sync.cache import DeviceCache
from edge_sync.identity import PlatformSigner
from edge_sync.objectstore import LocalObjectStore
from edge_sync.release_manifest import Artifact, ReleaseManifest, encode, manifest_key
from edge_sync.slot_installer import SlotInstaller

KEY = bytes(range(32))
MiB = 1 << 20


def _publish(store: LocalObjectStore, signer: PlatformSigner, version: str, data: bytes) -> None:
    key = f"tenant=bench/releases/{version}/app.bin"
    store.put(key, data)
    manifest = ReleaseManifest(
        tenant_id="bench",
        version=version,
        artifacts=[
            Artifact(
                name="app.bin", url=f"store:{key}", size=len(data), sha256=hashlib.sha256(data).hexdigest()
            )
        ],
        probation_s=0,
    )
    store.put(manifest_key("bench", version), encode(manifest, signer))


def run(quick: bool) -> list[Result]:
    size = (8 if quick else 32) * MiB
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store, signer = LocalObjectStore(root / "store"), PlatformSigner.generate()
        versions = [f"v{i}" for i in range(8)]
        for v in versions:
            _publish(store, signer, v, secrets.token_bytes(size))
        cache = DeviceCache.open(root / "cache.db", tenant_id="bench", device_id="dev-1", key=KEY)
        try:
            inst = SlotInstaller(
                root / "releases",
                cache=cache,
                store=store,
                platform_keys=signer.public_key_bytes(),
                min_free_bytes=0,
            )
            inst.install("v0", "a")
            inst.switch("a")
            pending = iter(versions[1:4])

            def install() -> None:  # a fresh version each time into the inactive slot
                inst.install(next(pending), "b")

            install_s = best_of(install, repeat=3)

            def naive() -> None:
                data = store.get("tenant=bench/releases/v5/app.bin")
                with open(root / "naive.bin", "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                hashlib.sha256(data).hexdigest()

            naive_s = best_of(naive, repeat=3)

            inst.switch("b")
            t0 = time.perf_counter()
            inst.switch("a")  # the rollback: a still holds v0
            switch_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            inst.install("v6", "b")  # what a rollback without a kept slot would cost
            reinstall_s = time.perf_counter() - t0
        finally:
            cache.close()
    mb = size / MiB
    return [
        Result(
            "slot_install_throughput",
            mb / install_s,
            "MiB/s",
            "one get + write + fsync + sha256",
            mb / naive_s,
            0.3,
            note=f"{mb:.0f} MiB artifact, 1 MiB chunks fsynced",
        ),
        Result(
            "slot_switch_back",
            switch_s,
            "s",
            f"installing the {mb:.0f} MiB release again",
            reinstall_s,
            0.1,
            higher_is_better=False,
        ),
    ]
