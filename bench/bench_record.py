"""Device cache write speed: ``record()`` and ``record_batch()`` against plain DuckDB inserts.

- single-row ``record()`` with the default durability window (10,000 rows / 1 s), against
  DuckDB autocommit single-row ``INSERT`` into a table of the same schema in the same
  encrypted file (what a device would do without the cache's buffering). Target >= 100x.
- ``record_batch()`` of the reference telemetry (ts, metric, value), against DuckDB's own
  Arrow insert of the same Arrow table into a table with the cache's stream-table schema
  in the same encrypted file (the cache also stamps seq, hlc and accounted bytes). Target >= 0.5x.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.harness import Result, best_of, reference_telemetry
from edge_sync.cache import DeviceCache
from edge_sync.cache_store import table_name

KEY = bytes(range(32))


def _open(path: Path) -> DeviceCache:
    return DeviceCache.open(path, tenant_id="bench", device_id="dev-000001", key=KEY, max_bytes=1 << 40)


def _clone_table(cache: DeviceCache, name: str) -> str:
    """An empty table with the cache's telemetry stream schema, in the same encrypted file."""
    con = cache._store.con
    con.execute(f"CREATE OR REPLACE TABLE c.{name} AS SELECT * FROM {table_name('telemetry')} LIMIT 0")
    return f"c.{name}"


def bench_single(cache: DeviceCache, n_cache: int, n_base: int) -> Result:
    rows = [{"metric": f"m{i % 10}", "value": float(i)} for i in range(n_cache)]

    def cached() -> None:
        for row in rows:
            cache.record("telemetry", row)
        cache.flush()

    cache_rps = n_cache / best_of(cached, repeat=3)

    con = cache._store.con
    target = _clone_table(cache, "baseline_single")
    now = time.time_ns() // 1_000_000

    def autocommit() -> None:
        for i in range(n_base):
            con.execute(
                f"INSERT INTO {target} VALUES (?, ?, ?, ?, ?, ?)",
                [i, now << 16 | i, now, 48, f"m{i % 10}", float(i)],
            )

    base_rps = n_base / best_of(autocommit, repeat=3)
    return Result(
        "cache_record_single_row",
        cache_rps,
        "rows/s",
        "DuckDB autocommit single-row INSERT (same schema, same encrypted file)",
        base_rps,
        target=100.0,
        note=f"{n_cache:,} record() calls incl. flush; baseline {n_base:,} INSERTs",
    )


def bench_batch(cache: DeviceCache, devices: int, repeat: int = 5) -> Result:
    table = reference_telemetry(devices=devices, hours=1.0).select(["ts", "metric", "value"])
    n = table.num_rows
    con = cache._store.con
    target = _clone_table(cache, "baseline_batch")
    con.register("bench_input", table)

    def timed(fn) -> float:
        con.execute("CHECKPOINT c")  # neither side pays for the other's auto-checkpoint
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    cache_s = base_s = float("inf")
    for _ in range(repeat):  # interleaved, so load from other processes hits both alike
        cache_s = min(cache_s, timed(lambda: cache.record_batch("telemetry", table)))
        base_s = min(
            base_s,
            timed(
                lambda: con.execute(
                    f"INSERT INTO {target} (ts, metric, value) SELECT epoch_ms(ts), metric, value FROM bench_input"
                )
            ),
        )
    con.unregister("bench_input")
    return Result(
        "cache_record_batch",
        n / cache_s,
        "rows/s",
        "DuckDB Arrow INSERT of the same table (same stream-table schema, same encrypted file)",
        n / base_s,
        target=0.5,
        note=f"{n:,} rows of reference telemetry per call, best of {repeat} interleaved",
    )


def run(quick: bool) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp, _open(Path(tmp) / "cache.db") as cache:
        single = bench_single(cache, n_cache=20_000 if quick else 200_000, n_base=300 if quick else 3_000)
        # keep the file small between the two figures: deliver what the first one wrote
        cache.ack("telemetry", cache.stats()["streams"]["telemetry"]["last_seq"])
        batch = bench_batch(cache, devices=30 if quick else 300)
    return [single, batch]
