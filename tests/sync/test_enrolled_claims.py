"""The ingest sets a device's platform and tags from what it was enrolled with (signed into its batch
manifests), never over its platform's word: a disagreement is flagged in ``conflicts``."""

from __future__ import annotations

from datetime import UTC, datetime

from edge_sync.batch import read_manifest, write_batch
from edgeplat.inventory.claims import DeviceClaim
from edgeplat.inventory.store import fold_claims, show_device
from edgeplat.sync.ingest import ingest_objects
from tests.support.fleet import Fleet, rows


def _upload(fleet: Fleet, device: str, seqs: range, **enrolled) -> str:
    batch = write_batch(
        rows("telemetry", "t1", device, seqs),
        tenant_id="t1",
        device_id=device,
        stream="telemetry",
        key_service=fleet.keys,
        identity=fleet.device("t1", device),
        created_ms=fleet.clock(),
        **enrolled,
    )
    return fleet.upload(batch)


def test_enrolled_platform_and_tags_reach_devices_with_their_source(fleet: Fleet) -> None:
    key = _upload(fleet, "d1", range(1, 11), platform="edge_agent", tags={"channel": "beta", "site": "lyon"})
    plain = _upload(fleet, "d2", range(1, 11))
    assert read_manifest(fleet.store.get(key)).platform == "edge_agent"
    assert b'"platform"' not in fleet.store.get(plain)[:2000]  # unset: not in the signed bytes
    ingest_objects(fleet.env(), [key, plain])
    with fleet.lake.session(read_only=True) as con:
        d1, d2 = show_device(con, "t1", "d1"), show_device(con, "t1", "d2")
    assert d1["platform"] == "edge_agent" and d1["tags"] == {"channel": "beta", "site": "lyon"}
    assert d1["sources"]["platform"] == "edge_agent" and d1["connectivity"] == "online"
    assert d2["platform"] is None and d2["conflicts"] is None


def test_a_device_contradicting_its_platform_is_flagged_not_believed(fleet: Fleet) -> None:
    hub = DeviceClaim("t1", "d1", "iot_hub", platform="iot_edge", tags={"channel": "stable"})
    fleet.lake.write(lambda con: fold_claims(con, [hub], datetime.now(UTC)), what="hub")
    ingest_objects(
        fleet.env(), [_upload(fleet, "d1", range(1, 11), platform="edge_agent", tags={"channel": "beta"})]
    )
    with fleet.lake.session(read_only=True) as con:
        d1 = show_device(con, "t1", "d1")
        n = con.execute("SELECT count(*) FROM devices WHERE device_id = 'd1'").fetchone()[0]
    assert n == 1 and d1["platform"] == "iot_edge" and d1["tags"] == {"channel": "stable"}
    assert {c["field"]: c["claims"] for c in d1["conflicts"]} == {
        "platform": {"edge_agent": "edge_agent", "iot_hub": "iot_edge"},
        "tags.channel": {"edge_agent": "beta", "iot_hub": "stable"},
    }
    assert d1["last_batch_at"] is not None  # the ingest's own fields are kept as ever
