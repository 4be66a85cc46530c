"""The downlink: verify, refuse, apply the release, merge central edits with the shared rules, report health."""

from __future__ import annotations

import json

import pytest

from edge_sync.desired import Release, StateEdit
from edge_sync.downlink import Downlink, active_release, applied_revision, merge_central_edits
from edge_sync.hlc import pack
from edge_sync.identity import PlatformSigner
from edge_sync.rules import default_rules, parse_rules
from tests.support.device import DEVICE, NOW, TENANT
from tests.support.downlink import DESIRED_KEY, PLATFORM, alerts, publish


def downlink(env, **kw) -> Downlink:
    return Downlink(
        env.cache, env.store, platform_keys=PLATFORM.public_key_bytes(), rules=default_rules(), **kw
    )


def test_absent_document_is_a_no_op(env):
    assert downlink(env).pull().status == "absent"


def test_release_applied_and_reported_in_health(env):
    publish(
        env.store,
        3,
        release=Release(version="2.1.0", slot="b", rollout_id="r1", phase=1),
        issued_hlc=pack(NOW + 60_000, 5),
    )
    result = downlink(env).pull()
    assert result.status == "applied" and result.revision == 3
    assert active_release(env.cache) == ("2.1.0", "b")
    assert applied_revision(env.cache) == 3
    assert env.cache.stats()["last_hlc"] > pack(NOW + 60_000, 5)  # the clock observed issued_hlc
    health = env.cache.pending("health").to_pylist()
    assert [(h["version"], h["slot"], h["desired_revision"]) for h in health] == [("2.1.0", "b", 3)]
    # the same revision again changes nothing and reports nothing new
    assert downlink(env).pull().status == "unchanged"
    assert env.cache.pending("health").num_rows == 1


def test_tampered_document_is_refused_with_one_alert(env):
    data = publish(env.store, 1, release=Release(version="1.0.0"))
    signed = json.loads(data)
    signed["document"]["release"]["version"] = "6.6.6-evil"
    env.store.put(DESIRED_KEY, json.dumps(signed).encode())
    dl = downlink(env)
    for _ in range(2):
        result = dl.pull()
        assert result.status == "refused" and result.reason == "bad_signature"
    assert active_release(env.cache) == (None, None) and applied_revision(env.cache) == 0
    assert [(a["severity"], a["code"]) for a in alerts(env.cache)] == [("critical", "desired_bad_signature")]


def test_document_signed_by_another_key_is_refused(env):
    publish(env.store, 1, release=Release(version="1.0.0"), signer=PlatformSigner.generate())
    assert downlink(env).pull().reason == "bad_signature"


def test_older_revision_is_refused(env):
    publish(env.store, 5, release=Release(version="2.0.0", slot="b"))
    assert downlink(env).pull().status == "applied"
    publish(env.store, 4, release=Release(version="1.0.0", slot="a"))  # a replayed older document
    result = downlink(env).pull()
    assert result.status == "refused" and result.reason == "stale_revision"
    assert active_release(env.cache) == ("2.0.0", "b")
    assert [a["code"] for a in alerts(env.cache)] == ["desired_stale_revision"]


def test_document_for_another_device_is_refused(env):
    publish(env.store, 1, device="dev-2", release=Release(version="1.0.0"))
    result = downlink(env).pull()
    assert result.status == "refused" and result.reason == "wrong_device"
    assert alerts(env.cache)[0]["code"] == "desired_wrong_device"


def test_central_edits_merge_with_the_shared_rules(env):
    # device edits at HLC ~ NOW; central edits one second later
    env.cache.put("config", "pump", {"mode": "eco", "calibration": 1.5, "threshold": 10})
    later = pack(NOW + 1000, 0)
    earlier = pack(NOW - 1000, 0)
    edits = [
        StateEdit(
            namespace="config", key="pump", field="mode", value='"boost"', hlc=later
        ),  # lww: later wins
        StateEdit(
            namespace="config", key="pump", field="calibration", value="2.0", hlc=later
        ),  # prefer_device
        StateEdit(namespace="config", key="pump", field="threshold", value="5", hlc=later),  # max: 10 stays
        StateEdit(namespace="config", key="valve", field="mode", value='"open"', hlc=earlier),  # new key
    ]
    publish(env.store, 1, state_edits=edits)
    result = downlink(env).pull()
    assert result.status == "applied" and result.edits_received == 4
    assert env.cache.get_state("config", "pump") == {"mode": "boost", "calibration": 1.5, "threshold": 10}
    assert env.cache.get_state("config", "valve") == {"mode": "open"}
    rows = {
        (r["key"], r["field"]): r for r in env.cache.state_table().to_pylist() if r["namespace"] == "config"
    }
    assert rows[("pump", "mode")]["origin"] == "central" and rows[("pump", "mode")]["hlc"] == later
    assert rows[("pump", "calibration")]["origin"] == "device"
    # central state edits are not re-uploaded as device edits
    assert env.cache.pending("state").num_rows == 3


def test_a_central_lww_edit_older_than_the_device_edit_loses(env):
    env.cache.put("config", "pump", {"mode": "eco"})
    publish(
        env.store,
        1,
        state_edits=[
            StateEdit(namespace="config", key="pump", field="mode", value='"boost"', hlc=pack(NOW - 5000, 0))
        ],
    )
    downlink(env).pull()
    assert env.cache.get_state("config", "pump") == {"mode": "eco"}


def test_merge_matches_the_reference_merge():
    rules = parse_rules(
        {"version": 2, "default": "lww", "namespaces": {"c": {"fields": {"n": "counter", "t": "set_union"}}}}
    )
    import pyarrow as pa

    from edge_sync.cache_store import STATE_SCHEMA

    state = pa.Table.from_pylist(
        [
            {
                "namespace": "c",
                "key": "k",
                "field": "n",
                "value": "3",
                "hlc": 10,
                "node_id": DEVICE,
                "origin": "device",
            },
            {
                "namespace": "c",
                "key": "k",
                "field": "t",
                "value": '["a"]',
                "hlc": 10,
                "node_id": DEVICE,
                "origin": "device",
            },
        ],
        schema=STATE_SCHEMA,
    )
    edits = [
        StateEdit(namespace="c", key="k", field="n", value="4", hlc=20),
        StateEdit(namespace="c", key="k", field="t", value='["b"]', hlc=20),
    ]
    changed = {
        r["field"]: r["value"]
        for r in merge_central_edits(state, edits, rules, tenant_id=TENANT, device_id=DEVICE).to_pylist()
    }
    assert changed == {"n": "7", "t": '["a","b"]'}


def test_counter_increments_are_not_applied_twice(env):
    edit = StateEdit(namespace="config", key="pump", field="boot_count", value="2", hlc=pack(NOW + 10, 0))
    publish(env.store, 1, state_edits=[edit])
    downlink(env).pull()
    publish(env.store, 2, state_edits=[edit])  # the next document carries the same edit again
    result = downlink(env).pull()
    assert env.cache.get_state("config", "pump") == {"boot_count": 2}
    assert result.dropped_edits and "already applied" in result.dropped_edits[0]


def test_reserved_namespace_edits_are_dropped(env):
    publish(
        env.store,
        1,
        state_edits=[
            StateEdit(namespace="_agent", key="desired", field="revision", value="99", hlc=pack(NOW, 1))
        ],
    )
    result = downlink(env).pull()
    assert applied_revision(env.cache) == 1 and "reserved" in result.dropped_edits[0]


class BrokenInstaller:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def install(self, version, slot):
        self.calls.append(("install", version, slot))
        raise RuntimeError("disk full")

    def switch(self, slot):
        self.calls.append(("switch", slot))

    def rollback(self, previous):
        self.calls.append(("rollback", previous))


def test_failed_install_rolls_back_and_alerts(env):
    installer = BrokenInstaller()
    publish(
        env.store, 2, release=Release(version="3.0.0", slot="b"), previous=Release(version="2.9.0", slot="a")
    )
    result = downlink(env, installer=installer).pull()
    assert result.status == "applied" and "disk full" in result.install_error
    assert installer.calls == [("install", "3.0.0", "b"), ("rollback", Release(version="2.9.0", slot="a"))]
    assert [a["code"] for a in alerts(env.cache)] == ["install_failed"]
    assert env.cache.pending("health").to_pylist()[0]["version"] is None  # it does not claim 3.0.0


class RecordingInstaller:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def install(self, version, slot):
        self.calls.append(("install", version, slot))

    def switch(self, slot):
        self.calls.append(("switch", slot))

    def rollback(self, previous):  # pragma: no cover - not called on success
        self.calls.append(("rollback", previous))


def test_pluggable_installer_gets_install_then_switch(env):
    installer = RecordingInstaller()
    publish(env.store, 1, release=Release(version="1.1.0", slot="b"))
    downlink(env, installer=installer).pull()
    assert installer.calls == [("install", "1.1.0", "b"), ("switch", "b")]
    assert active_release(env.cache) == ("1.1.0", "b")


@pytest.mark.parametrize("junk", [b"not json", b'{"document": {}, "signature": "AAAA"}'])
def test_junk_documents_are_refused(env, junk):
    env.store.put(DESIRED_KEY, junk)
    assert downlink(env).pull().status == "refused"
