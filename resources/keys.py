"""Key service, device registry and platform signer as Dagster resources.

Local default: the file keyring and registry under ``EDGEPLAT_HOME`` (``keys/`` and
``devices/``), the same directories devices and the CLI use. Vault transit is the
production key service; its resource lands with the Vault wiring (``kind="vault"`` says so
clearly until then).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg

from edge_sync.identity import DeviceRegistry, LocalDeviceRegistry, PlatformSigner
from edge_sync.keys import KeyService, LocalKeyring
from edgeplat.device_registry import LakehouseDeviceRegistry
from edgeplat.sync.env import local_decoder
from resources.lakehouse import LakehouseResource


class KeyServiceResource(dg.ConfigurableResource):
    """Where batch data keys are unwrapped: a local keyring directory (``kind="local"``)."""

    kind: str = "local"
    keyring_dir: str = ""

    def get(self) -> KeyService:
        if self.kind != "local":
            raise ValueError(
                f"key service kind {self.kind!r} is not wired yet; use kind='local' with keyring_dir, "
                "or construct edge_sync.vault_keys.VaultTransitKeyService directly"
            )
        if not self.keyring_dir:
            raise ValueError("KeyServiceResource needs keyring_dir (e.g. $EDGEPLAT_HOME/keys)")
        return LocalKeyring(self.keyring_dir)


class DeviceRegistryResource(dg.ConfigurableResource):
    """Which public keys may sign for each device: a local registry directory, or (``lakehouse``
    given, production) the lakehouse's ``device_keys`` table every replica shares."""

    registry_dir: str = ""
    lakehouse: LakehouseResource | None = None

    def get(self) -> DeviceRegistry:
        if self.lakehouse is not None:
            return LakehouseDeviceRegistry(self.lakehouse.get())
        if not self.registry_dir:
            raise ValueError("DeviceRegistryResource needs registry_dir (local) or lakehouse (production)")
        return LocalDeviceRegistry(self.registry_dir)


def decoder_for(
    keys: KeyServiceResource, registry: DeviceRegistryResource
) -> Callable[[], tuple[KeyService, DeviceRegistry]] | None:
    """A picklable factory for decode worker processes (local kinds only)."""
    if keys.kind == "local" and keys.keyring_dir and registry.lakehouse is None:
        return local_decoder(keys.keyring_dir, registry.registry_dir)
    return None


class PlatformSignerResource(dg.ConfigurableResource):
    """The platform's Ed25519 key that signs desired-state documents (a PEM file).

    ``create_if_missing`` is for the local embedded setup only: production keys are provisioned.
    """

    path: str
    create_if_missing: bool = False

    def get(self) -> PlatformSigner:
        p = Path(self.path)
        if not p.exists():
            if not self.create_if_missing:
                raise FileNotFoundError(
                    f"platform signing key {p} does not exist; provision it (PlatformSigner.generate().save(path))"
                )
            PlatformSigner.generate().save(p)
        return PlatformSigner.load(p)
