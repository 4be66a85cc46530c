"""Rolling back devices the platform never managed before the rollout (no desired-state document:
they run their factory image): real signed documents from the edge_agent backend, pulled by real
device downlinks on real caches; online, offline during the rollback, and across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_sync.cache import DeviceCache
from edge_sync.desired import Release, RollbackOf, StateEdit, desired_key
from edge_sync.downlink import active_release, installed_slots
from edge_sync.objectstore import StoreUnavailable
from edgeplat.backends.base import ReleaseSpec
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.desired_publisher import DesiredStatePublisher
from tests.support.downlink import recording_downlink
from tests.support.edge_agent import V2, devs

V3 = ReleaseSpec("app", "3.0.0")
FACTORY = "1.0.0"


class Agent:
    """One device: the real downlink on a real cache, running its factory image on slot a."""

    def __init__(self, root: Path, backend: EdgeAgentBackend, device: str) -> None:
        self.cache = DeviceCache.open(
            root / f"{device}.db",
            tenant_id="t1",
            device_id=device,
            key=bytes(32),
            wall_ms=lambda: 1_800_000_000_000,
        )
        self.downlink, self.installer = recording_downlink(
            self.cache, backend.store, backend.publisher.signer.public_key_bytes()
        )
        self.installer.install(FACTORY, "a")
        self.installer.switch("a")
        self.installer.calls.clear()
        self.online = True

    def pull(self) -> str:
        if not self.online:
            raise StoreUnavailable("offline")
        result = self.downlink.pull()
        assert result.install_error is None, result
        return result.status

    def runs(self) -> tuple[str | None, str | None]:
        return active_release(self.cache)


@pytest.fixture
def agents(tmp_path, backend):
    made: dict[str, Agent] = {}

    def make(device: str) -> Agent:
        made[device] = Agent(tmp_path, backend, device)
        return made[device]

    yield make
    for a in made.values():
        a.cache.close()


def restarted(backend: EdgeAgentBackend) -> EdgeAgentBackend:
    """The backend of a fresh process: same store and key, nothing in memory."""
    return EdgeAgentBackend(
        DesiredStatePublisher(backend.store, backend.publisher.signer, records=backend.publisher.records)
    )


def test_rollback_returns_a_factory_device_to_what_it_ran(backend, agents):
    online, offline, never = agents("d1"), agents("d2"), agents("d3")
    never.online = False  # offline for the whole rollout
    assert backend.publisher.current("t1", "d1") is None  # never managed by a rollout
    backend.deploy(devs("d1", "d2", "d3"), V2, rollout_id="r1", phase=0)
    online.pull()
    offline.pull()
    assert online.runs() == offline.runs() == ("2.0.0", "a")
    offline.online = False

    result = backend.rollback(devs("d1", "d2", "d3"), rollout_id="r1", to=None)
    assert result.changed == (("t1", "d1"), ("t1", "d2"), ("t1", "d3"))
    doc = backend.publisher.current("t1", "d1")
    assert doc.release is None and doc.revision == 2
    assert doc.rollback_of == RollbackOf(rollout_id="r1", version="2.0.0")

    online.pull()
    assert online.runs() == (FACTORY, "a")
    # central state edits for the offline devices meanwhile: later revisions keep the rollback
    edit = StateEdit(namespace="config", key="k", field="f", value='"x"', hlc=1 << 40)
    for name in ("d2", "d3"):
        backend.publisher.add_state_edits("t1", name, [edit])
    assert backend.publisher.current("t1", "d2").rollback_of == doc.rollback_of

    # a restarted controller repeats the rollback: nothing is written
    again = restarted(backend)
    assert again.rollback(devs("d1", "d2", "d3"), rollout_id="r1", to=None).noop
    assert backend.publisher.current("t1", "d2").revision == 3
    assert again.deploy(devs("d1", "d2", "d3"), V2, rollout_id="r1", phase=0).noop  # never re-deployed

    offline.online = never.online = True  # back: they get the decision that holds now
    offline.pull()
    never.pull()
    assert offline.runs() == never.runs() == (FACTORY, "a")
    assert offline.cache.get_state("config", "k") == {"f": "x"}
    assert never.installer.calls == []  # it never had the bad release: nothing to do
    assert {s.state for s in again.status("r1").devices} == {"rolling_back"}  # no reported source here


def test_a_stale_document_does_not_undo_the_rollback(backend, agents, store):
    a = agents("d1")
    backend.deploy(devs("d1"), V2, rollout_id="r1", phase=0)
    deployed = store.get(desired_key("t1", "d1"))
    a.pull()
    backend.rollback(devs("d1"), rollout_id="r1", to=None)
    a.pull()
    store.put(desired_key("t1", "d1"), deployed)  # a replayed (or lagging replica's) older document
    assert a.downlink.pull().reason == "stale_revision"
    assert a.runs() == (FACTORY, "a")


def test_a_next_rollout_clears_the_rollback_and_rolls_back_to_its_own_before(backend, agents):
    a = agents("d1")
    backend.deploy(devs("d1"), V2, rollout_id="r1", phase=0)
    a.pull()
    backend.rollback(devs("d1"), rollout_id="r1", to=None)
    a.pull()
    backend.deploy(devs("d1"), V3, rollout_id="r2", phase=0)
    doc = backend.publisher.current("t1", "d1")
    assert doc.rollback_of is None and doc.release.version == "3.0.0"
    a.pull()
    assert a.runs() == ("3.0.0", "a")
    backend.rollback(devs("d1"), rollout_id="r2", to=None)
    a.pull()
    assert a.runs() == (FACTORY, "a")


def test_blue_green_without_a_document_switches_back_without_download(backend, agents):
    a = agents("d1")
    backend.stage(devs("d1"), V2, rollout_id="r1")
    a.pull()
    backend.deploy(devs("d1"), V2, rollout_id="r1", phase=0, slot="inactive")
    a.pull()
    assert a.runs() == ("2.0.0", "b")
    a.installer.calls.clear()
    backend.rollback(devs("d1"), rollout_id="r1", to=None)
    a.pull()
    assert a.runs() == (FACTORY, "a") and a.installer.calls == [("switch", "a")]
    assert installed_slots(a.cache) == {"a": FACTORY, "b": "2.0.0"}


def test_a_rollback_whose_index_write_was_lost_is_recorded_on_repeat(backend, agents, store):
    a = agents("d1")
    backend.deploy(devs("d1"), V2, rollout_id="r1", phase=0)
    a.pull()
    index_key = backend._index_key("r1")
    index = store.get(index_key)
    backend.rollback(devs("d1"), rollout_id="r1", to=None)
    store.put(index_key, index)  # the process died after the document, before the index
    again = restarted(backend)
    assert again.rollback(devs("d1"), rollout_id="r1", to=None).noop  # the document is not rewritten
    assert again.status("r1").by_device()[("t1", "d1")].state == "rolling_back"
    store.put(index_key, index)
    assert again.deploy(devs("d1"), V2, rollout_id="r1", phase=0).noop  # the document says: rolled back
    a.pull()
    assert a.runs() == (FACTORY, "a")


def test_a_known_previous_still_rolls_back_by_release(backend):
    """Devices with a document keep the old format: ``release`` = previous, no ``rollback_of``."""
    backend.publisher.set_release("t1", "d1", Release(version=FACTORY, slot="a"))
    backend.deploy(devs("d1"), V2, rollout_id="r1", phase=0)
    backend.rollback(devs("d1"), rollout_id="r1", to=None)
    doc = backend.publisher.current("t1", "d1")
    assert doc.release == Release(version=FACTORY, slot="a") and doc.rollback_of is None
