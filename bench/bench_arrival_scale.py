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

Figures: upload-to-queryable latency p50/p99 and the sensor's cost per tick (wall seconds,
list requests, keys listed). On moto, ListObjectsV2 sorts the whole bucket per request, so a
listing's *time* there is moto's; its requests and keys are what S3 would be asked.
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
from edge_sync.objectstore_s3 import S3ObjectStore
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.simulator.arrival_clock import (
    CountingStore,
    ListingArrivals,
    Replay,
    StreamFleet,
    TickCost,
    replay,
)
from edgeplat.simulator.settled_store import SettledLayout, fill_ledger, fill_local_store
from edgeplat.sync.env import SyncEnv, SyncSettings
from edgeplat.sync.ledger import settled_keys
from pipelines.schedules import reconcile_every_15_minutes
from pipelines.sensors.batch_arrival import KEYS_PER_RUN, MAX_KEYS_PER_TICK, batch_arrival_sensor
from tests.support.moto_prefilled import running_prefilled_moto
from tests.support.moto_server import MOTO_CREDENTIALS

CREDS = {
    "access_key_id": MOTO_CREDENTIALS["aws_access_key_id"],
    "secret_access_key": MOTO_CREDENTIALS["aws_secret_access_key"],
}
FULL = SettledLayout(tenants=4, devices_per_tenant=2_500, batches_per_device=100)
QUICK = SettledLayout(tenants=4, devices_per_tenant=50, batches_per_device=100)
STREAM_DEVICES = 64
RECONCILE_PERIOD_S = 15 * 60.0
# moto sorts the whole bucket per list request: a 1,000,000-object listing baseline replay would
# take about an hour of moto's time, so on S3 the listing is measured for this many ticks only
MOTO_LISTING_TICKS = 3


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
    print(
        f"  {path.name}: {count} uploads, {len(got.ticks)} ticks, p50 {got.percentile(50):.1f} s, "
        f"p99 {got.percentile(99):.1f} s, {got.by_backstop} by the backstop "
        f"({', '.join(f'{s:.1f}' for s in got.backstops)} s); tick {got.mean_tick():.3f} s, "
        f"{got.mean_tick('list_requests'):.1f} list requests, {got.mean_tick('keys_listed'):,.0f} keys; "
        f"replay {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return got


def describe(got: Replay) -> str:
    return (
        f"p50 {got.percentile(50):.0f} s, p99 {got.percentile(99):.0f} s, {len(got.latencies)} objects "
        f"({got.by_backstop} via the backstop, {len(got.backstops)} backstop run(s) "
        f"{', '.join(f'{s:.1f}' for s in got.backstops)} s); per tick {got.mean_tick():.3f} s, "
        f"{got.mean_tick('list_requests'):.1f} list + {got.mean_tick('queue_requests'):.1f} queue requests, "
        f"{got.mean_tick('keys_listed'):,.0f} keys listed"
    )


def local_side(layout: SettledLayout, stream: int) -> dict[str, Replay]:
    with scratch("bench-arrival-local-") as root:
        fill_s = fill_local_store(root / "objects", layout)
        lake, ledger_s = lakehouse(root, layout)
        print(
            f"local store: {layout.count:,} settled objects in {fill_s:.1f} s, ledger in {ledger_s:.1f} s",
            flush=True,
        )
        fleet = StreamFleet(root, layout, STREAM_DEVICES)
        store = CountingStore(LocalObjectStore(root / "objects", fsync=False))
        env = sync_env(lake, store, fleet)
        return {
            "listing": replay_path(
                env,
                ListingArrivals(env, store, max_keys=MAX_KEYS_PER_TICK, keys_per_run=KEYS_PER_RUN),
                fleet,
                stream,
                seed=1,
            )
        }


def s3_side(layout: SettledLayout, stream: int) -> dict[str, object]:
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    with (
        scratch("bench-arrival-s3-") as root,
        running_prefilled_moto(layout, bucket, "fleet") as (endpoint, up_s),
    ):
        lake, ledger_s = lakehouse(root, layout)
        print(
            f"moto S3: {layout.count:,} settled objects filled and served in {up_s:.1f} s, ledger in {ledger_s:.1f} s",
            flush=True,
        )
        fleet = StreamFleet(root, layout, STREAM_DEVICES)
        store = CountingStore(S3ObjectStore(bucket, "fleet", endpoint_url=endpoint, **CREDS))
        env = sync_env(lake, store, fleet)
        listing = ListingArrivals(env, store, max_keys=MAX_KEYS_PER_TICK, keys_per_run=KEYS_PER_RUN)
        ticks = [listing.tick().cost for _ in range(MOTO_LISTING_TICKS)]
        print(
            f"  listing on moto: {len(ticks)} ticks, {sum(t.seconds for t in ticks) / len(ticks):.2f} s each, "
            f"{sum(t.list_requests for t in ticks) / len(ticks):.1f} requests",
            flush=True,
        )
        store.close()
        return {"listing_ticks": ticks}


def mean(ticks: list[TickCost], what: str = "seconds") -> float:
    return sum(getattr(t, what) for t in ticks) / len(ticks)


def run(quick: bool) -> list[Result]:
    layout = QUICK if quick else FULL
    stream = 40 if quick else 240
    size = f"{layout.count:,} settled objects + {stream} new"
    local = local_side(layout, stream)
    s3 = s3_side(layout, stream)
    base = local["listing"]
    results = [
        Result(
            name=f"arrival latency p{q}, listing (local store)",
            value=base.percentile(q),
            unit="s",
            baseline="sensor interval",
            baseline_value=sensor_interval_s(),
            target=None,
            higher_is_better=False,
            note=f"{size}; {describe(base)}; cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}",
        )
        for q in (50, 99)
    ]
    ticks = s3["listing_ticks"]
    results.append(
        Result(
            name="listing tick on moto S3 vs local",
            value=mean(ticks),
            unit="s",
            baseline="listing tick, local store",
            baseline_value=base.mean_tick(),
            target=None,
            higher_is_better=False,
            note=f"{size}; {mean(ticks, 'list_requests'):.1f} requests, {mean(ticks, 'keys_listed'):,.0f} keys "
            "per tick; moto sorts the whole bucket per ListObjectsV2",
        )
    )
    return results
