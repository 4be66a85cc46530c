"""The central sync's Dagster objects, registered by ``pipelines/definitions.py`` (resources: pipelines/resources.py)."""

from typing import Any

import dagster as dg

from assets.fleet.lakehouse import lakehouse_tables
from assets.sync.central_edits import edit_device_state
from assets.sync.ingest import ingest_job, ingested_batches
from assets.sync.reconcile import RECONCILE_ASSETS, RECONCILE_CHECKS, reconcile_job, reconcile_schedule
from pipelines.sensors_sync import batch_arrival_sensor

SYNC_ASSETS = [ingested_batches, *RECONCILE_ASSETS]
SYNC_ASSET_CHECKS = list(RECONCILE_CHECKS)
SYNC_JOBS = [ingest_job, reconcile_job, edit_device_state]
SYNC_SENSORS = [batch_arrival_sensor]
SYNC_SCHEDULES = [reconcile_schedule]


def sync_definitions(resources: dict[str, Any]) -> dg.Definitions:
    """The sync on its own (with the ``lakehouse_tables`` asset it builds on), bound to ``resources``:
    benchmarks and tests run it against their own lakehouse and store."""
    return dg.Definitions(
        assets=[lakehouse_tables, *SYNC_ASSETS],
        asset_checks=SYNC_ASSET_CHECKS,
        jobs=SYNC_JOBS,
        sensors=SYNC_SENSORS,
        schedules=SYNC_SCHEDULES,
        resources=resources,
    )
