"""Jobs: what operators launch from the UI and what the CLI runs."""

from __future__ import annotations

import dagster as dg

# The main job: everything the fleet's tables derive from, in dependency order.
fleet_refresh_job = dg.define_asset_job(
    "fleet_refresh",
    selection=dg.AssetSelection.groups("fleet"),
    description="Create the lakehouse schema and refresh the fleet assets.",
)

MAIN_JOB = fleet_refresh_job.name
JOBS = [fleet_refresh_job]
