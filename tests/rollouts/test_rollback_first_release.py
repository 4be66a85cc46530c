"""Automatic rollback of a fleet the platform never managed before (no desired-state documents: the
devices run their factory image): the controller's rollback, through the edge_agent backend's signed
documents, takes real device downlinks back to what they ran, also one offline during the rollback,
across controller restarts, and a repeated rollback writes nothing."""

from __future__ import annotations

import pytest

from edge_sync.downlink import active_release
from edgeplat.backends.base import DeviceRef
from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.events import Kind, Status
from edgeplat.rollouts.store import RolloutStore
from tests.support.rollouts import Agent, phases_of, sized_spec

FACTORY = "2.0.0"  # what the demo fleet's devices run before any rollout
BAD = "3.0.0"


@pytest.mark.slow
def test_bad_release_on_factory_devices_is_rolled_back_to_the_factory_release(
    tmp_path, lake, backend, make_fleet
) -> None:
    fleet = make_fleet(devices=200)
    fleet.set_release_profile(BAD, error_rate=0.03)
    fleet.advance(30)
    assert all(backend.publisher.current(d.tenant_id, d.device_id) is None for d in fleet.devices)
    store = RolloutStore(lake)
    rid = Controller(store, backend).launch(sized_spec(), actor="alice", now=fleet.now)
    online_key, offline_key = sorted(k for k, p in phases_of(lake, store, rid).items() if p == 0)[:2]
    online, offline = Agent(tmp_path, backend, *online_key), Agent(tmp_path, backend, *offline_key)
    for a in (online, offline):  # the factory image on slot a, recorded by the agent itself
        a.installer.install(FACTORY, "a")
        a.installer.switch("a")

    def tick(agents) -> Status:
        Controller(RolloutStore(lake), backend).tick(rid, fleet.now)  # a fresh process every tick
        for a in agents:
            a.pull()
        fleet.advance(5)
        return store.state(rid).status

    for _ in range(60):  # until phase 0 is deployed and both devices run the bad release
        tick([online, offline])
        if active_release(offline.cache)[0] == BAD:
            break
    assert active_release(online.cache) == active_release(offline.cache) == (BAD, "a")

    for _ in range(60):  # offline from now on: the rollback is decided while it is away
        if tick([online]) == Status.ROLLED_BACK:
            break
    assert store.state(rid).status == Status.ROLLED_BACK
    rollback = next(e for e in store.events(rid) if e.kind == Kind.ROLLBACK)
    assert rollback.phase == 0 and "error_rate" in rollback.reason
    online.pull()
    assert active_release(online.cache) == (FACTORY, "a")

    refs = [DeviceRef(d.tenant_id, d.device_id) for d in fleet.devices]
    docs = {r.key: backend.publisher.current(*r.key) for r in refs}
    deployed = {k for k, doc in docs.items() if doc is not None}
    assert offline_key in deployed and all(
        docs[k].release is None and docs[k].rollback_of.version == BAD for k in deployed
    )
    revisions = {k: docs[k].revision for k in deployed}
    for _ in range(3):  # restarted controllers after the decision: nothing is written again
        tick([online])
    assert backend.rollback(refs, rollout_id=rid, to=None).noop
    assert {k: backend.publisher.current(*k).revision for k in deployed} == revisions

    offline.pull()  # back online: it gets the rollback that holds
    assert active_release(offline.cache) == (FACTORY, "a")
    assert fleet.running(BAD) == 0
    for a in (online, offline):
        a.cache.close()
