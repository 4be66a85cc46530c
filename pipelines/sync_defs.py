"""The central sync's Dagster objects and resources, for ``pipelines/definitions.py`` to register."""

from typing import Any

from assets.sync.central_edits import edit_device_state
from assets.sync.ingest import ingest_job, ingested_batches
from assets.sync.reconcile import RECONCILE_ASSETS, RECONCILE_CHECKS, reconcile_job, reconcile_schedule
from edgeplat.settings import environment, paths
from pipelines.sensors_sync import batch_arrival_sensor
from resources.keys import DeviceRegistryResource, KeyServiceResource, PlatformSignerResource

SYNC_ASSETS = [ingested_batches, *RECONCILE_ASSETS]
SYNC_ASSET_CHECKS = list(RECONCILE_CHECKS)
SYNC_JOBS = [ingest_job, reconcile_job, edit_device_state]
SYNC_SENSORS = [batch_arrival_sensor]
SYNC_SCHEDULES = [reconcile_schedule]


def sync_resources(env: str | None = None) -> dict[str, Any]:
    """Resources the sync needs besides ``lakehouse`` and ``object_store`` (pipelines/resources.py)."""
    env = env or environment()
    p = paths()
    if env == "production":
        import os

        return {
            # Vault transit is the production key service; until its resource lands, keys are mounted files.
            "key_service": KeyServiceResource(kind="local", keyring_dir=os.environ.get("EDGEPLAT_KEYRING_DIR", "")),
            "device_registry": DeviceRegistryResource(registry_dir=os.environ.get("EDGEPLAT_REGISTRY_DIR", "")),
            "platform_signer": PlatformSignerResource(path=os.environ.get("EDGEPLAT_PLATFORM_KEY", "")),
        }
    return {
        "key_service": KeyServiceResource(keyring_dir=str(p.keys)),
        "device_registry": DeviceRegistryResource(registry_dir=str(p.devices)),
        "platform_signer": PlatformSignerResource(path=str(p.keys / "platform_signer.pem"), create_if_missing=True),
    }
