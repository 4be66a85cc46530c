"""Blue/green through the edge_agent backend: stage on the inactive slot, switch to it, switch back;
backends without A/B slots say so."""

from __future__ import annotations

import pytest

from edge_sync.desired import Release, StateEdit
from edgeplat.backends.azure_iot_edge import AzureIotEdgeBackend
from edgeplat.backends.base import StagingNotSupported
from edgeplat.backends.greengrass import GreengrassBackend
from tests.support.edge_agent import V1, V2, Device, devs

OLD = Release(version="1.0.0", slot="a")


def test_stage_switch_and_switch_back(backend, store, signer):
    for name in ("d1", "d2"):
        backend.publisher.set_release("t1", name, OLD)  # the factory release, revision 1
    staged = backend.stage(devs("d1", "d2"), V2, rollout_id="r2")
    assert staged.action == "stage" and staged.changed == (("t1", "d1"), ("t1", "d2"))
    assert backend.stage(devs("d1", "d2"), V2, rollout_id="r2").noop  # a retried tick writes nothing
    doc = backend.publisher.current("t1", "d1")
    assert doc.revision == 2 and doc.release == OLD  # nothing activated
    assert doc.staged == Release(version="2.0.0", slot="b", rollout_id="r2")
    assert {s.state for s in backend.status("r2").devices} == {"staging"}

    switched = backend.deploy(devs("d1"), V2, rollout_id="r2", phase=0, slot="inactive")
    assert switched.changed == (("t1", "d1"),)
    doc = backend.publisher.current("t1", "d1")
    assert doc.release == Release(version="2.0.0", slot="b", rollout_id="r2", phase=0)
    assert doc.previous == OLD and doc.staged is None
    assert backend.deploy(devs("d1"), V2, rollout_id="r2", phase=0, slot="inactive").noop
    assert backend.stage(devs("d1"), V2, rollout_id="r2").noop  # a switched device is not staged again

    back = backend.rollback(devs("d1", "d2"), rollout_id="r2", to=None)
    assert back.changed == (("t1", "d1"), ("t1", "d2"))
    d1, d2 = backend.publisher.current("t1", "d1"), backend.publisher.current("t1", "d2")
    assert d1.release == OLD and d1.staged is None  # the old slot again: a switch back
    assert d2.release == OLD and d2.staged is None  # staged, never switched: staging withdrawn
    assert backend.rollback(devs("d1", "d2"), rollout_id="r2", to=None).noop
    assert backend.stage(devs("d2"), V2, rollout_id="r2").noop  # never re-staged after a rollback
    device = Device(store, signer, "t1", "d2")
    device.pull()
    assert device.release == OLD and device.applied == 3


def test_stage_keeps_state_edits_and_edits_keep_the_stage(backend):
    pub = backend.publisher
    edit = StateEdit(namespace="config", key="k", field="f", value="1", hlc=1 << 16)
    pub.add_state_edits("t1", "d1", [edit])
    backend.stage(devs("d1"), V2, rollout_id="r2")
    assert pub.current("t1", "d1").state_edits == [edit]
    edit2 = edit.model_copy(update={"field": "g"})
    pub.add_state_edits("t1", "d1", [edit2])
    doc = pub.current("t1", "d1")
    assert doc.staged is not None and doc.staged.version == "2.0.0" and len(doc.state_edits) == 2
    pub.set_release("t1", "d1", OLD)  # another writer's release change keeps the stage
    assert pub.current("t1", "d1").staged == doc.staged


def test_switch_without_staging_installs_on_the_inactive_slot(backend):
    backend.publisher.set_release("t1", "d1", OLD)
    backend.deploy(devs("d1"), V2, rollout_id="r2", phase=0, slot="inactive")
    doc = backend.publisher.current("t1", "d1")
    assert doc.release.slot == "b" and doc.previous == OLD and doc.staged is None


def test_another_rollouts_stage_survives_a_switch(backend):
    backend.stage(devs("d1"), V2, rollout_id="r2")
    backend.deploy(devs("d1"), V1, rollout_id="r1", phase=0)  # an in-place release of another rollout
    assert backend.publisher.current("t1", "d1").staged.rollout_id == "r2"


@pytest.mark.parametrize("cls", [GreengrassBackend, AzureIotEdgeBackend])
def test_backends_without_slots_declare_it(cls):
    assert cls.staging_unsupported and "slot" in cls.staging_unsupported
    with pytest.raises(StagingNotSupported, match="cannot stage"):
        cls.stage(object.__new__(cls), devs("d1"), V1, rollout_id="r1")
