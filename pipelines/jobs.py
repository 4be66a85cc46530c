"""Jobs of the fleet group: what `make demo`, `edgeplat sync` and the schedule-less UI launch run."""

import dagster as dg

# The main job: ingest whatever the store holds that the ledger lacks, merge state,
# reconcile (gaps, deferred batches, duplicates, offline devices), refresh the fleet
# tables and views, compact. The per-arrival `ingest_batches` job is the sensor's.
sync_fleet_job = dg.define_asset_job(
    "sync_fleet",
    selection=dg.AssetSelection.groups("fleet", "sync") - dg.AssetSelection.assets("ingested_batches"),
    description="Ingest, merge and reconcile everything the object store holds, then refresh the fleet assets.",
)

MAIN_JOB = sync_fleet_job.name
JOBS = [sync_fleet_job]
