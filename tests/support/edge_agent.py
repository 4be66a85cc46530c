"""The edge_agent backend under test: two releases, device refs of tenant t1, and a minimal
device that pulls its signed desired-state document like the agent does."""

from __future__ import annotations

from edge_sync.desired import Release, decode, desired_key
from edgeplat.backends.base import DeviceRef, ReleaseSpec

V1 = ReleaseSpec("app", "1.0.0")
V2 = ReleaseSpec("app", "2.0.0")


def devs(*names: str, tenant: str = "t1") -> list[DeviceRef]:
    return [DeviceRef(tenant, n) for n in names]


class Device:
    """A minimal device: pulls its document like the agent does (verify, refuse stale)."""

    def __init__(self, store, signer, tenant: str, device: str) -> None:
        self.store, self.signer, self.tenant, self.device = store, signer, tenant, device
        self.applied = 0
        self.release: Release | None = None

    def pull(self) -> None:
        doc = decode(
            self.store.get(desired_key(self.tenant, self.device)),
            platform_keys=[self.signer.public_key_bytes()],
            tenant_id=self.tenant,
            device_id=self.device,
            applied_revision=self.applied,
        )
        self.applied, self.release = doc.revision, doc.release

    def report(self) -> tuple[str | None, str | None, int]:
        return (
            self.release.version if self.release else None,
            self.release.slot if self.release else None,
            self.applied,
        )
