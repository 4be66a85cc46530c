"""Reconciliation steps: duplicate removal, gaps from ledger and eviction ranges, offline marking, views."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeplat.sync.compaction import compact_isolated
from edgeplat.sync.ingest import ingest_objects
from edgeplat.sync.reconcile import Gap, find_gaps, mark_offline, remove_duplicates
from edgeplat.sync.rollups import roll_up_health
from edgeplat.sync.views import VIEWS, create_views
from tests.support.fleet import T0_MS, Fleet


@pytest.mark.slow
def test_gaps_duplicates_offline_rollup_views_and_compaction(fleet: Fleet) -> None:
    up, t = fleet.upload, "t1"
    keys = [
        up(fleet.batch(t, "d1", "telemetry", range(1, 11))),
        # 11..15 evicted on the device and counted: not a gap
        up(
            fleet.batch(
                t,
                "d1",
                "telemetry",
                [],
                evictions=[{"first_seq": 11, "last_seq": 15, "count": 5, "reason": "size_bound"}],
            )
        ),
        up(fleet.batch(t, "d1", "telemetry", range(21, 31))),  # 16..20: a gap
        up(fleet.batch(t, "d2", "logs", range(4, 9))),  # 1..3 never arrived: a leading gap
        up(fleet.batch(t, "d2", "health", range(1, 4))),
    ]
    env = fleet.env()
    rep = ingest_objects(env, keys)
    assert rep.evictions == 5
    with fleet.lake.session() as con:
        assert find_gaps(con) == [Gap(t, "d1", "telemetry", 16, 20), Gap(t, "d2", "logs", 1, 3)]
        assert fleet.count("SELECT sum(count) FROM evictions")[0][0] == 5

        # duplicates a concurrent run could leave: removed, one copy kept, idempotent
        con.execute("INSERT INTO telemetry SELECT * FROM telemetry WHERE device_id = 'd1' AND seq <= 3")
        con.execute("INSERT INTO batches SELECT * FROM batches WHERE stream = 'logs'")
        assert remove_duplicates(env, con, window=None)["telemetry"] == 3
        assert fleet.count("SELECT count(*), count(DISTINCT seq) FROM telemetry WHERE device_id = 'd1'")[
            0
        ] == (20, 20)
        assert fleet.count("SELECT count(*) FROM batches")[0][0] == 5
        before = fleet.snapshot()
        assert sum(remove_duplicates(env, con, window=None).values()) == 0 and fleet.snapshot() == before

        # offline after 30 minutes without a batch (injected clock)
        assert mark_offline(con, now_ms=fleet.clock(), offline_after_s=1800) == 0
        fleet.clock.ms = T0_MS + 31 * 60_000
        assert mark_offline(con, now_ms=fleet.clock(), offline_after_s=1800) == 2
        assert mark_offline(con, now_ms=fleet.clock(), offline_after_s=1800) == 0
        assert fleet.count("SELECT DISTINCT status FROM devices") == [("offline",)]

        assert roll_up_health(con, since=None, now=fleet.ts_now()) == 1
        rolled = fleet.count("SELECT device_id, samples, version FROM device_health")
        assert rolled == [("d2", 3, "version-3")]
        assert (
            roll_up_health(con, now=fleet.ts_now()) == 1
            and fleet.count("SELECT count(*) FROM device_health")[0][0] == 1
        )

        assert create_views(con) == list(VIEWS) and create_views(con) == list(VIEWS)
        assert fleet.count("SELECT sum(samples) FROM telemetry_hourly")[0][0] == 20
        assert fleet.count("SELECT count(*) FROM device_last_seen")[0][0] == 2
        assert fleet.count("SELECT count(*) FROM sync_lag")[0][0] == 3
        assert fleet.count("SELECT count(*) FROM quarantine_summary")[0][0] == 0
        assert fleet.count("SELECT count(*) FROM conflicts_recent")[0][0] == 0
        snap = fleet.snapshot()
        # files of a rolled-back ingest: a day old they go, fresh ones may be a running ingest's
        folder = Path(fleet.lake.config.data_path) / "main" / "telemetry" / "tenant_id=t1" / "day=2026-09-20"
        folder.mkdir(parents=True, exist_ok=True)
        stale, fresh = folder / "ingest-stale.parquet", folder / "ingest-fresh.parquet"
        for orphan in (stale, fresh):
            pq.write_table(pa.table({"seq": [1]}), orphan)
        os.utime(stale, (time.time() - 2 * 86_400, time.time() - 2 * 86_400))
        assert set(compact_isolated(fleet.lake.config)) == {
            "flush_inlined_data",
            "merge_adjacent_files",
            "expire_snapshots",
            "cleanup_old_files",
            "delete_orphaned_files",
        }
        assert fleet.snapshot() == snap
        assert not stale.exists() and fresh.exists()
