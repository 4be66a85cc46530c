"""Blue/green end to end: stage the whole target, switch in phases, roll back by switching back,
on the real signed documents (edge_agent backend) pulled by real device downlinks, with a
process restart around every action; and the install-on-switch fallback of a backend without slots."""

from __future__ import annotations

from collections import Counter

import pytest

from edge_sync.desired import Release
from edge_sync.downlink import active_release, installed_slots, staged_release
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.decide import Decision
from edgeplat.rollouts.events import TERMINAL, Kind, Status
from edgeplat.rollouts.store import RolloutStore
from tests.support.rollouts import Agent, Crash, bg_spec, phases_of

OLD = Release(version="2.0.0", slot="a")
NEW = "3.0.0"


@pytest.mark.slow
def test_stage_switch_in_phases_and_switch_back_across_restarts(tmp_path, lake, backend, make_fleet) -> None:
    fleet = make_fleet(devices=40)
    for d in fleet.devices:  # the factory release every device runs on slot a (revision 1)
        backend.publisher.set_release(d.tenant_id, d.device_id, OLD)
    fleet.advance(5)
    store = RolloutStore(lake)
    rid = Controller(store, backend).launch(bg_spec(), actor="alice", now=fleet.now)
    phase = phases_of(lake, store, rid)
    picks = {p: next(k for k, v in sorted(phase.items()) if v == p) for p in (0, 1, 2)}
    agents = {p: Agent(tmp_path, backend, *key) for p, key in picks.items()}
    for a in agents.values():
        a.pull()
        a.installer.calls.clear()

    crashed: Counter = Counter()

    def fault(point: str, d: Decision) -> None:
        if crashed[(d.key, point)] == 0:
            crashed[(d.key, point)] += 1
            raise Crash(f"{point} {d.key}")

    def tick() -> None:
        try:
            Controller(RolloutStore(lake), backend, fault=fault).tick(
                rid, fleet.now
            )  # a fresh process each time
        except Crash:
            return  # restart without time passing: the worst case for double actions
        for a in agents.values():
            a.pull()
        fleet.advance(5)

    # staging: the whole target gets the release on slot b, nothing is activated
    while not store.state(rid).staged:
        tick()
    stage = next(e for e in store.events(rid) if e.kind == Kind.STAGE)
    assert stage.inputs["devices_in_target"] == 40 and stage.inputs["devices_staged"] == 40
    for d in fleet.devices:
        doc = backend.publisher.current(d.tenant_id, d.device_id)
        assert doc.revision == 2 and doc.release == OLD  # staged exactly once despite the crashes
        assert doc.staged == Release(version=NEW, slot="b", rollout_id=rid)
    for a in agents.values():
        assert active_release(a.cache) == ("2.0.0", "a") and staged_release(a.cache) == (NEW, "b")
        assert a.installer.calls == [("install", NEW, "b")]
    assert fleet.running(NEW) == 0

    # switch phase by phase until phase 1 bakes
    for _ in range(60):
        state = store.state(rid)
        if state.phase == 1 and state.status == Status.BAKING:
            break
        tick()
    else:
        raise AssertionError(f"phase 1 never baked: {store.state(rid).status}")
    for p in (0, 1):
        a = agents[p]
        assert active_release(a.cache) == (NEW, "b")
        assert a.installer.calls == [("install", NEW, "b"), ("switch", "b")]  # the switch downloaded nothing
        doc = backend.publisher.current(*picks[p])
        assert doc.release == Release(version=NEW, slot="b", rollout_id=rid, phase=p)
        assert doc.previous == OLD and doc.staged is None
    assert active_release(agents[2].cache) == ("2.0.0", "a")
    switched = {k for k, p in phase.items() if p in (0, 1)}
    assert fleet.running(NEW) == len(switched)
    deploys = [e for e in store.events(rid) if e.kind == Kind.DEPLOY_PHASE]
    assert [e.inputs["action"] for e in deploys] == ["switch", "switch"]

    # roll back: an instant switch back to slot a; the staged-only devices lose their stage
    Controller(store, backend).command(rid, "abort", actor="bob", reason="switch back", now=fleet.now)
    for _ in range(40):
        if store.state(rid).status in TERMINAL:
            break
        tick()
    assert store.state(rid).status == Status.ABORTED
    rollback = next(e for e in store.events(rid) if e.kind == Kind.ROLLBACK)
    assert rollback.inputs["action"] == "switch_back"
    for p in (0, 1):
        a = agents[p]
        assert active_release(a.cache) == ("2.0.0", "a")
        assert a.installer.calls[2:] == [("switch", "a")]  # no download: the old slot stayed installed
        assert installed_slots(a.cache) == {"a": "2.0.0", "b": NEW}
    assert staged_release(agents[2].cache) == (None, None) and agents[2].installer.calls == [
        ("install", NEW, "b")
    ]
    for d in fleet.devices:
        doc = backend.publisher.current(d.tenant_id, d.device_id)
        assert doc.release == OLD and doc.staged is None
        # factory, stage, then switch + switch back (switched devices) or withdraw the stage: never twice
        assert doc.revision == (4 if (d.tenant_id, d.device_id) in switched else 3)
    fleet.advance(5)
    assert fleet.running(NEW) == 0
    kinds = Counter(e.kind for e in store.events(rid))
    assert (
        kinds[Kind.STAGE] == kinds[Kind.STAGED] == kinds[Kind.ROLLBACK] == 1 and kinds[Kind.DEPLOY_PHASE] == 2
    )
    keys = [e.key for e in store.events(rid)]
    assert len(keys) == len(set(keys))
    assert len(crashed) >= 2 * 5  # before and after stage, staged, deploy 0, deploy 1, rollback, ...


class NoSlotsBackend(EdgeAgentBackend):
    """The edge_agent backend with staging switched off: stands in for Greengrass / IoT Edge."""

    staging_unsupported = "test devices without A/B slots"


def test_backend_without_slots_falls_back_to_install_on_switch(lake, make_fleet, tmp_path) -> None:
    from edge_sync.identity import PlatformSigner
    from edge_sync.objectstore import LocalObjectStore
    from edgeplat.desired_publisher import DesiredStatePublisher
    from edgeplat.desired_records import LakehouseDesiredRecords

    backend = NoSlotsBackend(
        DesiredStatePublisher(
            LocalObjectStore(tmp_path / "ns", fsync=False),
            PlatformSigner.generate(),
            records=LakehouseDesiredRecords(lake),
        )
    )
    fleet = make_fleet(devices=20)
    ctl = Controller(RolloutStore(lake), backend)
    rid = ctl.launch(bg_spec(), actor="alice", now=fleet.now)
    for _ in range(4):
        ctl.tick(rid, fleet.now)
        fleet.advance(5)
    events = ctl.store.events(rid)
    stage = next(e for e in events if e.kind == Kind.STAGE)
    assert stage.inputs["staging"] == "unsupported" and stage.inputs["fallback"] == "install_on_switch"
    assert "test devices without A/B slots" in stage.inputs["fallback_reason"]
    deploy = next(e for e in events if e.kind == Kind.DEPLOY_PHASE)
    assert deploy.inputs["action"] == "install" and "installing on switch" in deploy.inputs["fallback_reason"]
    docs = [backend.publisher.current(d.tenant_id, d.device_id) for d in fleet.devices]
    assert all(doc is None or (doc.staged is None and doc.release.slot == "a") for doc in docs)
    assert sum(doc is not None for doc in docs) == deploy.inputs["devices_sent"] > 0
