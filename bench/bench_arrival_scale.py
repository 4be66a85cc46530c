"""Batch arrival at fleet scale: a store of 1,000,000 settled objects (quick: 20,000) plus a stream of new ones.

The store (local folder, then a moto S3 server) holds a fleet's settled history: 4 tenants x
2,500 devices x 100 batch objects, every one of them in the ``batches`` ledger as well
(``edgeplat.simulator.settled_store``: empty objects, ledger rows inserted in bulk). New real
signed batches of 64 devices spread over the key space arrive at random times during one
reconciliation period (15 min) and are replayed on a virtual clock
(``edgeplat.simulator.arrival_clock``): every sensor interval (30 s) the arrival path ticks
for real, its runs are ingested in process for real, the reconciliation backstop runs every
15 minutes; an object's latency is its commit time minus its upload time.

Paths measured on the same store in the same run:

- ``listing`` (the baseline, today's): ``plan_arrivals`` lists at most 5,000 keys after its
  cursor per tick and drops what the ledger holds; reconciliation (``ingest_missed``) re-lists
  the whole store against the whole ledger.
- ``notifications``: ``plan_tick`` on the local store's journal / on S3 event notifications in
  SQS, with the sensor's limits, its bounded listing backstop running as it does (with the
  history under ``tenant=`` its pass never ends, so it lists on every tick);
- ``queue only``: the same with the backstop not due (as between passes once settled objects
  live under the archive prefix).

Figures: upload-to-queryable latency p50/p99 and the sensor's cost per tick (wall seconds, the
ledger lookups' share, list requests, keys listed, queue requests and messages), each path's
ratio to the listing on the same store; then ingest runs fed by the SQS queue with 1, 2 and 4
concurrent tenant runs (rows/s and batches/s; PostgreSQL catalog, as bench_tenant_scaling).
On moto, ListObjectsV2 sorts the whole bucket per request, so a listing's *time* there is
moto's; its requests and keys are what S3 would be asked. The listing replay is not run on
moto (its 15-minute re-list of 1,000 pages would take hours there): only a few ticks are timed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from bench.harness import Result
from edge_sync.objectstore import LocalObjectStore, ObjectStore
from edge_sync.objectstore_journal import enable_journal, rotate_journal
from edge_sync.objectstore_s3 import S3ObjectStore
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.simulator.arrival_clock import (
    CountingStore,
    ListingArrivals,
    NotificationArrivals,
    Replay,
    StreamFleet,
    TickCost,
    replay,
)
from edgeplat.simulator.settled_store import SettledLayout, fill_ledger, fill_local_store
from edgeplat.simulator.tenant_batches import write_tenant_batches
from edgeplat.sync.arrival_queue import DEFAULT_VISIBILITY_TIMEOUT_S
from edgeplat.sync.arrival_queue_journal import JournalArrivalQueue
from edgeplat.sync.arrival_queue_sqs import SqsArrivalQueue
from edgeplat.sync.env import SyncEnv, SyncSettings
from edgeplat.sync.ledger import settled_keys
from edgeplat.sync.queue_arrivals import DEFAULT_MAX_MESSAGES, QueueCursor, plan_tick
from edgeplat.sync.tenant_workers import ingest_tenants
from pipelines.schedules import reconcile_every_15_minutes
from pipelines.sensors.batch_arrival import (
    BACKSTOP_INTERVAL_S,
    KEYS_PER_RUN,
    MAX_KEYS_PER_TICK,
    batch_arrival_sensor,
)
from tests.support.moto_prefilled import running_prefilled_moto
from tests.support.moto_server import moto_client
from tests.support.tenant_ingest import S3_CREDS, postgres_s3_ingest

FULL = SettledLayout(tenants=4, devices_per_tenant=2_500, batches_per_device=100)
QUICK = SettledLayout(tenants=4, devices_per_tenant=50, batches_per_device=100)
STREAM_DEVICES = 64
RECONCILE_PERIOD_S = 15 * 60.0
# moto sorts the whole bucket per list request (~12 s a request at 1,000,000 objects on this
# machine): a listing replay there (a full re-list every 15 min) would take hours, so on moto
# the listing paths are timed for this many ticks and only the queue path is replayed
MOTO_TICKS = 3
NEVER = 10**9  # a backstop first due this far into the replay: not within it
WORKERS = (1, 2, 4)


def sensor_interval_s() -> float:
    return float(batch_arrival_sensor.minimum_interval_seconds)


def reconcile_period_s() -> float:
    if str(reconcile_every_15_minutes.cron_schedule) != "*/15 * * * *":
        raise ValueError(
            f"reconciliation cron is {reconcile_every_15_minutes.cron_schedule!r}: update the bench"
        )
    return RECONCILE_PERIOD_S


@contextmanager
def scratch(prefix: str):
    """A scratch folder, on tmpfs when the machine has one (a million inodes fill fast there)."""
    base = os.environ.get("EDGEPLAT_BENCH_TMP") or ("/dev/shm" if Path("/dev/shm").is_dir() else None)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def lakehouse(root: Path, layout: SettledLayout) -> tuple[Lakehouse, float]:
    lake = Lakehouse(LakehouseConfig(catalog=f"sqlite:{root}/catalog.sqlite", data_path=f"{root}/lake/"))
    lake.ensure_schema()
    return lake, fill_ledger(lake, layout)


def sync_env(lake: Lakehouse, store: ObjectStore, fleet: StreamFleet) -> SyncEnv:
    return SyncEnv(lake, store, fleet.keyring, fleet.registry, settings=SyncSettings(max_drift_ms=10**15))


def replay_path(env: SyncEnv, path, fleet: StreamFleet, count: int, seed: int) -> Replay:
    uploads = fleet.uploads(count, reconcile_period_s(), seed=seed)
    started = time.perf_counter()
    got = replay(env, path, uploads, interval=sensor_interval_s(), backstop_period=reconcile_period_s())
    with env.lakehouse.session(read_only=True) as con:
        done = settled_keys(con, [u.key for u in uploads], pending_too=False)
    if len(done) != len(uploads):
        raise AssertionError(
            f"{path.name}: {len(uploads) - len(done)} uploads not in the ledger after the replay"
        )
    print(f"  {path.name}: {describe(got)}; replay {time.perf_counter() - started:.0f} s", flush=True)
    return got


def describe(got: Replay) -> str:
    return (
        f"p50 {got.percentile(50):.0f} s, p99 {got.percentile(99):.0f} s, {len(got.latencies)} objects "
        f"({got.by_backstop} via the backstop, {len(got.backstops)} backstop run(s) "
        f"{', '.join(f'{s:.1f}' for s in got.backstops)} s), {len(got.run_seconds)} ingest runs of "
        f"{sum(got.run_seconds) / max(1, len(got.run_seconds)):.2f} s; per tick {tick_note(got.ticks)}"
    )


def journal_queue(root: Path, visibility_s: float):
    def open_queue(position, now):
        return JournalArrivalQueue(root, position, visibility_timeout_s=visibility_s, now=now)

    return open_queue


def local_side(layout: SettledLayout, stream: int) -> dict[str, Replay]:
    with scratch("bench-arrival-local-") as root:
        fill_s = fill_local_store(root / "objects", layout)
        lake, ledger_s = lakehouse(root, layout)
        print(
            f"local store: {layout.count:,} settled objects in {fill_s:.1f} s, ledger in {ledger_s:.1f} s",
            flush=True,
        )
        enable_journal(root / "objects")
        fleet = StreamFleet(root, layout, STREAM_DEVICES)
        store = CountingStore(LocalObjectStore(root / "objects", fsync=False))
        env = sync_env(lake, store, fleet)
        out = {"listing": replay_path(env, listing_path(env, store), fleet, stream, seed=1)}
        queue = journal_queue(root / "objects", DEFAULT_VISIBILITY_TIMEOUT_S)
        rotate_journal(root / "objects")  # each path reads only the notifications of its own stream
        out["notifications"] = replay_path(env, notification_path(env, store, queue), fleet, stream, seed=2)
        quiet = notification_path(
            env, store, queue, name="notifications, backstop not due", backstop_from=NEVER, reconcile=False
        )
        rotate_journal(root / "objects")
        out["queue only"] = replay_path(env, quiet, fleet, stream, seed=3)
        return out


def listing_path(env: SyncEnv, store: CountingStore) -> ListingArrivals:
    return ListingArrivals(env, store, max_keys=MAX_KEYS_PER_TICK, keys_per_run=KEYS_PER_RUN)


def notification_path(env: SyncEnv, store: CountingStore, queue, **options) -> NotificationArrivals:
    """The notification path with the sensor's limits."""
    return NotificationArrivals(
        env,
        store,
        queue,
        max_messages=DEFAULT_MAX_MESSAGES,  # the notifications resource's default
        backstop_keys=MAX_KEYS_PER_TICK,
        backstop_interval_s=BACKSTOP_INTERVAL_S,
        keys_per_run=KEYS_PER_RUN,
        **options,
    )


class SqsRequests:
    """Counts the SQS HTTP requests boto3 sends (a botocore event on the default session)."""

    def __init__(self) -> None:
        import boto3

        self.count = 0
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        boto3.DEFAULT_SESSION.events.register("before-send.sqs", self._sent)

    def _sent(self, **_: object) -> None:
        self.count += 1


def notified_bucket(endpoint: str, bucket: str, prefix: str) -> str:
    """An SQS queue the bucket sends its ``.batch`` object-created events under ``prefix`` to; its URL."""
    sqs, s3 = moto_client(endpoint, "sqs"), moto_client(endpoint, "s3")
    url = sqs.create_queue(QueueName=f"{bucket}-arrivals")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rules = [{"Name": "prefix", "Value": f"{prefix}/"}, {"Name": "suffix", "Value": ".batch"}]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"], "Filter": {"Key": {"FilterRules": rules}}}
            ]
        },
    )
    return url


def sqs_queue(url: str, endpoint: str, bucket: str, prefix: str, visibility_s: int = 1):
    """The SQS arrival queue; in the replay with a visibility timeout of 1 s of real time: a pending
    message comes back on the next replayed tick, by when its run has committed (runs commit
    between ticks here), and is acked then."""

    def open_queue(position, now):
        return SqsArrivalQueue(
            url,
            bucket=bucket,
            prefix=prefix,
            endpoint_url=endpoint,
            visibility_timeout_s=visibility_s,
            wait_time_s=0,
            **S3_CREDS,
        )

    return open_queue


def s3_side(layout: SettledLayout, stream: int, tenant_devices: int, tenant_rows: int) -> dict[str, object]:
    bucket, prefix = f"bench-{uuid.uuid4().hex[:10]}", "fleet"
    with (
        scratch("bench-arrival-s3-") as root,
        running_prefilled_moto(layout, bucket, prefix) as (endpoint, up_s),
    ):
        lake, ledger_s = lakehouse(root, layout)
        print(
            f"moto S3: {layout.count:,} settled objects filled and served in {up_s:.1f} s, ledger in {ledger_s:.1f} s",
            flush=True,
        )
        url = notified_bucket(endpoint, bucket, prefix)
        requests = SqsRequests()
        fleet = StreamFleet(root, layout, STREAM_DEVICES)
        store = CountingStore(S3ObjectStore(bucket, prefix, endpoint_url=endpoint, **S3_CREDS))
        env = sync_env(lake, store, fleet)
        listing = listing_path(env, store)
        out: dict[str, object] = {
            "listing ticks": [listing.tick(i * sensor_interval_s()).cost for i in range(MOTO_TICKS)]
        }
        queue = sqs_queue(url, endpoint, bucket, prefix)
        hot = notification_path(env, store, queue, requests=lambda: requests.count, reconcile=False)
        out["notification ticks"] = [hot.tick(i * sensor_interval_s()).cost for i in range(MOTO_TICKS)]
        print(
            f"  per tick on moto: listing {mean(out['listing ticks']):.2f} s, notifications (backstop listing "
            f"due) {mean(out['notification ticks']):.2f} s",
            flush=True,
        )
        quiet = notification_path(
            env,
            store,
            queue,
            name="notifications, backstop not due",
            requests=lambda: requests.count,
            backstop_from=NEVER,
            reconcile=False,
        )
        out["queue only"] = replay_path(env, quiet, fleet, stream, seed=3)
        out["tenants"] = tenant_runs(env, endpoint, bucket, prefix, url, tenant_devices, tenant_rows, root)
        store.close()
        return out


def tenant_runs(
    env: SyncEnv, endpoint: str, bucket: str, prefix: str, url: str, devices: int, rows: int, root: Path
) -> dict:
    """Four tenants' new batches, found through the SQS queue, ingested by 1, 2 and 4 concurrent tenant runs.

    The queue is drained with the replay's ledger (the replay's leftovers are settled: acked); the runs
    ingest into a fresh lakehouse per run count (PostgreSQL catalog, data in the bucket)."""
    store = env.store

    def settled(keys: list[str]) -> set[str]:
        with env.lakehouse.session(read_only=True) as con:
            return settled_keys(con, keys)

    batches = write_tenant_batches(
        root / "tenants",
        store,
        tenants=4,
        devices_per_tenant=devices,
        rows_per_device=rows,
        rows_per_batch=600,
    )
    written = sum(map(len, batches.keys_by_tenant.values()))
    want = {t: set(ks) for t, ks in batches.keys_by_tenant.items()}
    keys_by_tenant: dict[str, set[str]] = {}
    # a pending message stays hidden while the drain goes on (moto hands out the oldest visible
    # messages first: with a 1 s timeout a long drain would see the head again and never the tail)
    queue, started = sqs_queue(url, endpoint, bucket, prefix, visibility_s=60), time.perf_counter()
    cursor = QueueCursor(backstop_due=time.time() + NEVER)
    while keys_by_tenant != want and time.perf_counter() - started < 120:
        plan = plan_tick(store, lambda p: queue(p, time.time), cursor, settled=settled, now=time.time())
        cursor = plan.cursor
        for r in plan.runs:
            keys_by_tenant.setdefault(r.tenant_id, set()).update(r.keys)
    drained = time.perf_counter() - started
    if keys_by_tenant != want:
        named = set().union(*keys_by_tenant.values()) if keys_by_tenant else set()
        raise AssertionError(
            f"the queue named {len(named & set().union(*want.values()))} of the {written} new objects "
            f"and {len(named - set().union(*want.values()))} others"
        )
    per_second: dict[int, tuple[float, float]] = {}
    for workers in WORKERS:
        with postgres_s3_ingest(
            endpoint,
            bucket,
            batches,
            lake_prefix=f"lake-{workers}",
            schema_prefix="edgeplat_bench",
            objects_prefix=prefix,
        ) as (lake, spec):
            seconds, reports = ingest_tenants(
                spec, {t: sorted(ks) for t, ks in keys_by_tenant.items()}, workers
            )
            with lake.session(read_only=True) as con:
                stored = con.execute("SELECT count(*) FROM telemetry").fetchone()[0]
            if stored != batches.unique_rows:
                raise AssertionError(f"{workers} runs stored {stored} rows, not {batches.unique_rows}")
            per_second[workers] = (stored / seconds, written / seconds)
            print(
                f"  {workers} concurrent tenant run(s): {stored:,} rows, {written} objects in {seconds:.2f} s",
                flush=True,
            )
    return {
        "per_second": per_second,
        "rows": batches.unique_rows,
        "objects": written,
        "drained": drained,
    }


def mean(ticks: list[TickCost], what: str = "seconds") -> float:
    return sum(getattr(t, what) for t in ticks) / len(ticks)


def tick_note(ticks: list[TickCost]) -> str:
    return (
        f"{mean(ticks):.3f} s ({mean(ticks, 'ledger_seconds'):.3f} s of it asking the ledger), "
        f"{mean(ticks, 'messages'):.1f} messages, {mean(ticks, 'list_requests'):.1f} list + {mean(ticks, 'queue_requests'):.1f} "
        f"queue requests, {mean(ticks, 'keys_listed'):,.0f} keys listed"
    )


def run(quick: bool) -> list[Result]:
    layout = QUICK if quick else FULL
    stream = 40 if quick else 240
    tenant_devices, tenant_rows = (4, 1_200) if quick else (10, 1_800)
    size = f"{layout.count:,} settled objects + {stream} new"
    load = f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}"
    local = local_side(layout, stream)
    s3 = s3_side(layout, stream, tenant_devices, tenant_rows)
    interval = sensor_interval_s()
    results = []
    base = local["listing"]
    for q in (50, 99):
        results.append(
            Result(
                name=f"arrival latency p{q}, listing (local, {layout.count:,} settled)",
                value=base.percentile(q),
                unit="s",
                baseline="sensor interval",
                baseline_value=interval,
                target=None,
                higher_is_better=False,
                note=f"{size}; {describe(base)}; {load}",
            )
        )
        for name in ("notifications", "queue only"):
            got = local[name]
            results.append(
                Result(
                    name=f"arrival latency p{q}, {name} (local, {layout.count:,} settled)",
                    value=got.percentile(q),
                    unit="s",
                    baseline="listing, same store and run",
                    baseline_value=base.percentile(q),
                    target=None,
                    higher_is_better=False,
                    note=f"{size}; {describe(got)}",
                )
            )
        got = s3["queue only"]
        results.append(
            Result(
                name=f"arrival latency p{q}, notifications via SQS (moto, {layout.count:,} settled)",
                value=got.percentile(q),
                unit="s",
                baseline="listing on the local store (moto: not replayable, see note)",
                baseline_value=base.percentile(q),
                target=None,
                higher_is_better=False,
                note=f"{size}; {describe(got)}; the listing replay on moto needs a full re-list of the bucket "
                "every 15 min (1,000 requests, each sorting the whole bucket on moto)",
            )
        )
    for name in ("notifications", "queue only"):
        got = local[name]
        results.append(
            Result(
                name=f"sensor tick, {name} (local, {layout.count:,} settled)",
                value=got.mean_tick(),
                unit="s",
                baseline="listing tick, same store and run",
                baseline_value=base.mean_tick(),
                target=None,
                higher_is_better=False,
                note=f"per tick: {tick_note(got.ticks)}; listing: {tick_note(base.ticks)}",
            )
        )
    for name, ticks in (("notifications", s3["notification ticks"]), ("queue only", s3["queue only"].ticks)):
        results.append(
            Result(
                name=f"sensor tick, {name} (moto S3, {layout.count:,} settled)",
                value=mean(ticks),
                unit="s",
                baseline="listing tick, same store and run",
                baseline_value=mean(s3["listing ticks"]),
                target=None,
                higher_is_better=False,
                note=f"per tick: {tick_note(ticks)}; listing: {tick_note(s3['listing ticks'])}; "
                "moto sorts the whole bucket per ListObjectsV2 request (S3 does not)",
            )
        )
    tenants = s3["tenants"]
    one_rows, one_objects = tenants["per_second"][1]
    for workers in WORKERS:
        rows_s, objects_s = tenants["per_second"][workers]
        results.append(
            Result(
                name=f"queue-fed ingest, {workers} concurrent tenant run(s) (PostgreSQL catalog, moto S3)",
                value=rows_s,
                unit="rows/s",
                baseline="1 run, same data",
                baseline_value=one_rows,
                target=None,
                note=f"{objects_s:.1f} batches/s (1 run: {one_objects:.1f}); {tenants['rows']:,} rows in "
                f"{tenants['objects']} objects of 4 tenants, named by the SQS queue (drained in "
                f"{tenants['drained']:.1f} s); {load}",
            )
        )
    return results
