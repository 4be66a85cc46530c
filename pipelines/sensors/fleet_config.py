"""The fleet-config sensor: a new commit touching ``fleet/``, or changed device tags, requests a run.

The sensor only decides: each tick fetches its own clone of the GitOps repository and reads
the devices inventory; when ``fleet/`` changed since the cursor's commit, or the inventory's
tags changed (tag layers re-resolve), it requests one ``apply_fleet_config`` run for the head
commit. The run key is the commit and the inventory digest, so a tick that is evaluated again
requests nothing new, and the run itself applies only what differs from what it recorded.
"""

import dagster as dg

from edgeplat.fleet_config.apply import inventory_fingerprint, load_inventory
from edgeplat.fleet_config.source import fleet_changed, fleet_paths
from pipelines.jobs import apply_fleet_config
from pipelines.sensors.cursor import read_cursor, write_cursor
from resources.gitops import GitOpsRepoResource
from resources.lakehouse import LakehouseResource


@dg.sensor(
    jobs=[apply_fleet_config],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the GitOps repository's fleet/ tree and the devices' tags: requests an "
    "apply_fleet_config run of the head commit when either changed.",
)
def fleet_config_sensor(
    context: dg.SensorEvaluationContext, lakehouse: LakehouseResource, gitops_repo: GitOpsRepoResource
) -> dg.SensorResult:
    watcher = gitops_repo.fleet_watcher("sensor")
    if watcher is None:
        return dg.SensorResult(skip_reason="GitOps is off: set gitops_repo.repo (EDGEPLAT_GITOPS_REPO)")
    cursor = read_cursor(context.cursor)
    head = watcher.fetch()
    with lakehouse.get().session(read_only=True) as con:
        digest = inventory_fingerprint(load_inventory(con))
    since = cursor.get("commit")
    new_cursor = write_cursor(commit=head, inventory=digest)
    if since is None and not fleet_paths(watcher, head):
        return dg.SensorResult(skip_reason=f"no fleet/ tree at {head[:12]}", cursor=new_cursor)
    if not fleet_changed(watcher, since, head) and digest == cursor.get("inventory"):
        return dg.SensorResult(
            skip_reason=f"fleet/ and device tags unchanged at {head[:12]}", cursor=new_cursor
        )
    request = dg.RunRequest(
        run_key=f"fleet-config:{head}:{digest[:16]}",
        run_config={"ops": {"apply_fleet_config_op": {"config": {"commit": head}}}},
    )
    context.log.info("fleet/ at %s: requesting a run (since %s)", head[:12], (since or "start")[:12])
    return dg.SensorResult(run_requests=[request], cursor=new_cursor)
