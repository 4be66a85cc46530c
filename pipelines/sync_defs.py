"""The central sync's Dagster objects, registered by ``pipelines/definitions.py`` (resources: pipelines/resources.py)."""

from assets.sync.central_edits import edit_device_state
from assets.sync.ingest import ingest_job, ingested_batches
from assets.sync.reconcile import RECONCILE_ASSETS, RECONCILE_CHECKS, reconcile_job, reconcile_schedule
from pipelines.sensors_sync import batch_arrival_sensor

SYNC_ASSETS = [ingested_batches, *RECONCILE_ASSETS]
SYNC_ASSET_CHECKS = list(RECONCILE_CHECKS)
SYNC_JOBS = [ingest_job, reconcile_job, edit_device_state]
SYNC_SENSORS = [batch_arrival_sensor]
SYNC_SCHEDULES = [reconcile_schedule]
