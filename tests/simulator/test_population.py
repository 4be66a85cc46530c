"""Fast checks of the simulator's pure parts: the fleet population, release profiles, vectorised batches."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sync.batch import read_batch
from edge_sync.keys import LocalKeyring
from edgeplat.simulator import ReleaseProfiles, SimulationConfig
from edgeplat.simulator.fleet import build_fleet
from edgeplat.simulator.parts import cache_key
from edgeplat.simulator.profiles import draw_health
from edgeplat.simulator.vectorized import device_hour_batches


def test_fleet_is_deterministic_and_respects_the_bounds():
    config = SimulationConfig(devices=40, tenants=4, offline_fraction=0.25, clock_skew_s=30, seed=9)
    a, b = build_fleet(config), build_fleet(config)
    assert a == b
    assert (
        build_fleet(SimulationConfig(devices=40, tenants=4, offline_fraction=0.25, clock_skew_s=30, seed=10))
        != a
    )
    assert all(abs(d.skew_ms) <= 30_000 for d in a)
    assert sum(1 for d in a if d.outages) == 10
    assert {d.tenant_id for d in a} == {"tenant-01", "tenant-02", "tenant-03", "tenant-04"}
    assert {d.platform for d in a} == {"greengrass", "iot_edge"}
    assert len({d.device_id for d in a}) == 40


def test_leave_offline_outages_last_to_the_end():
    config = SimulationConfig(devices=10, tenants=1, offline_fraction=0.5, leave_offline=True, hours=2)
    offline = [d for d in build_fleet(config) if d.outages]
    assert len(offline) == 5 and all(d.offline_at(config.minutes) for d in offline)


def test_a_bad_profile_draws_more_errors_and_crashes():
    profiles = ReleaseProfiles()
    profiles.set("2.0.0", error_rate=0.1, crash_rate=20.0, cpu_pct=60.0)
    rng = np.random.default_rng(0)
    good = [draw_health(profiles.get("1.0.0"), rng, 1.0) for _ in range(300)]
    bad = [draw_health(profiles.get("2.0.0"), rng, 1.0) for _ in range(300)]

    def rate(draws):
        return sum(d.errors for d in draws) / sum(d.requests for d in draws)

    assert rate(bad) > 5 * rate(good)
    assert sum(d.crashes for d in bad) > sum(d.crashes for d in good)
    assert np.mean([d.cpu_pct for d in bad]) > np.mean([d.cpu_pct for d in good]) + 20
    with pytest.raises(ValueError, match="unknown release profile field"):
        profiles.set("3.0.0", latency=3)
    with pytest.raises(ValueError, match="error_rate"):
        profiles.set("3.0.0", error_rate=2.0)


def test_cache_keys_differ_per_device_and_secret():
    s = bytes(32)
    assert len(cache_key(s, "t", "d1")) == 32
    assert cache_key(s, "t", "d1") != cache_key(s, "t", "d2")
    assert cache_key(s, "t", "d1") != cache_key(bytes([1]) * 32, "t", "d1")


def test_vectorised_batches_decode_to_contiguous_seqs(tmp_path):
    config = SimulationConfig(devices=2, tenants=1, hours=2, seed=4)
    keyring = LocalKeyring(tmp_path)
    identities: dict = {}
    batches = list(device_hour_batches(config, keyring, identities=identities))
    assert len(batches) == 2 * 2 * 2  # devices x hours x streams
    seqs: dict = {}
    for vb in batches:
        back = read_batch(
            vb.batch.data,
            key_service=keyring,
            public_keys=[identities[vb.device.device_id].public_key_bytes()],
        )
        assert back.table.equals(vb.table)
        seqs.setdefault((vb.device.device_id, vb.stream), []).extend(back.table.column("seq").to_pylist())
    for (_, stream), got in seqs.items():
        assert got == list(range(1, len(got) + 1))
        assert len(got) == (2 * 360 * 3 if stream == "telemetry" else 120)
