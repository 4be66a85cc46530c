"""Blue/green on the device: a staged release goes on the inactive slot, the switch and the
switch back need no download, staging never touches the running slot, old documents still apply."""

from __future__ import annotations

import json

from edge_sync import desired
from edge_sync.desired import DesiredState, Release
from edge_sync.downlink import active_release, installed_slots, staged_release
from edge_sync.hlc import pack
from tests.support.device import NOW, TENANT
from tests.support.downlink import DESIRED_KEY, PLATFORM, alerts, publish, recording_downlink

OLD = Release(version="1.0.0", slot="a")


def setup(env):
    dl, installer = recording_downlink(env.cache, env.store, PLATFORM.public_key_bytes())
    publish(env.store, 1, release=OLD)
    assert dl.pull().status == "applied"
    installer.calls.clear()
    return dl, installer


def test_stage_then_switch_then_switch_back_without_downloads(env):
    dl, installer = setup(env)
    new = Release(version="2.0.0", slot="b", rollout_id="r1")
    publish(env.store, 2, release=OLD, staged=new)
    result = dl.pull()
    assert result.status == "applied" and result.stage_error is None
    assert installer.calls == [("install", "2.0.0", "b")]  # installed, not switched
    assert active_release(env.cache) == ("1.0.0", "a")
    assert staged_release(env.cache) == ("2.0.0", "b") and result.staged == {"version": "2.0.0", "slot": "b"}
    assert installed_slots(env.cache) == {"a": "1.0.0", "b": "2.0.0"}
    health = env.cache.pending("health").to_pylist()[-1]
    assert (health["version"], health["slot"], health["desired_revision"]) == ("1.0.0", "a", 2)

    # the switch: release = the staged slot, previous = the old slot; nothing is downloaded
    installer.calls.clear()
    publish(env.store, 3, release=Release(version="2.0.0", slot="b", rollout_id="r1", phase=0), previous=OLD)
    result = dl.pull()
    assert installer.calls == [("switch", "b")] and result.install_error is None
    assert active_release(env.cache) == ("2.0.0", "b") and staged_release(env.cache) == (None, None)

    # rollback: the old slot is still installed, so it is a switch back
    installer.calls.clear()
    publish(env.store, 4, release=OLD)
    dl.pull()
    assert installer.calls == [("switch", "a")]
    assert active_release(env.cache) == ("1.0.0", "a")
    assert env.cache.pending("health").to_pylist()[-1]["version"] == "1.0.0"


def test_restaging_the_same_release_installs_nothing(env):
    dl, installer = setup(env)
    new = Release(version="2.0.0", slot="b", rollout_id="r1")
    publish(env.store, 2, release=OLD, staged=new)
    dl.pull()
    publish(env.store, 3, release=OLD, staged=new)  # e.g. a state edit rewrote the document
    dl.pull()
    assert installer.calls == [("install", "2.0.0", "b")]
    assert staged_release(env.cache) == ("2.0.0", "b")


def test_staging_onto_the_running_slot_is_refused(env):
    dl, installer = setup(env)
    publish(env.store, 2, release=OLD, staged=Release(version="2.0.0", slot="a", rollout_id="r1"))
    result = dl.pull()
    assert result.status == "applied" and "running" not in (result.install_error or "")
    assert result.stage_error and "slot a" in result.stage_error
    assert installer.calls == [] and installed_slots(env.cache) == {"a": "1.0.0"}
    assert active_release(env.cache) == ("1.0.0", "a") and staged_release(env.cache) == (None, None)
    assert [a["code"] for a in alerts(env.cache)] == ["stage_refused"]


def test_a_failed_staging_is_reported_and_changes_nothing_that_runs(env):
    dl, installer = setup(env)

    def broken(version: str, slot: str) -> None:
        raise OSError("disk full")

    installer.install = broken  # type: ignore[method-assign]
    publish(env.store, 2, release=OLD, staged=Release(version="2.0.0", slot="b"))
    result = dl.pull()
    assert result.stage_error and "disk full" in result.stage_error
    assert active_release(env.cache) == ("1.0.0", "a") and staged_release(env.cache) == (None, None)
    assert [a["code"] for a in alerts(env.cache)] == ["stage_failed"]


def test_documents_without_staged_are_signed_without_the_field(env):
    """Agents that predate ``staged`` forbid unknown fields: a document staging nothing must not carry it."""
    doc = DesiredState(tenant_id=TENANT, device_id="dev-1", revision=1, issued_hlc=pack(NOW, 0), release=OLD)
    signed = json.loads(desired.encode(doc, PLATFORM))
    assert "staged" not in signed["document"]
    staging = doc.model_copy(update={"staged": Release(version="2.0.0", slot="b")})
    assert json.loads(desired.encode(staging, PLATFORM))["document"]["staged"]["slot"] == "b"
    env.store.put(DESIRED_KEY, desired.encode(doc, PLATFORM))
    back = desired.decode(
        env.store.get(DESIRED_KEY),
        platform_keys=PLATFORM.public_key_bytes(),
        tenant_id=TENANT,
        device_id="dev-1",
    )
    assert back.staged is None and back.release == OLD
