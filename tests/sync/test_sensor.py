"""The batch arrival sensor: versioned JSON cursor, bounded keys per tick, stable run keys, late objects."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from edgeplat.sync.arrivals import ArrivalCursor, CursorError, plan_arrivals
from edgeplat.sync.reconcile import reconcile
from pipelines.sensors import batch_arrival
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from tests.support.fleet import Fleet


def upload_many(fleet: Fleet, tenant: str, device: str, n: int) -> list[str]:
    return [fleet.upload(fleet.batch(tenant, device, "telemetry", [i])) for i in range(1, n + 1)]


def tick(fleet: Fleet, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    resources = {
        "object_store": ObjectStoreResource(url=str(fleet.store.root)),
        "lakehouse": LakehouseResource(
            catalog=fleet.lake.config.catalog, data_path=fleet.lake.config.data_path
        ),
    }
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    return batch_arrival.batch_arrival_sensor(ctx)


def test_cursor_is_versioned_json_and_bad_cursors_are_clear_errors() -> None:
    c = ArrivalCursor("tenant=a/device=d/stream=logs/x.batch")
    assert json.loads(c.to_json()) == {"v": 1, "after": c.after}
    assert ArrivalCursor.from_json(c.to_json()) == c and ArrivalCursor.from_json(None) == ArrivalCursor()
    for bad in ("not json", '{"v": 2, "after": null}', '{"after": "x"}'):
        with pytest.raises(CursorError, match="reset"):
            ArrivalCursor.from_json(bad)


def test_planner_lists_a_bounded_number_of_keys_per_tick_and_pages_on(fleet: Fleet) -> None:
    keys = upload_many(fleet, "t1", "d1", 12) + upload_many(fleet, "t2", "d1", 5)
    fleet.store.put("tenant=t1/device=d1/desired.json", b"{}")
    cursor, seen, ticks = ArrivalCursor(), [], 0
    while True:
        plan = plan_arrivals(fleet.store, cursor, max_keys=5, keys_per_run=3, page_size=2)
        assert plan.listed <= 5 and all(len(r.keys) <= 3 for r in plan.runs)
        assert all(len({k.split("/")[0] for k in r.keys}) == 1 for r in plan.runs)  # one tenant per run
        seen += [k for r in plan.runs for k in r.keys]
        cursor, ticks = plan.cursor, ticks + 1
        if plan.caught_up:
            break
    assert sorted(seen) == sorted(keys) and ticks == 4  # 18 keys, 5 per tick
    # the same cursor plans the same runs with the same run keys
    a = plan_arrivals(fleet.store, ArrivalCursor(), max_keys=5, keys_per_run=3)
    b = plan_arrivals(fleet.store, ArrivalCursor(), max_keys=5, keys_per_run=3)
    assert [r.run_key for r in a.runs] == [r.run_key for r in b.runs] and len(
        set(r.run_key for r in a.runs)
    ) == 2


def test_sensor_requests_tagged_runs_and_sees_a_late_object_before_the_cursor_on_its_next_pass(
    fleet: Fleet, monkeypatch
) -> None:
    monkeypatch.setattr(batch_arrival, "MAX_KEYS_PER_TICK", 4)
    upload_many(fleet, "t2", "d1", 6)
    with dg.instance_for_test() as instance:
        first = tick(fleet, instance, None)
        assert (
            len(first.run_requests) == 1
            and len(first.run_requests[0].run_config["ops"]["ingested_batches"]["config"]["object_keys"]) == 4
        )
        assert first.run_requests[0].tags["edgeplat/ingest-tenant"] == "t2"
        assert json.loads(first.cursor)["v"] == 1
        again = tick(fleet, instance, None)
        assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
        second = tick(fleet, instance, first.cursor)
        assert (
            sum(
                len(r.run_config["ops"]["ingested_batches"]["config"]["object_keys"])
                for r in second.run_requests
            )
            == 2
        )
        assert (
            second.cursor == ArrivalCursor(None).to_json()
        )  # the end of the store: the next pass starts over
        # a device that was offline uploads an object that sorts before where the listing stopped:
        # the next pass sees it (the runs were not launched, so the unsettled t2 keys come again too)
        late = fleet.upload(fleet.batch("t1", "late", "telemetry", [1, 2, 3]))
        third = tick(fleet, instance, second.cursor)
        assert late in {
            k
            for r in third.run_requests
            for k in r.run_config["ops"]["ingested_batches"]["config"]["object_keys"]
        }
    rep = reconcile(fleet.env(), compaction=False)
    assert late in {r[0] for r in fleet.count("SELECT object_key FROM batches")}
    assert rep.missed.accepted == 7  # the late one and the six the (not launched) runs would have taken
    with dg.instance_for_test() as instance:
        assert not tick(fleet, instance, None).run_requests  # everything is settled in the ledger now
