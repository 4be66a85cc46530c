"""The installer's steps reach the lakehouse: health batches carrying update_state ingest, the
rollout reads them (``agent_updates``), ``devices`` follows the version a reverted device runs,
and an agent not yet upgraded (the old health schema) keeps ingesting, its new columns null."""

from __future__ import annotations

import pyarrow as pa

import edge_sync.batch as batch_module
from edge_sync.streams import STREAMS, StreamSpec
from edgeplat.rollouts.agent_updates import latest_updates
from edgeplat.sync.ingest import ingest_objects
from tests.support.fleet import Fleet, rows

HEALTH = STREAMS["health"]


def test_update_steps_ingest_and_old_agents_still_ingest(fleet: Fleet, monkeypatch) -> None:
    steps = ["downloading", "installed", "activated", "reverted"]
    versions = ["1.0", "1.0", "2.0", "1.0"]  # what ran at each step: the revert is back on 1.0
    new = fleet.batch(
        "t1",
        "d1",
        "health",
        range(1, 5),
        values={
            "version": versions,
            "update_state": steps,
            "update_version": ["2.0"] * 4,
            "update_reason": [None, None, None, "health_check: exited 1"],
        },
    )
    old_spec = StreamSpec(
        "health",
        pa.schema([f for f in HEALTH.payload if f.name not in HEALTH.added]),
        priority=HEALTH.priority,
        ttl_seconds=HEALTH.ttl_seconds,
        group_by=HEALTH.group_by,
    )
    with monkeypatch.context() as m:  # an agent from before update_state
        m.setattr(batch_module, "get_stream", lambda name: old_spec)
        old_rows = rows("health", "t1", "d2", range(1, 4)).select(old_spec.schema.names)
        old = batch_module.write_batch(
            old_rows,
            tenant_id="t1",
            device_id="d2",
            stream="health",
            key_service=fleet.keys,
            identity=fleet.device("t1", "d2"),
        )
    report = ingest_objects(fleet.env(), [fleet.upload(new), fleet.upload(old)])
    assert not report.quarantined and report.accepted == 2, report
    with fleet.lake.session(read_only=True) as con:
        got = con.execute("SELECT device_id, update_state FROM health ORDER BY device_id, seq").fetchall()
        facts = latest_updates(con, ["t1"], "2.0")
        reported = con.execute("SELECT reported_version FROM devices WHERE device_id = 'd1'").fetchall()
    assert got == [("d1", s) for s in steps] + [("d2", None)] * 3
    assert set(facts) == {("t1", "d1")} and facts[("t1", "d1")].gave_up
    assert facts[("t1", "d1")].reason == "health_check: exited 1"
    assert reported == [("1.0",)]
