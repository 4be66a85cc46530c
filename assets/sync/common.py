"""Builds the plain-Python ``SyncEnv`` from the Dagster resources (one place, shared by all sync assets)."""

import dagster as dg

from edgeplat.sync.env import SyncEnv, SyncSettings
from resources.keys import DeviceRegistryResource, KeyServiceResource, decoder_for
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from resources.state_rules import StateRulesResource


def sync_env(
    lakehouse: LakehouseResource,
    object_store: ObjectStoreResource,
    key_service: KeyServiceResource,
    device_registry: DeviceRegistryResource,
    state_rules: StateRulesResource,
    **settings,
) -> SyncEnv:
    return SyncEnv(
        lakehouse=lakehouse.get(),
        store=object_store.get(),
        key_service=key_service.get(),
        registry=device_registry.get(),
        rules=state_rules.get(),
        settings=SyncSettings(**settings),
        decoder=decoder_for(key_service, device_registry),
    )


def counts_metadata(prefix: str, counts: dict[str, int]) -> dict:
    """One numeric metadata entry per key (``quarantined/bad_signature``), so the UI plots each."""
    return {f"{prefix}/{k}": dg.MetadataValue.int(int(v)) for k, v in sorted(counts.items())}
