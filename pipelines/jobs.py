"""Every job of the code location: asset jobs by selection, op jobs around the operator ops.

The main job, ``sync_fleet``, is what ``make demo``, ``edgeplat sync`` and the UI's
"materialize all" run; the sensors and the schedule launch the others.
"""

import dagster as dg

from assets.alerts.evaluate import evaluate_alerts_op
from assets.rollouts.commands import COMMAND_OPS, advance_rollout_op, launch_rollout_op
from assets.sync.archive import archive_settled_objects, replay_device_range
from assets.sync.central_edits import apply_state_edits, publish_rules_to_devices
from assets.sync.fleet_config import apply_fleet_config_op
from assets.sync.ingest import ingested_batches
from assets.sync.reconcile import RECONCILE_ASSETS, RECONCILE_CHECKS
from pipelines.executors import fan_out_executor

# Run tags the instance limits on (tag_concurrency_limits in dagster.yaml): one ingest run per
# tenant at a time, and one run acting on a given rollout at a time.
TENANT_TAG = "edgeplat/ingest-tenant"
ROLLOUT_TAG = "edgeplat/rollout"

# Ingest whatever the store holds that the ledger lacks, merge state, reconcile (gaps, deferred
# batches, duplicates, offline devices), refresh the fleet tables and views, compact. The
# per-arrival ``ingest_batches`` job is the sensor's.
sync_fleet = dg.define_asset_job(
    "sync_fleet",
    selection=dg.AssetSelection.groups("fleet", "sync") - dg.AssetSelection.assets(ingested_batches),
    description="Ingest, merge and reconcile everything the object store holds, then refresh the fleet assets.",
    executor_def=fan_out_executor(),
)
MAIN_JOB = sync_fleet.name

ingest_batches = dg.define_asset_job(
    "ingest_batches",
    selection=[ingested_batches],
    description="Ingest the batch objects named in the run config (launched by batch_arrival_sensor).",
)

reconcile_sync = dg.define_asset_job(
    "reconcile_sync",
    selection=dg.AssetSelection.assets(*RECONCILE_ASSETS) | dg.AssetSelection.checks(*RECONCILE_CHECKS),
    description="Reconcile the object store with the ledger, admit deferred batches, refresh devices and "
    "health rollups, views and compaction.",
    executor_def=fan_out_executor(),
)


@dg.job(description="Set fields of one device's state record centrally (merged with the device's own edits).")
def edit_device_state() -> None:
    apply_state_edits()


@dg.job(
    description="Apply one GitOps commit's fleet/ tree as central state edits (requested by fleet_config_sensor).",
    tags={"edgeplat/fleet-config": "apply"},
)
def apply_fleet_config() -> None:
    apply_fleet_config_op()


@dg.job(
    description="Launch a progressive rollout from its spec (the launchpad config is the spec).",
    tags={"edgeplat/rollout-command": "launch"},
)
def launch_rollout() -> None:
    launch_rollout_op()


@dg.job(description="One controller step for one rollout (requested by the promotion and GitOps sensors).")
def advance_rollout() -> None:
    advance_rollout_op()


def _command_job(kind: str, name: str) -> dg.JobDefinition:
    op = COMMAND_OPS[kind]

    @dg.job(name=name, description=op.description, tags={"edgeplat/rollout-command": kind})
    def _job() -> None:
        op()

    return _job


approve_phase = _command_job("approve", "approve_phase")
pause = _command_job("pause", "pause")
resume = _command_job("resume", "resume")
abort = _command_job("abort", "abort")
fail_phase = _command_job("fail_phase", "fail_phase")

rollout_refresh = dg.define_asset_job(
    "rollout_refresh",
    selection=dg.AssetSelection.assets(
        "rollout_assignments", "rollout_phase_status", "rollout_health", "rollout_events"
    ),
    description="Refresh one rollout's assets (assignments, phase status, health with gate checks, events).",
)
device_drift_refresh = dg.define_asset_job(
    "device_drift_refresh",
    selection=dg.AssetSelection.assets("device_drift"),
    description="Recompute desired versus reported version per device.",
)

device_inventory_sync = dg.define_asset_job(
    "device_inventory_sync",
    selection=dg.AssetSelection.assets("device_inventory"),
    description="Import devices from every configured platform into the devices table.",
)
platform_feedback_refresh = dg.define_asset_job(
    "platform_feedback_refresh",
    selection=dg.AssetSelection.assets("platform_feedback"),
    description="One bounded pass of what Greengrass and IoT Hub report about active rollouts' devices.",
)


@dg.job(
    description="Send the current state conflict rules to every device's desired-state document "
    "(run after changing the rules file)."
)
def publish_state_rules() -> None:
    publish_rules_to_devices()


@dg.job(description="Move settled batch objects older than the retention from the hot prefix to archive/.")
def archive_settled() -> None:
    archive_settled_objects()


@dg.job(description="Re-ingest a device's archived (and hot) batch range exactly once: restores lost rows.")
def replay_archive() -> None:
    replay_device_range()


SYNC_JOBS = [ingest_batches, reconcile_sync, edit_device_state, publish_state_rules]
SYNC_JOBS += [archive_settled, replay_archive]  # settled objects leave the hot prefix
ROLLOUT_JOBS = [
    launch_rollout,
    advance_rollout,
    approve_phase,
    pause,
    resume,
    abort,
    fail_phase,
    rollout_refresh,
    device_drift_refresh,
]


@dg.job(description="Evaluate the alert rules (platform conditions, device alerts) and notify the sinks.")
def evaluate_alerts() -> None:
    evaluate_alerts_op()


ALERT_JOBS = [evaluate_alerts]
JOBS = [sync_fleet, *SYNC_JOBS, *ROLLOUT_JOBS, *ALERT_JOBS]
JOBS += [device_inventory_sync, platform_feedback_refresh]  # the platform inventory and feedback
JOBS += [apply_fleet_config]  # desired device state from the GitOps repository's fleet/ tree
