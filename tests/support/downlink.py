"""The device's downlink under test: a platform signer, desired-state documents it publishes
for the test device, the alerts the device raised, and a downlink whose installer records
what it was asked to do (an install is a download)."""

from __future__ import annotations

from edge_sync import desired
from edge_sync.desired import DesiredState
from edge_sync.downlink import CacheInstaller, Downlink
from edge_sync.hlc import pack
from edge_sync.identity import PlatformSigner
from edge_sync.rules import default_rules
from tests.support.device import DEVICE, NOW, TENANT

PLATFORM = PlatformSigner.generate()
DESIRED_KEY = desired.desired_key(TENANT, DEVICE)


def publish(
    store, revision: int, *, device: str = DEVICE, signer: PlatformSigner = PLATFORM, **fields
) -> bytes:
    fields.setdefault("issued_hlc", pack(NOW, 0))
    doc = DesiredState(tenant_id=TENANT, device_id=device, revision=revision, **fields)
    data = desired.encode(doc, signer)
    store.put(DESIRED_KEY, data)
    return data


def alerts(cache) -> list[dict]:
    return cache.pending("alerts").select(["severity", "code", "message"]).to_pylist()


class RecordingInstaller(CacheInstaller):
    """The cache installer, counting what it is asked to do (an install is a download)."""

    def __init__(self, cache) -> None:
        super().__init__(cache)
        self.calls: list[tuple[str, ...]] = []

    def install(self, version: str, slot: str) -> None:
        self.calls.append(("install", version, slot))
        super().install(version, slot)

    def switch(self, slot: str) -> None:
        self.calls.append(("switch", slot))
        super().switch(slot)


def recording_downlink(cache, store, platform_keys: bytes) -> tuple[Downlink, RecordingInstaller]:
    """The real downlink on ``cache``, installing through an installer that records its calls."""
    installer = RecordingInstaller(cache)
    downlink = Downlink(cache, store, platform_keys=platform_keys, rules=default_rules(), installer=installer)
    return downlink, installer
