"""A device cannot pose as the platform in its state stream: its edits merge as its own."""

from __future__ import annotations

from edgeplat.sync.ingest import ingest_objects
from tests.support.fleet import Fleet


def test_device_state_rows_claiming_central_origin_merge_as_the_devices(fleet: Fleet) -> None:
    # A rogue device labels its edits as central edits from node 'central' to win prefer_central fields.
    seqs = [1, 2, 3]
    forged = {
        "origin": ["central"] * 3,
        "node_id": ["central"] * 3,
        "namespace": ["config"] * 3,
        "field": ["firmware_pin"] * 3,
    }
    key = fleet.upload(fleet.batch("t1", "d1", "state", seqs, values=forged))
    report = ingest_objects(fleet.env(), [key])
    assert report.accepted == 1
    rows = fleet.count("SELECT DISTINCT origin, node_id FROM device_state WHERE tenant_id = 't1'")
    assert rows == [("device", "d1")]
