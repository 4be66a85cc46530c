"""The code location: assets, checks, jobs, sensors and schedules, with resources for the environment."""

import dagster as dg

import assets.fleet.lakehouse
import assets.fleet.status
from edgeplat.settings import ensure_home
from pipelines.jobs import JOBS
from pipelines.resources import resources_for
from pipelines.rollout_defs import ROLLOUT_ASSET_CHECKS, ROLLOUT_ASSETS, ROLLOUT_JOBS, ROLLOUT_SENSORS
from pipelines.sync_defs import SYNC_ASSET_CHECKS, SYNC_ASSETS, SYNC_JOBS, SYNC_SCHEDULES, SYNC_SENSORS

FLEET_ASSETS = dg.load_assets_from_modules([assets.fleet.lakehouse, assets.fleet.status])


def build_definitions() -> dg.Definitions:
    """Definitions bound to the resources of the current environment and state directory."""
    ensure_home()
    return dg.Definitions(
        assets=[*FLEET_ASSETS, *SYNC_ASSETS, *ROLLOUT_ASSETS],
        asset_checks=[*SYNC_ASSET_CHECKS, *ROLLOUT_ASSET_CHECKS],
        jobs=[*JOBS, *SYNC_JOBS, *ROLLOUT_JOBS],
        sensors=[*SYNC_SENSORS, *ROLLOUT_SENSORS],
        schedules=SYNC_SCHEDULES,
        resources=resources_for(),
    )


defs = build_definitions()
