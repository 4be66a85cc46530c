"""The fleet simulator: determinism, draining, ground-truth invariants, skew, release profiles, CLI."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pytest

from edge_sync.batch import read_batch
from edge_sync.batch_keys import parse_object_key
from edge_sync.desired import Release
from edgeplat.simulator import (
    SimulatedFleet,
    SimulationConfig,
    check_against_store,
    delivered_seqs,
    simulate,
)
from edgeplat.simulator.fleet import build_fleet
from edgeplat.simulator.parts import default_parts
from edgeplat.simulator.truth import STREAM_FIELDS
from tests.support.cli import cli

pytestmark = pytest.mark.slow  # every test here runs real device agents (encrypted DuckDB caches)

# Small but eventful: outages, crashes mid-upload, skew, edits on both sides.
BUSY = SimulationConfig(
    devices=3,
    tenants=2,
    hours=0.5,
    seed=3,
    offline_fraction=0.34,
    outage_minutes=10,
    clock_skew_s=90,
    crash_rate=0.5,
    sync_interval_min=8,
    device_edit_rate_per_hour=6,
    central_edit_rate_per_hour=6,
    telemetry_interval_s=30,
)


def _batches(home: Path, stream: str) -> list[pa.Table]:
    parts = default_parts(home)
    tables, after = [], None
    while True:
        page = parts.store.list("", after=after)
        for info in page.objects:
            if info.key.endswith(".batch") and parse_object_key(info.key).stream == stream:
                data = parts.store.get(info.key)
                tables.append(
                    read_batch(
                        data,
                        key_service=parts.keyring,
                        public_keys=parts.registry.public_keys,
                        expected_key=info.key,
                    ).table
                )
        if page.next_after is None:
            return tables
        after = page.next_after


def _batch_keys(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home / "objects")) for p in (home / "objects").rglob("*.batch"))


@pytest.fixture(scope="module")
def busy_runs(tmp_path_factory):
    homes = [tmp_path_factory.mktemp(f"busy{i}") for i in range(2)]
    sunk: list[dict] = []
    results = [simulate(BUSY, home=homes[0], central_edit_sink=sunk.extend), simulate(BUSY, home=homes[1])]
    results[0].summary["sunk"] = sunk
    return homes, results


def test_same_seed_same_truth_and_object_keys(busy_runs):
    homes, (a, b) = busy_runs
    assert a.truth == b.truth
    assert a.truth["streams"] and a.truth["state_edits"]
    assert _batch_keys(homes[0]) == _batch_keys(homes[1])
    assert a.summary["upload_crashes"] > 0, "the busy config should crash some uploads"


def test_every_device_drained_and_truth_matches_the_store(busy_runs):
    homes, (a, _) = busy_runs
    assert all(r["pending"] == 0 for r in a.truth["streams"])
    assert {r["device_id"] for r in a.truth["streams"]} == {d.device_id for d in build_fleet(BUSY)}
    parts = default_parts(homes[0])
    delivered = delivered_seqs(parts.store, parts.keyring, parts.registry.public_keys)
    assert check_against_store(a.truth, delivered) == []
    for r in a.truth["streams"]:  # delivered seqs are exactly 1..generated (nothing evicted here)
        assert delivered[(r["tenant_id"], r["device_id"], r["stream"])] == set(range(1, r["generated"] + 1))


def test_truth_lists_every_state_edit_of_both_sides(busy_runs):
    homes, (a, _) = busy_runs
    edits = a.truth["state_edits"]
    assert {e["origin"] for e in edits} == {"device", "central"}
    assert all(e["node_id"] == ("central" if e["origin"] == "central" else e["device_id"]) for e in edits)
    central = [e for e in edits if e["origin"] == "central"]
    assert sorted(a.summary["sunk"], key=lambda e: (e["device_id"], e["hlc"])) == sorted(
        central, key=lambda e: (e["device_id"], e["hlc"])
    )  # the caller's sink saw every central edit
    device_edits = {
        (e["device_id"], e["hlc"], e["field"], e["value"]) for e in edits if e["origin"] == "device"
    }
    uploaded = {
        (r["device_id"], r["hlc"], r["field"], r["value"])
        for t in _batches(homes[0], "state")
        for r in t.to_pylist()
    }
    assert device_edits == uploaded  # drained: every device edit reached the store, none invented


def test_clock_skew_stays_within_the_bound(busy_runs):
    homes, _ = busy_runs
    fleet = {d.device_id: d for d in build_fleet(BUSY)}
    bound_ms = BUSY.clock_skew_s * 1000
    assert all(abs(d.skew_ms) <= bound_ms for d in fleet.values())
    assert len({d.skew_ms for d in fleet.values()}) == len(fleet)
    implied = defaultdict(set)
    for t in _batches(homes[0], "health"):
        for r in t.to_pylist():
            if r["heartbeat"] is None:  # the downlink's own health rows are not on the minute grid
                continue
            d = fleet[r["device_id"]]
            ts = int(r["ts"].timestamp() * 1000)
            expected = BUSY.start_ms + (r["heartbeat"] - 1) * 60_000 + (d.phase_s % 60) * 1000
            implied[d.device_id].add(ts - expected)
    assert set(implied) == set(fleet)
    for device_id, skews in implied.items():
        assert skews == {fleet[device_id].skew_ms}


def test_leave_offline_keeps_pending_rows(tmp_path):
    config = SimulationConfig(
        devices=2,
        tenants=1,
        hours=0.25,
        seed=5,
        offline_fraction=1.0,
        leave_offline=True,
        sync_interval_min=5,
        telemetry_interval_s=60,
    )
    result = simulate(config, home=tmp_path)
    pending = [r for r in result.truth["streams"] if r["pending"] > 0]
    assert pending, "devices left offline must still hold rows"
    parts = default_parts(tmp_path)
    delivered = delivered_seqs(parts.store, parts.keyring, parts.registry.public_keys)
    assert check_against_store(result.truth, delivered) == []
    assert result.summary["devices_offline_at_end"] == 2


def test_bad_release_shows_a_higher_error_rate(tmp_path):
    config = SimulationConfig(
        devices=1,
        tenants=1,
        hours=1,
        seed=2,
        offline_fraction=0.0,
        sync_interval_min=5,
        telemetry_interval_s=300,
        log_rate_per_min=0.0,
    )
    with SimulatedFleet(config, home=tmp_path) as fleet:
        fleet.set_release_profile("2.0.0", error_rate=0.2, crash_rate=30.0)
        fleet.advance(10)
        bad = fleet.devices[0]
        fleet.publisher().set_release(bad.tenant_id, bad.device_id, Release(version="2.0.0", slot="b"))
        fleet.advance(15)
        assert fleet.installed()[(bad.tenant_id, bad.device_id)][:2] == ("2.0.0", "b")
        fleet.finish()
    rows = [r for t in _batches(tmp_path, "health") for r in t.to_pylist() if r["heartbeat"] is not None]
    by_version = defaultdict(list)
    for r in rows:
        by_version[r["version"]].append(r)
    assert set(by_version) == {"1.0.0", "2.0.0"}
    mean = {v: sum(r["errors"] for r in rs) / sum(r["requests"] for r in rs) for v, rs in by_version.items()}
    assert mean["2.0.0"] > 5 * mean["1.0.0"]
    assert max(r["crash_count"] for r in by_version["2.0.0"]) > 0
    assert {r["slot"] for r in by_version["2.0.0"]} == {"b"}


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="offline_fraction"):
        SimulationConfig(offline_fraction=1.5)
    with pytest.raises(ValueError, match="tenants"):
        SimulationConfig(devices=2, tenants=3)


def test_cli_simulate_writes_truth_and_json(tmp_path):
    home = tmp_path / "home"
    truth = tmp_path / "t.json"
    args = ("simulate", "--devices", "5", "--tenants", "2", "--hours", "0.5")
    out = cli(*args, "--seed", "1", "--truth", str(truth), "--json", home=home)
    summary = json.loads(out.stdout)
    assert summary["devices"] == 5 and summary["rows"]["pending"] == 0
    data = json.loads(truth.read_text())
    assert set(data) == {"streams", "state_edits"}
    assert len({r["device_id"] for r in data["streams"]}) == 5
    assert set(data["streams"][0]) == set(STREAM_FIELDS)
    again = cli(*args, home=home, check=False)
    assert again.returncode == 2 and "fresh EDGEPLAT_HOME" in again.stderr


def test_evictions_count_in_the_truth(tmp_path):
    config = SimulationConfig(
        devices=1,
        tenants=1,
        hours=0.5,
        seed=6,
        offline_fraction=1.0,
        outage_minutes=500,
        cache_max_bytes=6000,
        sync_interval_min=10,
    )
    result = simulate(config, home=tmp_path)
    assert sum(r["evicted"] for r in result.truth["streams"]) > 0
    assert all(r["pending"] == 0 for r in result.truth["streams"])
    parts = default_parts(tmp_path)
    delivered = delivered_seqs(parts.store, parts.keyring, parts.registry.public_keys)
    assert check_against_store(result.truth, delivered) == []
    alerts = [r for r in result.truth["streams"] if r["stream"] == "alerts"]
    assert all(r["evicted"] == 0 for r in alerts)  # alerts go last, and here never


def test_stepping_in_small_windows_gives_the_same_run(tmp_path):
    config = SimulationConfig(
        devices=2,
        tenants=1,
        hours=0.5,
        seed=4,
        offline_fraction=0.5,
        outage_minutes=8,
        crash_rate=0.3,
        sync_interval_min=6,
        device_edit_rate_per_hour=6,
        central_edit_rate_per_hour=6,
    )
    whole = simulate(config, home=tmp_path / "whole")
    with SimulatedFleet(config, home=tmp_path / "steps") as fleet:
        for _ in range(3):
            fleet.advance(10)
        assert fleet.now_minute == 30
        stepped = fleet.finish()
    assert stepped.truth == whole.truth
    assert _batch_keys(tmp_path / "whole") == _batch_keys(tmp_path / "steps")
