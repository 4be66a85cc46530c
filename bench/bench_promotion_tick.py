"""One promotion-sensor tick: 10 active rollouts over 100k devices and 50M health rows.

The tick is ``Controller.tick_all`` exactly as the promotion sensor runs it: read every
active rollout's log, the target devices, the devices sent so far, place devices in
phases (hash buckets), aggregate canary and baseline health over the gate window, run the
gate statistics and decide. Measured while the rollouts bake (every tick evaluates the
gates, nothing changes, so it repeats), plus one tick that promotes all ten (deploying
phase 1 through a backend that only counts). The baseline is a plain DuckDB scan over the
same health rows in the same lakehouse: ``SELECT device_id, avg(error_rate) FROM health
GROUP BY 1``. Quick mode: 10k devices and 2M rows. The tick must stay far below the
sensor's 60 s timeout (figure in the note).
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.harness import Result, best_of
from edgeplat.backends.base import BackendStatus, DeployResult, FleetBackend
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.events import Kind
from edgeplat.rollouts.spec import load_spec
from edgeplat.rollouts.store import RolloutStore

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
ROLLOUTS = 10
TENANTS = 10


class CountingBackend(FleetBackend):
    """Accepts every deploy and rollback and only counts devices (the bench times our side)."""

    name = "counting"

    def __init__(self) -> None:
        self.deployed = 0

    def _deploy(self, devices, skipped, release, rollout_id, phase, slot) -> DeployResult:
        self.deployed += len(devices)
        keys = tuple(d.key for d in devices)
        return DeployResult(self.name, "deploy", rollout_id, phase, keys, keys)

    def rollback(self, devices, *, rollout_id, to) -> DeployResult:
        keys = tuple(d.key for d in devices)
        return DeployResult(self.name, "rollback", rollout_id, None, keys, keys)

    def status(self, rollout_id=None) -> BackendStatus:
        return BackendStatus(self.name, rollout_id, ())


def _spec(i: int):
    return load_spec(
        {
            "name": f"app-{i}",
            "release": {
                "name": f"app-{i}",
                "version": f"2.{i}.0",
                "greengrass": {"component": f"com.acme.App{i}", "version": f"2.{i}.0"},
                "iot_edge": {"module": f"app{i}", "image": f"acr.example.io/app{i}:2.{i}.0"},
            },
            "target": {"tenants": [f"tenant-{t}" for t in range(TENANTS)]},
            "strategy": {
                "type": "canary",
                "phases": [
                    {"percent": 1, "bake": "1h"},
                    {"percent": 10, "bake": "1h"},
                    {"percent": 100, "bake": "1h"},
                ],
            },
            "gates": [
                {"metric": "error_rate", "max_ratio": 1.5, "min_devices": 10, "min_samples": 300},
                {"metric": "crash_count", "max": 1.0, "min_devices": 10, "min_samples": 300},
                {"metric": "cpu_pct", "max_increase": 15, "min_devices": 10, "min_samples": 300},
            ],
            "progress_deadline": "6h",
            "selection": {"salt": "per_rollout", "stratify_by": "tenant"} if i % 2 else {},
        }
    )


def _build(root: Path, devices: int, rows: int) -> tuple[Controller, datetime, float]:
    (root / "data").mkdir(parents=True)
    lake = Lakehouse(LakehouseConfig(f"sqlite:{root}/catalog.sqlite", f"{root}/data/"))
    lake.ensure_schema()
    minutes = max(1, rows // devices)
    deploy_at = T0 + timedelta(minutes=minutes - 120)  # the last two hours are after phase 0's deploy
    with lake.session() as con:
        con.execute(
            f"""INSERT INTO devices (tenant_id, device_id, platform, tags, registered_at, status, reported_version,
                                     updated_at)
                SELECT 'tenant-' || (i % {TENANTS}), 'dev-' || lpad(i::VARCHAR, 7, '0'),
                       CASE WHEN i % 2 = 0 THEN 'greengrass' ELSE 'iot_edge' END, '{{}}', ?, 'online', '1.0.0', ?
                FROM range({devices}) t(i)""",
            [T0, T0],
        )
    store = RolloutStore(lake)
    ctl = Controller(store, CountingBackend())
    ids = [
        ctl.launch(_spec(i), actor="bench", rollout_id=f"app-{i}-bench", now=deploy_at)
        for i in range(ROLLOUTS)
    ]
    ctl.tick_all(deploy_at)  # deploys phase 0 of every rollout
    t_gen = time.perf_counter()
    with lake.session() as con:
        # Which release each device runs after the deploy (the first rollout that reached it).
        con.execute(
            """CREATE TEMP TABLE canary AS
                SELECT tenant_id, device_id, arg_min(r.release_version, d.rollout_id) AS version
                FROM rollout_devices d JOIN (SELECT DISTINCT rollout_id, release_version FROM rollouts) r
                     USING (rollout_id)
                WHERE d.rollout_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL""",
            [ids],
        )
        con.execute(
            "UPDATE devices SET reported_version = c.version FROM canary c "
            "WHERE devices.tenant_id = c.tenant_id AND devices.device_id = c.device_id"
        )
        con.execute(
            f"""INSERT INTO health (tenant_id, device_id, stream, seq, hlc, node_id, ts, version, slot,
                                    desired_revision, error_rate, requests, errors, crash_count, cpu_pct, mem_mb,
                                    heartbeat, queue_depth, day)
                SELECT g.tenant_id, g.device_id, 'health', g.m, g.m, g.device_id, g.ts,
                       CASE WHEN g.ts >= ? AND c.version IS NOT NULL THEN c.version ELSE '1.0.0' END,
                       'a', 1, g.errors / 60.0, 60, g.errors, (random() < 0.0003)::BIGINT,
                       20 + 10 * random(), 300 + 20 * random(), 1, (random() * 4)::BIGINT,
                       CAST(timezone('UTC', g.ts) AS DATE)
                FROM (SELECT 'tenant-' || (r % {TENANTS}) AS tenant_id, 'dev-' || lpad((r % {devices})::VARCHAR, 7, '0')
                             AS device_id, r // {devices} AS m,
                             ?::TIMESTAMPTZ + to_minutes((r // {devices})::BIGINT) AS ts,
                             (random() < 0.01)::BIGINT + (random() < 0.002)::BIGINT AS errors
                      FROM range({devices * minutes}) t(r)) g
                LEFT JOIN canary c USING (tenant_id, device_id)""",
            [deploy_at, T0],
        )
    gen_s = time.perf_counter() - t_gen
    ctl.tick_all(deploy_at + timedelta(minutes=20))  # devices acknowledged: every rollout starts baking
    return ctl, deploy_at, gen_s


def run(quick: bool) -> list[Result]:
    devices, rows = (10_000, 2_000_000) if quick else (100_000, 50_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-tick-") as tmp:
        ctl, deploy_at, gen_s = _build(Path(tmp), devices, rows)
        lake = ctl.store.lake
        with lake.session(read_only=True) as con:
            n = con.execute("SELECT count(*) FROM health").fetchone()[0]
            baseline = best_of(
                lambda: con.execute(
                    "SELECT device_id, avg(error_rate) FROM health GROUP BY 1"
                ).fetch_arrow_table(),
                2,
            )
        baking = deploy_at + timedelta(minutes=50)
        results = []
        tick = best_of(lambda: ctl.tick_all(baking), 2)
        statuses = {r.status for r in ctl.tick_all(baking)}
        t0 = time.perf_counter()
        promoted = ctl.tick_all(deploy_at + timedelta(minutes=115))  # every bake is over
        promote_s = time.perf_counter() - t0
        kinds = [e.kind for r in promoted for e in r.appended]
        results.append(
            Result(
                "promotion tick, 10 rollouts baking (gates evaluated)",
                tick,
                "s",
                "DuckDB scan avg(error_rate) GROUP BY device over the same health rows",
                baseline,
                None,
                higher_is_better=False,
                note=f"{devices} devices, {n} health rows; tick {tick:.2f}s vs the 60 s sensor timeout; "
                f"statuses {sorted(statuses)}; health generated in {gen_s:.0f}s",
            )
        )
        results.append(
            Result(
                "promotion tick that promotes 10 rollouts",
                promote_s,
                "s",
                "same DuckDB scan",
                baseline,
                None,
                higher_is_better=False,
                note=f"{kinds.count(Kind.PROMOTE)} promotions, {ctl.backend.deployed} devices sent in total; "
                f"{promote_s:.2f}s vs the 60 s sensor timeout",
            )
        )
        return results
