"""DuckLake maintenance in a child process: a crashed child is retried, errors are not."""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from edgeplat.lakehouse import LakehouseConfig, LakehouseError
from edgeplat.sync.compaction import CompactionCrashed, CompactionTimedOut, compact_isolated
from edgeplat.sync.ingest import ingest_objects
from tests.support.compaction_targets import crash_always, crash_first, fail, hang
from tests.support.fleet import Fleet


def attempts(config: LakehouseConfig) -> int:
    return len(list((Path(config.data_path) / "attempts").iterdir()))


@pytest.fixture
def config(tmp_path: Path) -> LakehouseConfig:
    return LakehouseConfig(catalog=f"sqlite:{tmp_path}/catalog.sqlite", data_path=f"{tmp_path}/lake/")


def test_a_crashed_child_is_replaced_and_the_next_one_finishes(config, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="edgeplat.sync.compaction"):
        assert compact_isolated(config, keep_snapshots=timedelta(days=3), target=crash_first) == {
            "merge_adjacent_files": 3
        }
    assert attempts(config) == 2
    assert "child died (signal SIGKILL), attempt 1 of 3" in caplog.text


def test_children_that_keep_crashing_give_up_with_the_signals_and_what_to_do(config) -> None:
    with pytest.raises(
        CompactionCrashed,
        match=r"crashed in 2 child processes in a row "
        r"\(signal SIGKILL, signal SIGKILL\).*run reconcile_sync again",
    ):
        compact_isolated(config, attempts=2, target=crash_always)
    assert attempts(config) == 2


def test_an_error_in_the_maintenance_is_raised_once_not_retried(config) -> None:
    with pytest.raises(
        LakehouseError, match="DuckLake maintenance failed: ValueError: the catalog is read-only"
    ):
        compact_isolated(config, target=fail)
    assert attempts(config) == 1


def test_the_real_maintenance_runs_in_the_child_and_its_commits_are_seen(fleet: Fleet) -> None:
    keys = [
        fleet.upload(fleet.batch("t1", "d1", "telemetry", range(1 + 10 * k, 11 + 10 * k))) for k in range(3)
    ]
    for key in keys:  # three commits: three inlined inserts for the flush to write out
        ingest_objects(fleet.env(), [key])
    before = fleet.snapshot()
    out = compact_isolated(fleet.lake.config)
    assert out["flush_inlined_data"] >= 1
    assert fleet.snapshot() == before
    assert fleet.count("SELECT count(*) FROM telemetry")[0][0] == 30


def test_a_child_past_its_timeout_is_killed_and_not_retried(config) -> None:
    started = time.monotonic()
    with pytest.raises(CompactionTimedOut, match=r"ran past its timeout \(0:00:03\).*timeout_minutes"):
        compact_isolated(config, timeout=timedelta(seconds=3), target=hang)
    assert time.monotonic() - started < 60
    assert attempts(config) == 1
    pid = int((Path(config.data_path) / "child.pid").read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped: nothing left behind
        os.kill(pid, 0)
    with pytest.raises(ValueError, match="timeout must be positive"):
        compact_isolated(config, timeout=timedelta(0), target=hang)
