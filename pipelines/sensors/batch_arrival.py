"""``batch_arrival_sensor``: new batch objects -> per-tenant ingest runs, bounded work per tick.

With the object store's ``notifications`` configured, object-created notifications drive it and
a bounded listing is the backstop (edgeplat.sync.queue_arrivals); without, it lists the store
after its cursor (edgeplat.sync.arrivals). The planning is plain Python; this file only turns a
plan into run requests. Runs carry the tag ``edgeplat/ingest-tenant`` so the instance can limit
ingest to one run per tenant at a time (``tag_concurrency_limits`` in dagster.yaml).
"""

import time

import dagster as dg

from edge_sync.objectstore import ObjectStore
from edgeplat.sync.arrivals import ArrivalCursor, CursorError, PlannedRun, plan_arrivals
from edgeplat.sync.ledger import settled_keys
from edgeplat.sync.queue_arrivals import DEFAULT_MAX_MESSAGES, QueueCursor, plan_tick
from pipelines.jobs import TENANT_TAG, ingest_batches
from resources.arrival_queue import ArrivalNotifications
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource

MAX_KEYS_PER_TICK = 5_000
KEYS_PER_RUN = 500
BACKSTOP_INTERVAL_S = 600.0  # a listing pass at most this often while the queue works
now = time.time  # the sensor's clock (a test moves it to make the backstop due)
SOURCE_TAG = "edgeplat/arrivals"  # notifications | listing | listing-fallback (the queue was down)


def run_config(tenant_id: str, keys: tuple[str, ...]) -> dict:
    return {"ops": {"ingested_batches": {"config": {"tenant_id": tenant_id, "object_keys": list(keys)}}}}


@dg.sensor(
    job=ingest_batches,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Reads object-created notifications (at most {DEFAULT_MAX_MESSAGES} per tick by default) or, without "
    f"them, lists new batch objects after its cursor (at most {MAX_KEYS_PER_TICK} per tick), and requests one "
    "ingest run per tenant and key group; a bounded listing is the backstop, reconciliation the last one.",
)
def batch_arrival_sensor(
    context: dg.SensorEvaluationContext, object_store: ObjectStoreResource, lakehouse: LakehouseResource
) -> dg.SensorResult:
    if object_store.notifications is not None:
        return _from_notifications(context, object_store.get(), object_store.notifications, lakehouse)
    try:
        cursor = listing_cursor(context.cursor)
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
    requests = run_requests(plan.runs, "listing")
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


def listing_cursor(text: str | None) -> ArrivalCursor:
    """The listing position, also out of a notifications cursor (notifications were switched off)."""
    try:
        return ArrivalCursor.from_json(text)
    except CursorError:
        return QueueCursor.from_json(text).listing


def run_requests(runs: list[PlannedRun], source: str) -> list[dg.RunRequest]:
    return [
        dg.RunRequest(
            run_key=r.run_key,
            run_config=run_config(r.tenant_id, r.keys),
            tags={TENANT_TAG: r.tenant_id, "edgeplat/objects": str(len(r.keys)), SOURCE_TAG: source},
        )
        for r in runs
    ]


def _from_notifications(
    context: dg.SensorEvaluationContext,
    store: ObjectStore,
    notifications: ArrivalNotifications,
    lakehouse: LakehouseResource,
) -> dg.SensorResult:
    """Notifications first, the bounded listing as backstop; acks only what the ledger holds."""
    try:
        cursor = QueueCursor.from_json(context.cursor)
    except CursorError as exc:
        return dg.SensorResult(skip_reason=str(exc))
    opener = notifications.opener(store)
    with lakehouse.get().session(read_only=True) as con:
        plan = plan_tick(
            store,
            opener,
            cursor,
            settled=lambda keys: settled_keys(con, keys),
            now=now(),
            max_messages=notifications.max_messages,
            backstop_keys=MAX_KEYS_PER_TICK,
            backstop_interval_s=BACKSTOP_INTERVAL_S,
            keys_per_run=KEYS_PER_RUN,
        )
    for m in plan.poison:
        context.log.warning("dead-lettered notification %s: %s", m.message_id, m.problem)
    (context.log.warning if plan.outage else context.log.info)(plan.summary())
    requests = run_requests(plan.runs, "listing-fallback" if plan.outage else "notifications")
    if not requests:
        return dg.SensorResult(skip_reason=plan.summary(), cursor=plan.cursor.to_json())
    return dg.SensorResult(run_requests=requests, cursor=plan.cursor.to_json())
