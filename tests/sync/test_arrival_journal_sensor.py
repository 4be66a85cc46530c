"""The arrival sensor driven by the local store's journal: duplicates, reordering, a lost
notification found by the backstop, a journal outage with the listing fallback stated, a poison
line; every batch ingested exactly once."""

from __future__ import annotations

import json
import os

import dagster as dg

from edge_sync.objectstore_journal import append_record, enable_journal, journal_path
from edgeplat.sync.arrival_queue_journal import DEAD_LETTER_NAME
from pipelines.sensors import batch_arrival
from resources.arrival_queue import ArrivalNotifications
from resources.object_store import ObjectStoreResource
from tests.support.arrivals import SensorDriver, run_keys, skipped
from tests.support.fleet import Fleet


def test_journal_drives_the_sensor_and_every_batch_is_ingested_once(fleet: Fleet, monkeypatch) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(batch_arrival, "now", lambda: clock[0])
    enable_journal(fleet.store.root)
    journal = journal_path(fleet.store.root)
    store = ObjectStoreResource(
        url=str(fleet.store.root), notifications=ArrivalNotifications(kind="journal", visibility_timeout_s=0)
    )
    # reordered: a device's batches arrive newest first; a duplicate record for one of them
    keys = [fleet.upload(fleet.batch("t1", "d1", "telemetry", [s])) for s in (3, 2, 1)]
    keys.append(fleet.upload(fleet.batch("t2", "d1", "telemetry", [1, 2])))
    append_record(fleet.store.root, keys[0], 1)
    with dg.instance_for_test() as instance:
        sensor = SensorDriver(fleet, store, instance)
        first = sensor.tick()  # the first tick also runs a backstop pass
        assert sorted(run_keys(first)) == sorted(keys)
        assert {r.tags["edgeplat/arrivals"] for r in first.run_requests} == {"notifications"}
        assert json.loads(first.cursor)["journal"]["floor"] < json.loads(first.cursor)["journal"]["read"]
        # before the runs land nothing is acked: the same runs are asked for again (same run keys)
        again = sensor.tick()
        assert {r.run_key for r in again.run_requests} == {r.run_key for r in first.run_requests}
        assert sensor.launch(first) == 2
        # after the runs landed the messages are acked: the floor reaches the end of the journal
        done = sensor.tick()
        assert not done.run_requests and "5 acked" in skipped(done)
        assert json.loads(done.cursor)["journal"]["floor"] == os.path.getsize(journal)

        # a lost notification (the put landed, its record did not): the backstop finds it when due
        size = os.path.getsize(journal)
        lost = fleet.upload(fleet.batch("t1", "d2", "telemetry", [1]))
        os.truncate(journal, size)
        assert not sensor.tick().run_requests  # not due yet
        clock[0] += batch_arrival.BACKSTOP_INTERVAL_S + 1
        found = sensor.tick()
        assert run_keys(found) == [lost]
        sensor.launch(found)

        # a poison line does not block the records after it
        with open(journal, "ab") as f:
            f.write(b"\nthis is not a journal record\n")
        after_poison = fleet.upload(fleet.batch("t1", "d3", "telemetry", [1]))
        poisoned = sensor.tick()
        assert run_keys(poisoned) == [after_poison]
        dead = [json.loads(line) for line in (fleet.store.root / DEAD_LETTER_NAME).read_text().splitlines()]
        assert len(dead) == 1 and "not '<crc32> <json>'" in dead[0]["reason"]
        sensor.launch(poisoned)

        # the journal is gone (an outage of the queue): the sensor lists instead and says so
        os.replace(journal, journal.with_name("moved-away"))
        during = fleet.upload(fleet.batch("t2", "d2", "telemetry", [1]))
        fallback = sensor.tick()
        assert run_keys(fallback) == [during]
        assert {r.tags["edgeplat/arrivals"] for r in fallback.run_requests} == {"listing-fallback"}
        sensor.launch(fallback)
        quiet = sensor.tick()
        assert "arrival queue unavailable, fell back to listing" in skipped(quiet)
        assert "no arrival journal" in skipped(quiet)

        # the journal is back (rotated: a new file): read from its start, the backstop runs at once
        enable_journal(fleet.store.root)
        back = fleet.upload(fleet.batch("t2", "d3", "telemetry", [1]))
        resumed = sensor.tick()
        assert run_keys(resumed) == [back]
        sensor.launch(resumed)
        assert not sensor.tick().run_requests
        # notifications switched off: the listing sensor goes on from the cursor's listing position
        sensor.store = ObjectStoreResource(url=str(fleet.store.root))
        listed = sensor.tick()
        assert not listed.run_requests and skipped(listed).startswith("no new batch objects")

    everything = keys + [lost, after_poison, during, back]
    ledger = fleet.count("SELECT object_key, count(*) FROM batches GROUP BY 1")
    assert sorted(ledger) == sorted((k, 1) for k in everything)
    assert sorted(sensor.ingested) == sorted(everything)  # each key given to exactly one run
    assert fleet.count("SELECT count(*), count(DISTINCT (tenant_id, device_id, seq)) FROM telemetry") == [
        (9, 9)
    ]
