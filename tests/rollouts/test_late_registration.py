"""Devices that register after launch are placed by the same rule (issue 5, item 3): a newcomer whose
bucket falls under the current phase is deployed at the next tick, one above it waits for its phase;
for blue/green, a newcomer is staged at the next tick."""

from __future__ import annotations

from datetime import datetime

import pytest

from edgeplat.lakehouse import Lakehouse
from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.events import Kind, Status
from edgeplat.rollouts.selection import bucket, rollout_salt
from edgeplat.rollouts.store import RolloutStore
from tests.support.rollouts import bg_spec, small_spec

PHASES = [{"percent": 10, "bake": "30m"}, {"percent": 50, "bake": "30m"}, {"percent": 100, "bake": "30m"}]


def newcomer(rid: str, tenant: str, lo: float, hi: float, taken: set[str]) -> str:
    """A fresh device id whose bucket under the rollout's salt is in [lo, hi) percent."""
    salt = rollout_salt(rid.rsplit("-", 1)[0], rid)
    for i in range(100_000):
        dev = f"late-{i:05d}"
        if dev not in taken and lo * 100 <= bucket(salt, f"{tenant}/{dev}") < hi * 100:
            taken.add(dev)
            return dev
    raise AssertionError("no device id in range")


def register(lake: Lakehouse, tenant: str, device: str, now: datetime) -> None:
    """The device registry learns of a new device (what registration writes to ``devices``); it
    is not part of the simulated fleet, so it never acknowledges (the rollout times it out)."""
    with lake.session() as con:
        con.execute(
            "INSERT INTO devices (tenant_id, device_id, platform, tags, registered_at, last_batch_at, status, "
            "reported_version, reported_slot, updated_at) VALUES (?, ?, 'greengrass', '{}', ?, ?, 'online', "
            "'2.0.0', 'a', ?)",
            [tenant, device, now, now, now],
        )


def sent(store: RolloutStore, rid: str, action: str = "deploy") -> dict[str, int | None]:
    return {r["device_id"]: r["phase"] for r in store.sent(rid).to_pylist() if r["action"] == action}


@pytest.mark.slow
def test_devices_registering_mid_rollout_are_placed_by_the_same_rule(lake, backend, make_fleet) -> None:
    fleet = make_fleet(devices=60)
    ctl = Controller(RolloutStore(lake), backend)
    rid = ctl.launch(
        small_spec(strategy={"type": "canary", "phases": PHASES}, gates=[]), actor="alice", now=fleet.now
    )
    ctl.tick(rid, fleet.now)
    assert ctl.store.state(rid).deployed_phase == 0
    taken: set[str] = set()
    early, later = newcomer(rid, "acme", 0, 10, taken), newcomer(rid, "acme", 10, 50, taken)
    fleet.advance(5)
    register(lake, "acme", early, fleet.now)
    register(lake, "acme", later, fleet.now)

    ctl.tick(rid, fleet.now)  # the next tick: the newcomer under phase 0's 10% gets the release
    assert sent(ctl.store, rid).get(early) == 0 and later not in sent(ctl.store, rid)
    doc = backend.publisher.current("acme", early)
    assert doc.release.version == "3.0.0" and doc.release.phase == 0
    assert backend.publisher.current("acme", later) is None
    fleet.advance(5)

    for _ in range(40):  # on to phase 1: now the other newcomer is deployed, in its own phase
        state = ctl.store.state(rid)
        if state.deployed_phase >= 1:
            break
        ctl.tick(rid, fleet.now)
        fleet.advance(5)
    assert ctl.store.state(rid).deployed_phase == 1
    assert sent(ctl.store, rid)[later] == 1
    assert backend.publisher.current("acme", later).release.phase == 1
    assert ctl.store.state(rid).status in (
        Status.DEPLOYING,
        Status.BAKING,
    )  # the silent newcomer blocks nothing


def test_a_device_registering_after_blue_green_staging_is_staged(lake, backend, make_fleet) -> None:
    fleet = make_fleet(devices=20)
    ctl = Controller(RolloutStore(lake), backend)
    rid = ctl.launch(bg_spec(), actor="alice", now=fleet.now)
    ctl.tick(rid, fleet.now)
    assert [e.kind for e in ctl.store.events(rid)][-1] == Kind.STAGE
    taken: set[str] = set()
    beyond = newcomer(rid, "globex", 60, 100, taken)  # the last phase: staged now, switched last
    register(lake, "globex", beyond, fleet.now)
    ctl.tick(rid, fleet.now)
    assert beyond in sent(ctl.store, rid, "stage") and beyond not in sent(ctl.store, rid)
    doc = backend.publisher.current("globex", beyond)
    assert doc.staged is not None and doc.staged.version == "3.0.0" and doc.release is None
