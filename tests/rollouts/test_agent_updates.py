"""The edge agents' installer steps as rollout facts: a download under way is not a failure,
a revert is, and the latest step (by HLC) about the release is the one that counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import duckdb
import pyarrow as pa
import pytest

from edgeplat.lakehouse_schema import TABLES
from edgeplat.rollouts import cohorts
from edgeplat.rollouts.agent_updates import latest_updates
from edgeplat.rollouts.spec import load_spec

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def con():
    con = duckdb.connect(":memory:")
    for name in ("health", "devices", "rollout_devices"):
        con.execute(TABLES[name].create_sql())
    yield con
    con.close()


def _health(con, device, minute, version, state=None, update_version=None, reason=None):
    con.execute(
        "INSERT INTO health (tenant_id, device_id, stream, seq, hlc, node_id, ts, version, slot, update_state, "
        "update_version, update_reason) VALUES ('t1', ?, 'health', ?, ?, ?, ?, ?, 'a', ?, ?, ?)",
        [
            device,
            minute,
            minute << 16,
            device,
            T0 + timedelta(minutes=minute),
            version,
            state,
            update_version,
            reason,
        ],
    )


def test_latest_step_about_the_release_per_device(con):
    _health(con, "d1", 1, "1.0", "downloading", "2.0")
    _health(con, "d1", 2, "2.0", "activated", "2.0")
    _health(con, "d1", 3, "1.0", "reverted", "2.0", "health_check: exited 1")
    _health(con, "d2", 1, "1.0", "downloading", "2.0")
    _health(con, "d3", 1, "1.0")  # no installer steps
    _health(con, "d4", 1, "1.0", "committed", "1.9")  # another release
    facts = latest_updates(con, ["t1"], "2.0")
    assert set(facts) == {("t1", "d1"), ("t1", "d2")}
    assert facts[("t1", "d1")].gave_up and facts[("t1", "d1")].reason == "health_check: exited 1"
    assert facts[("t1", "d2")].in_progress and not facts[("t1", "d2")].gave_up
    assert (
        latest_updates(con, ["t1"], "2.0", since=T0 + timedelta(minutes=2))[("t1", "d1")].state == "reverted"
    )


def test_phase_status_counts_a_download_under_way_as_not_failed(con):
    spec = load_spec("examples/rollouts/canary-good.yaml")
    version = spec.release.version
    for d in ("d1", "d2", "d3"):
        con.execute(
            "INSERT INTO rollout_devices VALUES ('t1', 'r1', ?, 'edge_agent', 0, 'deploy', 'e1', ?)", [d, T0]
        )
        con.execute(
            "INSERT INTO devices (tenant_id, device_id, reported_version, updated_at) VALUES ('t1', ?, 'old', ?)",
            [d, T0],
        )
    _health(con, "d1", 5, "old", "downloading", version)  # still downloading
    _health(con, "d2", 5, "old", "reverted", version, "crash_loop")  # gave up
    _health(con, "d3", 5, "old")  # acknowledged, runs something else, no installer
    state = SimpleNamespace(spec=spec, gate_window_start=None, unreachable=set())
    assign = pa.table({"tenant_id": ["t1"] * 3, "device_id": ["d1", "d2", "d3"], "phase": [0, 0, 0]})
    (row,) = cohorts.phase_status(con, "r1", state, assign, T0 + timedelta(hours=1)).to_pylist()
    assert (row["acknowledged"], row["updated"], row["failed"]) == (3, 0, 2)
