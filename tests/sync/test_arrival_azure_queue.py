"""The arrival sensor driven by Event Grid BlobCreated events on an Azure storage queue, served by
a loopback double of the Queue service REST API (tests/support/azure_queue_double.py; the test
plays Event Grid): duplicates, reordering, poison, a lost event found by the backstop, an outage
with the listing fallback stated; every batch ingested exactly once."""

from __future__ import annotations

import base64
import json

import dagster as dg
from azure.storage.queue import QueueClient

from pipelines.sensors import batch_arrival
from resources.arrival_queue import ArrivalNotifications
from resources.object_store import ObjectStoreResource
from tests.support.arrivals import SensorDriver, run_keys, skipped
from tests.support.azure_queue_double import running_azure_queue_double
from tests.support.fleet import Fleet

CONTAINER, PREFIX = "batches", "fleet"


def blob_created(key: str, container: str = CONTAINER) -> str:
    """An Event Grid event as Event Grid writes it to a storage queue (Base64 of the JSON)."""
    event = {
        "eventType": "Microsoft.Storage.BlobCreated",
        "subject": f"/blobServices/default/containers/{container}/blobs/{PREFIX}/{key}",
        "data": {"api": "PutBlob", "contentLength": 1},
    }
    return base64.b64encode(json.dumps(event).encode()).decode()


def test_event_grid_events_drive_the_sensor_and_every_batch_is_ingested_once(
    fleet: Fleet, monkeypatch
) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(batch_arrival, "now", lambda: clock[0])
    with running_azure_queue_double() as service, dg.instance_for_test() as instance:
        conn = service.connection_string()
        for name in ("arrivals", "arrivals-dlq"):
            QueueClient.from_connection_string(conn, name).create_queue()
        grid = QueueClient.from_connection_string(conn, "arrivals")
        store = ObjectStoreResource(
            url=str(fleet.store.root),  # the store the container's blobs are read through
            notifications=ArrivalNotifications(
                kind="azure_queue",
                connection_string=conn,
                queue_name="arrivals",
                dead_letter_queue="arrivals-dlq",
                container=CONTAINER,
                prefix=PREFIX,
                visibility_timeout_s=0,
                max_attempts=1,  # no retries: the outage shows at once
            ),
        )
        sensor = SensorDriver(fleet, store, instance)
        assert "backstop listed 0 keys" in skipped(sensor.tick())

        keys = [fleet.upload(fleet.batch("t1", "d1", "telemetry", [s])) for s in (2, 1)]  # newest first
        for key in [*keys, keys[0]]:  # and one event twice
            grid.send_message(blob_created(key))
        grid.send_message("%% not base64 %%")
        grid.send_message(blob_created(keys[1], container="elsewhere"))
        first = sensor.tick()
        assert sorted(run_keys(first)) == sorted(keys)
        dead = [json.loads(m.text)["reason"] for m in service.messages("arrivals-dlq")]
        assert len(dead) == 2 and "neither JSON nor Base64" in dead[0] and "not container" in dead[1]
        assert len(service.messages("arrivals")) == 3  # not acked before the runs land
        sensor.launch(first)
        assert "3 acked" in skipped(sensor.tick()) and service.messages("arrivals") == []

        lost = fleet.upload(fleet.batch("t1", "d2", "telemetry", [1]))  # its event never came
        assert not sensor.tick().run_requests
        clock[0] += batch_arrival.BACKSTOP_INTERVAL_S + 1
        found = sensor.tick()
        assert run_keys(found) == [lost]
        sensor.launch(found)

        service.outage = True
        during = fleet.upload(fleet.batch("t2", "d1", "telemetry", [1]))
        grid_event = blob_created(during)
        fallback = sensor.tick()
        assert run_keys(fallback) == [during]
        assert {r.tags["edgeplat/arrivals"] for r in fallback.run_requests} == {"listing-fallback"}
        sensor.launch(fallback)
        quiet = sensor.tick()
        assert "arrival queue unavailable, fell back to listing" in skipped(
            quiet
        ) and "ServerBusy" in skipped(quiet)
        service.outage = False
        grid.send_message(grid_event)  # Event Grid retries delivery once the queue is back
        assert "1 acked" in skipped(sensor.tick()) and service.messages("arrivals") == []

    everything = [*keys, lost, during]
    ledger = fleet.count("SELECT object_key, count(*) FROM batches GROUP BY 1")
    assert sorted(ledger) == sorted((k, 1) for k in everything)
    assert sorted(sensor.ingested) == sorted(everything)
