"""Time from a batch object's upload to its rows being queryable, with the arrival sensor at its default interval.

Set-up: a fleet of 100 devices (quick: 20) in 3 tenants with real identities, keyring,
registry, local object store and DuckLake lakehouse, a real Dagster instance (SQLite
storage in a temporary directory) and the project's sync definitions and resources.
A first hour of batches goes through a sensor tick and its runs (warm-up: the sensor has
a cursor and the lakehouse holds data, as in steady state).

The measured arrival, the typical one: every device uploads its next device-hour batch
(3,600 telemetry rows). Then, measured with the real code:

1. ``tick``: ``batch_arrival_sensor`` evaluated once (``build_sensor_context`` with the
   instance and the resources), returning its run requests;
2. ``runs``: each run request executed in process with its run config (the
   ``ingest_batches`` job the sensor targets, ``execute_in_process`` on the instance), one
   after another; an object's run time is the time until *its* run has committed. The
   instance would run the tenants' runs side by side (one per tenant, up to 4), so running
   them in sequence is the conservative reading;
3. objects the tick did not plan wait for the reconciliation schedule, which re-lists the
   store against the ledger: its job (``reconcile_sync``) is executed the same way and timed;
4. ``worker``: a run is launched in a fresh process that loads the code location: measured
   as a new interpreter importing ``pipelines.definitions``;
5. visibility: a new read-only lakehouse connection (an analyst's) counts the rows right
   after the last commit; all of them must be there (a commit is visible at once).

Waits on timers are not slept through but taken at their configured values: the next tick
comes within the sensor's ``minimum_interval_seconds`` (uniform arrival: mean interval/2,
worst a whole interval), the next reconciliation within its cron period (same reading), and
the queued run coordinator dequeues every 5 s (Dagster's default
``dequeue_interval_seconds``: mean 2.5 s, worst 5 s). Per object:

    seen by the tick:  period/2 (worst: period) of the sensor + tick + dequeue + worker + its run's commit
    missed by it:      period/2 (worst: period) of the schedule + dequeue + worker + reconciliation run

Reported: the mean over the arrival's objects and the worst case. Baseline: the sensor
interval itself; ratio = latency / interval (no target: it is a measurement).

What it showed first (the listing is lexicographic, strictly after the cursor, and keys are
``tenant=/device=/stream=/<seq range>``): after a tick had caught up, the cursor sat on
the last device's key, so a device's next batch sorted *before* it for every device but
the last; the sensor saw only those and the rest waited for reconciliation (mean 463 s,
15x the interval). The planner now starts a new pass when it reaches the end of the store
(``edgeplat.sync.arrivals``), so the next tick sees every new object while the store holds
fewer than ``MAX_KEYS_PER_TICK`` keys, and within ``keys / MAX_KEYS_PER_TICK`` ticks beyond.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa

from bench.harness import BENCH_DIR, Result, reference_telemetry
from cli.runs import QUIET_LOGS
from edge_sync.batch import write_batch
from edge_sync.identity import DeviceIdentity, LocalDeviceRegistry
from edge_sync.keys import LocalKeyring
from edge_sync.objectstore import LocalObjectStore
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from pipelines.definitions import sync_definitions
from pipelines.resources import embedded_sync_resources
from pipelines.schedules import reconcile_every_15_minutes
from pipelines.sensors import batch_arrival

DEQUEUE_INTERVAL_S = 5.0  # QueuedRunCoordinator's default dequeue_interval_seconds
REPO = BENCH_DIR.parent


def sensor_interval_s() -> float:
    return float(batch_arrival.batch_arrival_sensor.minimum_interval_seconds)


def schedule_period_s() -> float:
    cron = reconcile_every_15_minutes.cron_schedule
    m = re.fullmatch(r"\*/(\d+) \* \* \* \*", str(cron))
    if not m:
        raise ValueError(
            f"reconciliation cron {cron!r} is not '*/N * * * *': teach schedule_period_s its period"
        )
    return int(m[1]) * 60.0


class Fleet:
    """Devices, their keys and the object store; ``upload(hour)`` puts every device's batch of that hour."""

    def __init__(self, root: Path, devices: int) -> None:
        self.root = root
        self.keys = LocalKeyring(root / "keys")
        self.registry = LocalDeviceRegistry(root / "devices")
        self.store = LocalObjectStore(root / "objects", fsync=False)
        table = reference_telemetry(devices=devices, hours=2.0, tenants=3, seed=7)
        table = table.sort_by([("tenant_id", "ascending"), ("device_id", "ascending"), ("seq", "ascending")])
        tenants = table.column("tenant_id").to_numpy(zero_copy_only=False)
        device_ids = table.column("device_id").to_numpy(zero_copy_only=False)
        bounds = np.flatnonzero((tenants[1:] != tenants[:-1]) | (device_ids[1:] != device_ids[:-1])) + 1
        self.hours: list[list[tuple[DeviceIdentity, pa.Table]]] = [[], []]
        for lo, hi in zip([0, *bounds], [*bounds, table.num_rows], strict=True):
            ident = DeviceIdentity.generate(str(tenants[lo]), str(device_ids[lo]))
            self.registry.register(ident.tenant_id, ident.device_id, ident.public_key_bytes())
            half = (hi - lo) // 2
            self.hours[0].append((ident, table.slice(lo, half)))
            self.hours[1].append((ident, table.slice(lo + half, hi - lo - half)))

    def encode(self, hour: int) -> list[tuple[str, bytes, int]]:
        out = []
        for ident, rows in self.hours[hour]:
            enc = write_batch(
                rows,
                tenant_id=ident.tenant_id,
                device_id=ident.device_id,
                stream="telemetry",
                key_service=self.keys,
                identity=ident,
                created_ms=0,
            )
            out.append((enc.key, enc.data, rows.num_rows))
        return out

    def upload(self, encoded: list[tuple[str, bytes, int]]) -> None:
        for key, data, _ in encoded:
            self.store.put(key, data)


def resources(root: Path, lake: Lakehouse) -> dict:
    return embedded_sync_resources(
        catalog=lake.config.catalog,
        data_path=lake.config.data_path,
        objects=str(root / "objects"),
        keys=str(root / "keys"),
        registry=str(root / "devices"),
        platform_key=str(root / "platform.pem"),
    )


def tick_and_run(
    defs: dg.Definitions, instance: dg.DagsterInstance, res: dict, cursor: str | None
) -> tuple[float, dict[str, float], str | None]:
    """One real sensor tick, then its runs in sequence: (tick s, {object key: commit time after the tick}, cursor)."""
    t0 = time.perf_counter()
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=res)
    result = batch_arrival.batch_arrival_sensor(ctx)
    tick = time.perf_counter() - t0
    job = defs.resolve_job_def("ingest_batches")
    done, t1 = {}, time.perf_counter()
    for request in result.run_requests or []:
        run = job.execute_in_process(
            run_config={**request.run_config, **QUIET_LOGS}, instance=instance, tags=request.tags
        )
        if not run.success:
            raise RuntimeError(f"ingest run for {request.run_key} failed")
        at = time.perf_counter() - t1
        done.update({k: at for k in request.run_config["ops"]["ingested_batches"]["config"]["object_keys"]})
    return tick, done, result.cursor


def reconcile_run(defs: dg.Definitions, instance: dg.DagsterInstance) -> float:
    t0 = time.perf_counter()
    if (
        not defs.resolve_job_def("reconcile_sync")
        .execute_in_process(run_config=QUIET_LOGS, instance=instance)
        .success
    ):
        raise RuntimeError("the reconciliation run failed")
    return time.perf_counter() - t0


def worker_start_s(home: Path) -> float:
    """A fresh interpreter loading the code location, as the run launcher's worker process does."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import pipelines.definitions"],
        cwd=REPO,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "EDGEPLAT_HOME": str(home)},
    )
    return time.perf_counter() - t0


def run(quick: bool) -> list[Result]:
    devices = 20 if quick else 100
    interval = sensor_interval_s()
    root = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    try:
        t0 = time.perf_counter()
        fleet = Fleet(root, devices)
        warm, arrival = fleet.encode(0), fleet.encode(1)
        print(f"fleet of {devices} devices and its batches in {time.perf_counter() - t0:.1f} s", flush=True)
        lake = Lakehouse(LakehouseConfig(catalog=f"sqlite:{root}/catalog.sqlite", data_path=f"{root}/lake/"))
        lake.ensure_schema()
        res = resources(root, lake)
        defs = sync_definitions(res)
        (root / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            fleet.upload(warm)
            _, _, cursor = tick_and_run(defs, instance, res, None)
            fleet.upload(arrival)
            tick, done, _ = tick_and_run(defs, instance, res, cursor)
            missed = [k for k, _, _ in arrival if k not in done]
            t_reconcile = reconcile_run(defs, instance) if missed else 0.0
        with lake.session(read_only=True) as con:
            stored = con.execute("SELECT count(*) FROM telemetry").fetchone()[0]
        expected = sum(n for _, _, n in warm) + sum(n for _, _, n in arrival)
        assert stored == expected, (stored, expected)  # every row of the arrival is queryable now
        worker = min(worker_start_s(root / "home") for _ in range(2))
        period = schedule_period_s()
        mean_parts, worst = [], 0.0
        for key, _, _ in arrival:
            if key in done:
                base = tick + DEQUEUE_INTERVAL_S / 2 + worker + done[key]
                mean_parts.append(interval / 2 + base)
                worst = max(worst, interval + base + DEQUEUE_INTERVAL_S / 2)
            else:
                base = DEQUEUE_INTERVAL_S / 2 + worker + t_reconcile
                mean_parts.append(period / 2 + base)
                worst = max(worst, period + base + DEQUEUE_INTERVAL_S / 2)
        mean = sum(mean_parts) / len(mean_parts)
        # what an object the tick does see waits (the sensor path alone)
        path_mean = (
            interval / 2 + DEQUEUE_INTERVAL_S / 2 + tick + worker + sum(done.values()) / max(1, len(done))
        )
        path_worst = interval + DEQUEUE_INTERVAL_S + tick + worker + max(done.values(), default=0.0)
        seen = len(arrival) - len(missed)
        rows = sum(n for _, _, n in arrival)
        last_run = max(done.values(), default=0.0)
        print(
            f"tick {tick:.2f} s planned {seen} of {len(arrival)} objects (runs done {last_run:.2f} s after it); "
            f"reconciliation run {t_reconcile:.2f} s; worker start {worker:.2f} s; "
            f"mean {mean:.1f} s, worst {worst:.1f} s (through the sensor alone: mean {path_mean:.1f} s, worst "
            f"{path_worst:.1f} s); sensor interval {interval:.0f} s, schedule {period:.0f} s",
            flush=True,
        )
        note = (
            f"{devices} devices, {len(arrival)} objects, {rows:,} rows; the tick saw {seen} of them "
            f"(tick {tick:.2f} s, its runs committed within {last_run:.2f} s), the other {len(missed)} waited "
            f"for reconciliation (every {period / 60:.0f} min, run {t_reconcile:.2f} s); run worker start "
            f"{worker:.2f} s, dequeue {DEQUEUE_INTERVAL_S:.0f} s; through the sensor alone: mean "
            f"{path_mean:.1f} s, worst {path_worst:.1f} s"
        )
        return [
            Result(
                f"ingest_latency_{kind}",
                value,
                "s",
                f"sensor interval ({interval:.0f} s)",
                interval,
                None,
                higher_is_better=False,
                note=note,
            )
            for kind, value in (("mean", mean), ("worst", worst))
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
