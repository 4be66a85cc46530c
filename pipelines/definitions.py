"""The code location: every asset, check, job, sensor and schedule, bound to the environment's resources.

Loading it has no side effects: it reads the environment (``EDGEPLAT_ENV``, paths) and writes
nothing; the entry points prepare the state directory (cli/environment.py).
"""

import warnings
from typing import Any

import dagster as dg

import assets
import assets.fleet.lakehouse
import assets.rollouts
import assets.sync
from pipelines.jobs import JOBS, ROLLOUT_JOBS, SYNC_JOBS
from pipelines.resources import resources_for
from pipelines.schedules import ALERT_SCHEDULES, ARCHIVE_SCHEDULES, PLATFORM_SCHEDULES, SCHEDULES
from pipelines.sensors import ROLLOUT_SENSORS, SENSORS, SYNC_SENSORS

# Binding resources to an op job that a sensor targets (advance_rollout), Dagster rebuilds the
# sensor and passes its unset ``owners`` along, then warns that ``owners`` is in beta: its own call.
warnings.filterwarnings(
    "ignore", message="Parameter `owners` of initializer `SensorDefinition.__init__`", category=dg.BetaWarning
)


def build_definitions(resources: dict[str, Any] | None = None) -> dg.Definitions:
    """The whole code location, on ``resources`` (default: the current environment's)."""
    return dg.Definitions(
        assets=dg.load_assets_from_package_module(assets),
        asset_checks=dg.load_asset_checks_from_package_module(assets),
        jobs=JOBS,
        sensors=SENSORS,
        schedules=[*SCHEDULES, *ALERT_SCHEDULES, *PLATFORM_SCHEDULES, *ARCHIVE_SCHEDULES],
        resources=resources_for() if resources is None else resources,
    )


def sync_definitions(resources: dict[str, Any]) -> dg.Definitions:
    """The sync on its own (with the ``lakehouse_tables`` asset it builds on), bound to ``resources``:
    benchmarks and tests run it against their own lakehouse and store."""
    return dg.Definitions(
        assets=[
            *dg.load_assets_from_modules([assets.fleet.lakehouse]),
            *dg.load_assets_from_package_module(assets.sync),
        ],
        asset_checks=dg.load_asset_checks_from_package_module(assets.sync),
        jobs=SYNC_JOBS,
        sensors=SYNC_SENSORS,
        schedules=[*SCHEDULES, *ARCHIVE_SCHEDULES],
        resources=resources,
    )


def rollout_definitions(resources: dict[str, Any]) -> dg.Definitions:
    """The rollouts on their own (assets, operator jobs, sensors), bound to ``resources``."""
    return dg.Definitions(
        assets=dg.load_assets_from_package_module(assets.rollouts),
        jobs=ROLLOUT_JOBS,
        sensors=ROLLOUT_SENSORS,
        resources=resources,
    )


defs = build_definitions()
