"""The metrics exporter's cost per scrape on a large ledger (quick: a tenth of it).

A lakehouse holds 20k devices over 4 tenants and 2 platforms, 1M accepted batches, 20k
quarantined objects, 50k state conflicts and 100 rollouts with 5k events (quick: a tenth).
Reported: one lakehouse read (what a scrape costs every ``--max-age`` seconds) against the
baseline of one ``count(*)`` per table it reads, the least any exporter of these figures
pays; and a scrape served from the cached read against that read (target <= 0.05: a busy
Prometheus costs the lakehouse nothing more). The series count shows labels stay bounded.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from bench.harness import Result, best_of
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.metrics.collector import LakehouseCollector

TABLES = ("devices", "batches", "quarantine", "state_conflicts", "evictions", "rollouts", "rollout_events")


def fill(lake: Lakehouse, scale: int) -> None:
    devices, batches, quarantined, conflicts, events = (
        2_000 * scale,
        100_000 * scale,
        2_000 * scale,
        5_000 * scale,
        500 * scale,
    )

    def unit(con) -> None:
        con.execute(
            "INSERT INTO devices (tenant_id, device_id, platform, status, last_batch_at) "
            "SELECT 't' || (i % 4), 'd' || i, CASE WHEN i % 2 = 0 THEN 'greengrass' ELSE 'iot_edge' END, "
            "CASE WHEN i % 10 = 0 THEN 'offline' ELSE 'online' END, now() - to_seconds(i % 7200) "
            f"FROM range({devices}) r(i)"
        )
        con.execute(
            "INSERT INTO batches (tenant_id, device_id, stream, first_seq, last_seq, row_count, rows_new, "
            "rows_duplicate, ingested_at) SELECT 't' || (i % 4), 'd' || (i % 20000), "
            "['telemetry', 'alerts', 'logs', 'health'][1 + i % 4], i, i + 99, 100, 100 - i % 3, i % 3, now() "
            f"FROM range({batches}) r(i)"
        )
        con.execute(
            "INSERT INTO quarantine (tenant_id, device_id, object_key, reason, deferred, quarantined_at) "
            "SELECT CASE WHEN i % 50 = 0 THEN 'forged-' || i ELSE 't' || (i % 4) END, 'd' || i, 'k' || i, "
            "['bad_signature', 'truncated', 'hlc_too_far_ahead', 'unknown_device'][1 + i % 4], i % 4 = 2, now() "
            f"FROM range({quarantined}) r(i)"
        )
        con.execute(
            "INSERT INTO state_conflicts (tenant_id, device_id, rule) "
            f"SELECT 't' || (i % 4), 'd' || i, ['lww', 'max', 'union'][1 + i % 3] FROM range({conflicts}) r(i)"
        )
        con.execute(
            "INSERT INTO rollouts (tenant_id, rollout_id, name, release_version, spec, status, phase, updated_at) "
            "SELECT 't0', 'r' || i, 'rollout-' || i, '1.' || i, '{}', "
            "CASE WHEN i < 95 THEN 'completed' ELSE 'baking' END, 1, now() - to_days(i % 3) FROM range(100) r(i)"
        )
        con.execute(
            "INSERT INTO rollout_events (tenant_id, rollout_id, event_id, kind, phase, inputs, seq) "
            "SELECT 't0', 'r' || (i % 100), 'e' || i, CASE WHEN i % 5 = 0 THEN 'record_gates' ELSE 'deploy_phase' END, "
            '0, CASE WHEN i % 5 = 0 THEN \'{"gates": {"verdict": "pass", "checks": []}}\' ELSE \'{}\' END, i '
            f"FROM range({events}) r(i)"
        )

    lake.write(unit, what="bench fill")


def run(quick: bool) -> list[Result]:
    scale = 1 if quick else 10
    root = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    try:
        (root / "data").mkdir()
        lake = Lakehouse(LakehouseConfig(f"sqlite:{root}/catalog.sqlite", f"{root}/data/"))
        lake.ensure_schema()
        fill(lake, scale)

        def counts() -> None:
            with lake.session(read_only=True) as con:
                for t in TABLES:
                    con.execute(f'SELECT count(*) FROM "{t}"').fetchall()

        clock = [time.time()]
        collector = LakehouseCollector(lake, max_age=15, clock=lambda: clock[0])
        registry = CollectorRegistry()
        registry.register(collector)

        def fresh_scrape() -> bytes:
            clock[0] += 60  # past max_age: this scrape reads the lakehouse
            return generate_latest(registry)

        text = fresh_scrape()
        t_read = best_of(fresh_scrape, repeat=3)
        t_counts = best_of(counts, repeat=3)
        t_cached = best_of(lambda: generate_latest(registry), repeat=5)
        series = sum(1 for line in text.decode().splitlines() if line and not line.startswith("#"))
        note = (
            f"{2_000 * scale:,} devices, {100_000 * scale:,} batches, {2_000 * scale:,} quarantined, "
            f"{5_000 * scale:,} conflicts; {series} series exposed; read {t_read * 1000:.0f} ms, "
            f"counts {t_counts * 1000:.0f} ms, cached scrape {t_cached * 1000:.1f} ms"
        )
        return [
            Result(
                "metrics_read_vs_table_counts",
                t_read,
                "s",
                "one count(*) per table the exporter reads",
                t_counts,
                None,
                higher_is_better=False,
                note=note,
            ),
            Result(
                "metrics_cached_scrape_vs_read",
                t_cached,
                "s",
                "a scrape that reads the lakehouse",
                t_read,
                0.05,
                higher_is_better=False,
                note=note,
            ),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    t0 = time.perf_counter()
    for r in run(quick=True):
        print(r.record())
    print(f"{time.perf_counter() - t0:.1f} s")
