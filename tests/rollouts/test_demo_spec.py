"""The demo's rollout specs hold enough canaries for their gates, and the same ones at every launch."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cli.demo.rollouts import _DEMO_ROLLOUTS, demo_rollouts
from edgeplat.rollouts.controller import new_rollout_id
from edgeplat.rollouts.selection import assign_phases, rollout_salt

TENANTS = ("acme", "globex")


@pytest.mark.parametrize("spec", [spec for spec, _ in _DEMO_ROLLOUTS], ids=lambda s: s.name)
def test_phase_0_holds_the_same_one_percent_of_the_demo_fleet_at_every_launch(spec) -> None:
    # the demo fleet: 2,000 devices, tenants alternating (edgeplat.simulator.rollout_fleet.DemoFleet)
    tenants = [TENANTS[i % 2] for i in range(2000)]
    devices = pa.table(
        {"device_id": [f"{t}/dev-{i:05d}" for i, t in enumerate(tenants)], "tenant_id": tenants}
    )
    min_devices = min(g.min_devices for g in spec.gates)
    canaries = set()
    for _ in range(20):  # each launch gets a new rollout id
        salt = rollout_salt(spec.name, new_rollout_id(spec), spec.selection.salt)
        assignment = assign_phases(
            devices, [p.percent for p in spec.phases], salt, spec.selection.stratify_by
        )
        phase_0 = assignment.devices_in_phase(0)
        # at least ceil(1% of 1,000) per tenant (ties in a bucket may add one: see selection)
        assert len(phase_0) >= 20 >= min_devices
        canaries.add(tuple(phase_0))
    assert len(canaries) == 1  # the same canaries at every launch: the seeded demo repeats itself


@pytest.mark.parametrize("devices", [200, 400])
def test_a_smaller_demo_fleet_still_gives_phase_0_the_gates_canaries(devices: int) -> None:
    tenants = [TENANTS[i % 2] for i in range(devices)]
    table = pa.table({"device_id": [f"{t}/dev-{i:05d}" for i, t in enumerate(tenants)], "tenant_id": tenants})
    for spec, _ in demo_rollouts(devices):
        salt = rollout_salt(spec.name, new_rollout_id(spec), spec.selection.salt)
        assignment = assign_phases(
            table,
            [p.percent for p in spec.phases],
            salt,
            spec.selection.stratify_by,
            min_devices=[p.min_devices for p in spec.phases],
        )
        assert len(assignment.devices_in_phase(0)) >= min(g.min_devices for g in spec.gates)
