"""Rollout sensors: the promotion sensor (drives every active rollout) and the GitOps sensor.

The promotion sensor does the controller's work inside the tick (fold, observe, decide,
act, append; see edgeplat/rollouts/controller.py), which is idempotent and durable by
construction, and requests a refresh run of the rollout's assets only when its log grew.
Refresh runs are keyed by (rollout, log size), so repeats are dropped by the instance; the
cursor (JSON, versioned) only records the log sizes for the UI: losing it loses nothing.
"""

import json

import dagster as dg

from assets.rollouts.common import ROLLOUTS, controller_from
from pipelines.jobs import ROLLOUT_TAG, device_drift_refresh, rollout_refresh
from resources.backends import FleetBackendResource
from resources.gitops import GitOpsRepoResource
from resources.lakehouse import LakehouseResource

CURSOR_VERSION = 1


def _cursor(text: str | None) -> dict:
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return {"v": CURSOR_VERSION}
    return data if data.get("v") == CURSOR_VERSION else {"v": CURSOR_VERSION}


@dg.sensor(
    jobs=[rollout_refresh, device_drift_refresh],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every tick, for each active rollout: wait out the bake, evaluate the gates (canary vs "
    "baseline), then promote, wait for approval, or roll back / pause; marks devices that never "
    "acknowledge unreachable and applies the progress deadline. Refreshes the rollout's assets when it moved.",
)
def rollout_promotion_sensor(
    context: dg.SensorEvaluationContext, lakehouse: LakehouseResource, fleet_backend: FleetBackendResource
) -> dg.SensorResult:
    ctl = controller_from(lakehouse, fleet_backend)
    results = ctl.tick_all()
    known = set(context.instance.get_dynamic_partitions(ROLLOUTS.name))
    new_parts = sorted({r.rollout_id for r in results} - known)
    # One refresh per log size: run keys make repeats (and a lost cursor) harmless.
    requests = [
        dg.RunRequest(
            job_name=rollout_refresh.name,
            partition_key=r.rollout_id,
            run_key=f"refresh:{r.rollout_id}:{r.log_size}",
            tags={ROLLOUT_TAG: r.rollout_id},
        )
        for r in results
    ]
    for r in results:
        for e in r.appended:
            context.log.info("rollout %s: %s phase %s: %s", r.rollout_id, e.kind, e.phase, e.reason)
    if any(r.appended for r in results):
        total = sum(r.log_size for r in results)
        requests.append(
            dg.RunRequest(job_name=device_drift_refresh.name, run_key=f"drift:{total}:{len(results)}")
        )
    cursor = json.dumps({"v": CURSOR_VERSION, "sizes": {r.rollout_id: r.log_size for r in results}})
    dyn = [dg.AddDynamicPartitionsRequest(ROLLOUTS.name, new_parts)] if new_parts else []
    if not results:
        return dg.SensorResult(
            skip_reason="no active rollouts", cursor=cursor, dynamic_partitions_requests=dyn
        )
    return dg.SensorResult(run_requests=requests, cursor=cursor, dynamic_partitions_requests=dyn)


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the GitOps repository's spec files on the tracked branch: launches, updates in "
    "place (safe fields), supersedes or aborts rollouts when they change, recording the commit; writes the "
    "status file back if configured.",
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
    cursor = _cursor(context.cursor)
    ctl = controller_from(lakehouse, fleet_backend)
    result = watcher.sync(ctl, cursor.get("commit"))
    head = result.head
    if watcher.status_file:
        head = watcher.write_status(ctl) or head
    for item in result.invalid:
        context.log.error(
            "gitops: invalid spec %s at %s:\n%s", item["path"], item["commit"][:12], item["errors"]
        )
    launched = [x["rollout_id"] for x in result.launched]
    dyn = [dg.AddDynamicPartitionsRequest(ROLLOUTS.name, launched)] if launched else []
    new_cursor = json.dumps({"v": CURSOR_VERSION, "commit": head})
    if not (launched or result.aborted or result.updated):
        return dg.SensorResult(
            skip_reason=f"no spec changes up to {head[:12]}",
            cursor=new_cursor,
            dynamic_partitions_requests=dyn,
        )
    context.log.info("gitops %s: %s", head[:12], json.dumps(result.as_dict()))
    return dg.SensorResult(cursor=new_cursor, dynamic_partitions_requests=dyn)
