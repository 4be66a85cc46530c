"""The GitOps sensor: the rollout specs in a git repository launch, update and abort rollouts.

Each tick applies the spec changes on the tracked branch since the cursor's commit
(``GitOpsWatcher.sync``: it records launches, in-place updates and aborts as rollout events,
idempotent per commit), then requests an ``advance_rollout`` run for every rollout it touched,
so the first deploy or the rollback happens in a run, through the fleet backend, right away.
"""

import json

import dagster as dg

from assets.rollouts.common import ROLLOUTS, controller_from
from pipelines.jobs import ROLLOUT_TAG, advance_rollout
from pipelines.sensors.cursor import read_cursor, write_cursor
from resources.backends import FleetBackendResource
from resources.gitops import GitOpsRepoResource
from resources.lakehouse import LakehouseResource


@dg.sensor(
    jobs=[advance_rollout],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the GitOps repository's spec files on the tracked branch: launches, updates in "
    "place (safe fields), supersedes or aborts rollouts when they change, recording the commit, and "
    "requests a step of each; writes the status file back if configured.",
)
def rollout_gitops_sensor(
    context: dg.SensorEvaluationContext,
    lakehouse: LakehouseResource,
    fleet_backend: FleetBackendResource,
    gitops_repo: GitOpsRepoResource,
) -> dg.SensorResult:
    watcher = gitops_repo.watcher()
    if watcher is None:
        return dg.SensorResult(skip_reason="GitOps is off: set gitops_repo.repo (EDGEPLAT_GITOPS_REPO)")
    ctl = controller_from(lakehouse, fleet_backend)
    result = watcher.sync(ctl, read_cursor(context.cursor).get("commit"))
    head = result.head
    if watcher.status_file:
        head = watcher.write_status(ctl) or head
    for item in result.invalid:
        context.log.error(
            "gitops: invalid spec %s at %s:\n%s", item["path"], item["commit"][:12], item["errors"]
        )
    launched = [x["rollout_id"] for x in result.launched]
    touched = [
        *launched,
        *(x["rollout_id"] for x in result.aborted),
        *(x["rollout_id"] for x in result.updated),
    ]
    requests = [
        dg.RunRequest(
            job_name=advance_rollout.name,
            run_key=f"gitops:{rid}:{result.head}",
            run_config={
                "ops": {
                    "advance_rollout_op": {"config": {"rollout": rid, "reason": f"gitops {result.head[:12]}"}}
                }
            },
            tags={ROLLOUT_TAG: rid},
        )
        for rid in dict.fromkeys(touched)
    ]
    dyn = [dg.AddDynamicPartitionsRequest(ROLLOUTS.name, launched)] if launched else []
    cursor = write_cursor(commit=head)
    if not requests:
        return dg.SensorResult(
            skip_reason=f"no spec changes up to {head[:12]}", cursor=cursor, dynamic_partitions_requests=dyn
        )
    context.log.info("gitops %s: %s", head[:12], json.dumps(result.as_dict()))
    return dg.SensorResult(run_requests=requests, cursor=cursor, dynamic_partitions_requests=dyn)
