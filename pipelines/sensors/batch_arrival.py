"""``batch_arrival_sensor``: new batch objects -> per-tenant ingest runs, bounded work per tick.

The planning is plain Python (edgeplat.sync.arrivals); this file only turns a plan into
run requests. Runs carry the tag ``edgeplat/ingest-tenant`` so the instance can limit
ingest to one run per tenant at a time (``tag_concurrency_limits`` in dagster.yaml).
"""

import dagster as dg

from edgeplat.sync.arrivals import ArrivalCursor, CursorError, plan_arrivals
from edgeplat.sync.ledger import settled_keys
from pipelines.jobs import TENANT_TAG, ingest_batches
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource

MAX_KEYS_PER_TICK = 5_000
KEYS_PER_RUN = 500


def run_config(tenant_id: str, keys: tuple[str, ...]) -> dict:
    return {"ops": {"ingested_batches": {"config": {"tenant_id": tenant_id, "object_keys": list(keys)}}}}


@dg.sensor(
    job=ingest_batches,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Lists new batch objects after its cursor (at most {MAX_KEYS_PER_TICK} per tick) and "
    "requests one ingest run per tenant and key group; reconciliation catches late listings.",
)
def batch_arrival_sensor(
    context: dg.SensorEvaluationContext, object_store: ObjectStoreResource, lakehouse: LakehouseResource
) -> dg.SensorResult:
    try:
        cursor = ArrivalCursor.from_json(context.cursor)
    except CursorError as exc:
        return dg.SensorResult(skip_reason=str(exc))
    store = object_store.get()
    with lakehouse.get().session(read_only=True) as con:
        plan = plan_arrivals(
            store,
            cursor,
            max_keys=MAX_KEYS_PER_TICK,
            keys_per_run=KEYS_PER_RUN,
            settled=lambda keys: settled_keys(con, keys),
        )
    requests = [
        dg.RunRequest(
            run_key=r.run_key,
            run_config=run_config(r.tenant_id, r.keys),
            tags={TENANT_TAG: r.tenant_id, "edgeplat/objects": str(len(r.keys))},
        )
        for r in plan.runs
    ]
    context.log.info(
        "listed %d keys (%d settled, %d not batches), %d runs, caught up: %s",
        plan.listed,
        plan.settled,
        plan.ignored,
        len(requests),
        plan.caught_up,
    )
    if not requests:
        return dg.SensorResult(
            skip_reason=f"no new batch objects ({plan.listed} keys listed)", cursor=plan.cursor.to_json()
        )
    return dg.SensorResult(run_requests=requests, cursor=plan.cursor.to_json())
