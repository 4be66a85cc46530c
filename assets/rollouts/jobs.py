"""Asset jobs of the rollouts group: refresh one rollout's assets, and device drift."""

import dagster as dg

from assets.rollouts.common import ROLLOUTS

rollout_refresh_job = dg.define_asset_job(
    "rollout_refresh",
    selection=dg.AssetSelection.assets(
        "rollout_assignments", "rollout_phase_status", "rollout_health", "rollout_events"
    ),
    partitions_def=ROLLOUTS,
    description="Refresh one rollout's assets (assignments, phase status, health with gate checks, events).",
)
device_drift_job = dg.define_asset_job(
    "device_drift_refresh",
    selection=dg.AssetSelection.assets("device_drift"),
    description="Recompute desired versus reported version per device.",
)
