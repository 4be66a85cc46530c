"""The edge_agent backend: deploys and rollbacks as signed desired-state documents."""

from __future__ import annotations

import pytest

from edge_sync.desired import Release, decode, desired_key
from edgeplat.backends.base import DeviceRef, ReleaseSpec
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.desired_publisher import DesiredStatePublisher
from tests.support.edge_agent import V1, V2, Device, devs


def test_phases_are_cumulative_and_repeat_is_a_noop(backend, store, signer):
    r1 = backend.deploy(devs("d1", "d2"), V1, rollout_id="r1", phase=0)
    assert r1.changed == (("t1", "d1"), ("t1", "d2"))
    again = backend.deploy(devs("d1", "d2"), V1, rollout_id="r1", phase=0)
    assert again.noop
    r2 = backend.deploy(devs("d1", "d2", "d3"), V1, rollout_id="r1", phase=1)
    assert r2.changed == (("t1", "d3"),)
    for name, phase in (("d1", 0), ("d2", 0), ("d3", 1)):
        doc = decode(
            store.get(desired_key("t1", name)),
            platform_keys=signer.public_key_bytes(),
            tenant_id="t1",
            device_id=name,
        )
        assert doc.release == Release(version="1.0.0", slot="a", rollout_id="r1", phase=phase)
        assert doc.revision == 1
    status = backend.status("r1").by_device()
    assert {k: (s.phase, s.desired_version) for k, s in status.items()} == {
        ("t1", "d1"): (0, "1.0.0"),
        ("t1", "d2"): (0, "1.0.0"),
        ("t1", "d3"): (1, "1.0.0"),
    }


def test_previous_release_and_blue_green_slot(backend):
    backend.deploy(devs("d1"), V1, rollout_id="r1", phase=0)
    backend.deploy(devs("d1"), V2, rollout_id="r2", phase=0, slot="inactive")
    doc = backend.publisher.current("t1", "d1")
    assert doc.release == Release(version="2.0.0", slot="b", rollout_id="r2", phase=0)
    assert doc.previous == Release(version="1.0.0", slot="a", rollout_id="r1", phase=0)
    assert doc.revision == 2


def test_rollback_returns_to_previous_and_offline_device_gets_it_later(backend, store, signer):
    online, offline = Device(store, signer, "t1", "d1"), Device(store, signer, "t1", "d2")
    backend.deploy(devs("d1", "d2"), V1, rollout_id="r1", phase=0)
    online.pull()
    offline.pull()
    backend.deploy(devs("d1", "d2"), V2, rollout_id="r2", phase=0, slot="inactive")
    online.pull()
    offline.pull()
    assert offline.release.version == "2.0.0"
    result = backend.rollback(devs("d1", "d2", "never-deployed"), rollout_id="r2", to=V1)
    assert result.changed == (("t1", "d1"), ("t1", "d2"))
    assert backend.rollback(devs("d1", "d2"), rollout_id="r2", to=V1).noop  # idempotent
    online.pull()
    assert online.release == Release(version="1.0.0", slot="a", rollout_id="r1", phase=0)
    # a repeated deploy of the rolled-back phase (a retried sensor tick) must not undo the rollback
    assert backend.deploy(devs("d1", "d2"), V2, rollout_id="r2", phase=0).noop
    offline.pull()  # comes back online: reads the rollback, a higher revision
    assert offline.release.version == "1.0.0" and offline.applied == 3


def test_status_compares_with_reported(store, signer, records):
    devices = {n: Device(store, signer, "t1", n) for n in ("d1", "d2")}
    backend = EdgeAgentBackend(
        DesiredStatePublisher(store, signer, records=records),
        reported=lambda t, d: devices[d].report() if devices[d].applied else None,
    )
    backend.deploy(devs("d1", "d2"), V1, rollout_id="r1", phase=0)
    devices["d1"].pull()
    status = backend.status("r1").by_device()
    assert status[("t1", "d1")].acknowledged and status[("t1", "d1")].state == "succeeded"
    assert status[("t1", "d1")].reported_version == "1.0.0"
    assert not status[("t1", "d2")].acknowledged and status[("t1", "d2")].state == "pending"
    backend.rollback(devs("d1"), rollout_id="r1", to=None)
    assert backend.status("r1").by_device()[("t1", "d1")].state == "rolling_back"
    assert [s.rollout_id for s in backend.status().devices] == ["r1", "r1"]


def test_bad_arguments_are_named(backend):
    with pytest.raises(ValueError, match="phase"):
        backend.deploy(devs("d1"), V1, rollout_id="r1", phase=-1)
    with pytest.raises(ValueError, match="slot"):
        backend.deploy(devs("d1"), V1, rollout_id="r1", phase=0, slot="c")
    with pytest.raises(ValueError, match="invalid device id"):
        backend.deploy([DeviceRef("t1", "../x")], V1, rollout_id="r1", phase=0)


def test_release_spec_accepts_the_rollout_spec_model():
    from edgeplat.rollouts.spec import Release as SpecRelease

    spec = SpecRelease(
        name="app", version="2.1.0", greengrass={"component": "com.acme.App", "version": "2.1.0"}
    )
    converted = ReleaseSpec.of(spec)
    assert converted.greengrass.component == "com.acme.App" and converted.iot_edge is None
    assert (
        ReleaseSpec.of(
            {"name": "app", "version": "1", "iot_edge": {"module": "m", "image": "i:1"}}
        ).iot_edge.image
        == "i:1"
    )
