"""The rollouts' Dagster objects, registered by ``pipelines/definitions.py`` (resources: pipelines/resources.py)."""

from assets.rollouts.commands import COMMAND_JOBS
from assets.rollouts.drift import device_drift
from assets.rollouts.fleet_state import rollout_assignments, rollout_events, rollout_phase_status
from assets.rollouts.health import rollout_health
from assets.rollouts.jobs import device_drift_job, rollout_refresh_job
from pipelines.sensors_rollouts import rollout_gitops_sensor, rollout_promotion_sensor

ROLLOUT_ASSETS = [rollout_assignments, rollout_phase_status, rollout_health, rollout_events, device_drift]
ROLLOUT_ASSET_CHECKS: list = []  # the gate checks are declared on rollout_health itself (check_specs)
ROLLOUT_JOBS = [*COMMAND_JOBS, rollout_refresh_job, device_drift_job]
ROLLOUT_SENSORS = [rollout_promotion_sensor, rollout_gitops_sensor]
