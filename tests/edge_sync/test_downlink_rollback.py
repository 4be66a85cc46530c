"""The device side of a rollback the platform cannot name a release for (``rollback_of``): the agent
goes back to what it recorded running before the rollout, once, and only if it still runs the
rolled-back release; documents without the field are signed as before."""

from __future__ import annotations

import json

from edge_sync import desired
from edge_sync.desired import DesiredState, Release, RollbackOf
from edge_sync.downlink import Downlink, active_release, before_rollout, installed_slots
from edge_sync.hlc import pack
from tests.support.device import DEVICE, NOW, TENANT
from tests.support.downlink import PLATFORM, RecordingInstaller, alerts, publish, recording_downlink

BAD = Release(version="2.0.0", slot="a", rollout_id="r1", phase=0)
UNDO = RollbackOf(rollout_id="r1", version="2.0.0")


def factory_device(env, version: str | None = "1.0.0") -> tuple[Downlink, RecordingInstaller]:
    """A device running its factory image on slot a, with no desired-state document so far."""
    dl, installer = recording_downlink(env.cache, env.store, PLATFORM.public_key_bytes())
    if version is not None:
        installer.install(version, "a")
        installer.switch("a")
        installer.calls.clear()
    return dl, installer


def test_goes_back_to_the_release_it_ran_before_the_rollout(env):
    dl, installer = factory_device(env)
    publish(env.store, 1, release=BAD)
    assert dl.pull().install_error is None
    assert active_release(env.cache) == ("2.0.0", "a")
    assert before_rollout(env.cache, "r1") == ("1.0.0", "a")  # recorded before installing

    publish(env.store, 2, rollback_of=UNDO)
    installer.calls.clear()
    result = dl.pull()
    assert result.status == "applied" and result.install_error is None
    assert active_release(env.cache) == ("1.0.0", "a")
    assert installer.calls == [("install", "1.0.0", "a"), ("switch", "a")]  # in place: slot a held 2.0.0
    health = env.cache.pending("health").to_pylist()[-1]
    assert (health["version"], health["slot"], health["desired_revision"]) == ("1.0.0", "a", 2)
    assert before_rollout(env.cache, "r1") == ("1.0.0", "a")  # going back does not rewrite the record

    # a later revision still carrying the rollback (a state edit) changes nothing
    installer.calls.clear()
    publish(env.store, 3, rollback_of=UNDO)
    assert dl.pull().status == "applied" and installer.calls == []
    assert active_release(env.cache) == ("1.0.0", "a") and alerts(env.cache) == []


def test_going_back_to_a_kept_slot_is_a_switch(env):
    dl, installer = factory_device(env)
    publish(env.store, 1, release=BAD.model_copy(update={"slot": "b"}))  # a blue/green switch to slot b
    dl.pull()
    installer.calls.clear()
    publish(env.store, 2, rollback_of=UNDO)
    dl.pull()
    assert installer.calls == [("switch", "a")] and active_release(env.cache) == ("1.0.0", "a")
    assert installed_slots(env.cache) == {"a": "1.0.0", "b": "2.0.0"}


def test_the_first_record_of_a_rollout_wins(env):
    dl, _ = factory_device(env)
    publish(env.store, 1, release=BAD)
    dl.pull()
    publish(env.store, 2, release=BAD.model_copy(update={"phase": 1}), state_edits=[])  # same rollout again
    dl.pull()
    publish(env.store, 3, release=Release(version="3.0.0", slot="a", rollout_id="r2", phase=0))
    dl.pull()
    assert before_rollout(env.cache, "r1") == ("1.0.0", "a")
    assert before_rollout(env.cache, "r2") == ("2.0.0", "a")


def test_a_device_that_never_installed_the_release_keeps_what_it_runs(env):
    """Offline for the whole rollout: its first document is the rollback."""
    dl, installer = factory_device(env)
    publish(env.store, 2, rollback_of=UNDO)
    result = dl.pull()
    assert result.status == "applied" and result.install_error is None
    assert installer.calls == [] and active_release(env.cache) == ("1.0.0", "a")
    assert alerts(env.cache) == []


def test_a_failed_install_then_the_rollback_changes_nothing(env):
    dl, installer = factory_device(env)

    def broken(version: str, slot: str) -> None:
        raise OSError("disk full")

    installer.install = broken  # type: ignore[method-assign]
    publish(env.store, 1, release=BAD)
    assert "disk full" in dl.pull().install_error
    assert active_release(env.cache) == ("1.0.0", "a")
    publish(env.store, 2, rollback_of=UNDO)
    assert dl.pull().install_error is None and active_release(env.cache) == ("1.0.0", "a")


def test_without_a_record_the_device_says_so_and_keeps_running(env):
    """No factory bookkeeping (an agent with a fresh cache): it cannot know what to go back to."""
    dl, installer = factory_device(env, version=None)
    publish(env.store, 1, release=BAD)
    dl.pull()
    assert before_rollout(env.cache, "r1") == (None, None)
    publish(env.store, 2, rollback_of=UNDO)
    result = dl.pull()
    assert result.install_error and "no record of what it ran before" in result.install_error
    assert active_release(env.cache) == ("2.0.0", "a")
    publish(env.store, 3, rollback_of=UNDO)
    dl.pull()
    assert [(a["severity"], a["code"]) for a in alerts(env.cache)] == [
        ("critical", "rollback_unknown_previous")
    ]


def test_documents_without_rollback_of_are_signed_without_the_field():
    """Agents that predate ``rollback_of`` forbid unknown fields: documents without it must not carry it."""
    doc = DesiredState(tenant_id=TENANT, device_id=DEVICE, revision=1, issued_hlc=pack(NOW, 0), release=BAD)
    assert "rollback_of" not in json.loads(desired.encode(doc, PLATFORM))["document"]
    undo = doc.model_copy(update={"release": None, "rollback_of": UNDO})
    signed = json.loads(desired.encode(undo, PLATFORM))
    assert signed["document"]["rollback_of"] == {"rollout_id": "r1", "version": "2.0.0"}
    back = desired.decode(
        json.dumps(signed).encode(),
        platform_keys=PLATFORM.public_key_bytes(),
        tenant_id=TENANT,
        device_id=DEVICE,
    )
    assert back.rollback_of == UNDO and back.release is None
