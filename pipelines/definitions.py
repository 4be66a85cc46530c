"""The code location: assets, jobs, sensors and schedules, with resources for the environment."""

from __future__ import annotations

import dagster as dg

import assets.fleet.lakehouse
import assets.fleet.status
from edgeplat.settings import ensure_home
from pipelines.jobs import JOBS
from pipelines.resources import resources_for

ensure_home()

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets.fleet.lakehouse, assets.fleet.status]),
    jobs=JOBS,
    resources=resources_for(),
)
