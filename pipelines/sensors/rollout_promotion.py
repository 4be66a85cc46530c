"""The promotion sensor: decides which rollouts have work and requests a run for each.

Every tick asks the controller what a step of each active rollout would do now
(``Controller.due_all``: fold, observe, decide, without acting). A rollout with work (a phase
to deploy, a rollback, gates to record, devices that registered late) gets an
``advance_rollout`` run, where the backend calls happen with their logs and retries. Run keys
carry the rollout, its log size, what is due and a retry window, so a repeat within the window
is dropped and a failed run is retried in the next one; a rollout with a run still in flight
gets no second one. The sensor also registers rollout partitions and requests a refresh of a
rollout's assets whenever its log grew. The cursor (JSON, versioned) only records log sizes
for the UI: losing it loses nothing.
"""

import hashlib
import time

import dagster as dg

from assets.rollouts.common import ROLLOUTS, controller_from
from pipelines.jobs import ROLLOUT_TAG, advance_rollout, device_drift_refresh, rollout_refresh
from pipelines.sensors.cursor import write_cursor
from resources.backends import FleetBackendResource
from resources.lakehouse import LakehouseResource

RETRY_WINDOW_S = 300
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def advance_request(rollout_id: str, log_size: int, due: list[str], reason: str) -> dg.RunRequest:
    """An ``advance_rollout`` run for one rollout, keyed by what is due and the retry window."""
    digest = hashlib.sha256("\n".join(due).encode()).hexdigest()[:12]
    window = int(time.time() // RETRY_WINDOW_S)
    return dg.RunRequest(
        job_name=advance_rollout.name,
        run_key=f"advance:{rollout_id}:{log_size}:{digest}:{window}",
        run_config={"ops": {"advance_rollout_op": {"config": {"rollout": rollout_id, "reason": reason}}}},
        tags={ROLLOUT_TAG: rollout_id},
    )


def rollouts_in_flight(instance: dg.DagsterInstance) -> set[str]:
    """Rollouts with an ``advance_rollout`` run queued or running."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=advance_rollout.name, statuses=IN_FLIGHT), limit=1000
    )
    return {r.dagster_run.tags.get(ROLLOUT_TAG, "") for r in records}


@dg.sensor(
    jobs=[advance_rollout, rollout_refresh, device_drift_refresh],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every tick, for each active rollout: decides whether a step has work (the bake is over and "
    "the gates say promote, wait for approval or roll back; gates to record; devices never acknowledging; "
    "the progress deadline; late registrations) and requests an advance_rollout run for it. Refreshes the "
    "rollout's assets when its log grew.",
)
def rollout_promotion_sensor(
    context: dg.SensorEvaluationContext, lakehouse: LakehouseResource, fleet_backend: FleetBackendResource
) -> dg.SensorResult:
    results = controller_from(lakehouse, fleet_backend).due_all()
    known = set(context.instance.get_dynamic_partitions(ROLLOUTS.name))
    new_parts = sorted({r.rollout_id for r in results} - known)
    busy = rollouts_in_flight(context.instance) if any(r.due for r in results) else set()
    requests = []
    for r in results:
        if r.due and r.rollout_id not in busy:
            context.log.info("rollout %s: due %s", r.rollout_id, ", ".join(r.due))
            requests.append(advance_request(r.rollout_id, r.log_size, r.due, "; ".join(r.due)[:1000]))
        # One refresh per log size: run keys make repeats (and a lost cursor) harmless.
        requests.append(
            dg.RunRequest(
                job_name=rollout_refresh.name,
                partition_key=r.rollout_id,
                run_key=f"refresh:{r.rollout_id}:{r.log_size}",
                tags={ROLLOUT_TAG: r.rollout_id},
            )
        )
    total = sum(r.log_size for r in results)
    requests.append(
        dg.RunRequest(job_name=device_drift_refresh.name, run_key=f"drift:{total}:{len(results)}")
    )
    cursor = write_cursor(sizes={r.rollout_id: r.log_size for r in results})
    dyn = [dg.AddDynamicPartitionsRequest(ROLLOUTS.name, new_parts)] if new_parts else []
    if not results:
        return dg.SensorResult(
            skip_reason="no active rollouts", cursor=cursor, dynamic_partitions_requests=dyn
        )
    return dg.SensorResult(run_requests=requests, cursor=cursor, dynamic_partitions_requests=dyn)
