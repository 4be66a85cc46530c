"""The arrival sensor driven by S3 event notifications on SQS (a real moto server delivers them):
duplicates, reordering, a lost notification found by the backstop, a queue outage (through a fault
proxy) with the listing fallback stated, poison messages; every batch ingested exactly once."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from edge_sync.objectstore_s3 import S3ObjectStore
from edgeplat.sync.arrival_queue_sqs import SqsArrivalQueue
from pipelines.sensors import batch_arrival
from resources.object_store import ObjectStoreResource
from tests.support.arrivals import SensorDriver, notifying_bucket, run_keys, skipped, sqs_notifications
from tests.support.fault_proxy import FaultProxy
from tests.support.fleet import Fleet
from tests.support.moto_server import MOTO_CREDENTIALS, moto_client

pytestmark = pytest.mark.services


def test_s3_notifications_drive_the_sensor_and_every_batch_is_ingested_once(
    fleet: Fleet, moto_server: str, monkeypatch
) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(batch_arrival, "now", lambda: clock[0])
    bucket = notifying_bucket(moto_server)
    fleet.store = S3ObjectStore(
        bucket.bucket,
        bucket.prefix,
        endpoint_url=moto_server,
        access_key_id=MOTO_CREDENTIALS["aws_access_key_id"],
        secret_access_key=MOTO_CREDENTIALS["aws_secret_access_key"],
    )
    proxy = FaultProxy(moto_server)
    with proxy as sqs_endpoint, dg.instance_for_test() as instance:
        store = ObjectStoreResource(  # S3 settings as dagster-aws names them, as in production
            url=f"s3://{bucket.bucket}/{bucket.prefix}",
            endpoint_url=moto_server,
            region_name="us-east-1",
            **MOTO_CREDENTIALS,
            notifications=sqs_notifications(bucket, sqs_endpoint),
        )
        sensor = SensorDriver(fleet, store, instance)
        # the first tick runs a backstop pass over the (empty) store; none is due for 10 minutes
        assert "backstop listed 0 keys" in skipped(sensor.tick())

        # reordered (newest first) and a duplicate of one notification
        keys = [fleet.upload(fleet.batch("t1", "d1", "telemetry", [s])) for s in (3, 2, 1)]
        keys.append(fleet.upload(fleet.batch("t2", "d1", "telemetry", [1, 2])))
        queued = bucket.queued()
        assert len(queued) == 4 and all(keys_named(m) for m in queued)
        bucket.send(queued[0]["Body"])
        # poison: not JSON, and an event of another bucket
        bucket.send("{not json")
        bucket.send(json.loads(queued[1]["Body"]) | {"Records": [other_bucket(queued[1]["Body"])]})

        first = sensor.tick()
        assert sorted(run_keys(first)) == sorted(keys)
        assert {r.tags["edgeplat/arrivals"] for r in first.run_requests} == {"notifications"}
        dead = bucket.queued(bucket.dlq_url)
        reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in dead)
        assert len(reasons) == 2 and "not JSON" in reasons[0] and "another bucket" in reasons[1]
        # not acked before their runs land: the five messages are still there
        assert len(bucket.queued()) == 5
        assert sensor.launch(first) == 2
        done = sensor.tick()
        assert not done.run_requests and "5 acked" in skipped(done)
        assert bucket.queued() == []

        # a lost notification: the backstop finds the object when it is due
        bucket.notify(False)
        lost = fleet.upload(fleet.batch("t1", "d2", "telemetry", [1]))
        bucket.notify(True)
        assert not sensor.tick().run_requests
        clock[0] += batch_arrival.BACKSTOP_INTERVAL_S + 1
        found = sensor.tick()
        assert run_keys(found) == [lost]
        sensor.launch(found)
        assert bucket.queued() == []

        # SQS unreachable (every request answered 503, retried by botocore): the sensor lists instead
        outage = proxy.inject("POST", r".*", status=503, times=1_000)
        during = fleet.upload(fleet.batch("t2", "d2", "telemetry", [1]))
        fallback = sensor.tick()
        assert run_keys(fallback) == [during]
        assert {r.tags["edgeplat/arrivals"] for r in fallback.run_requests} == {"listing-fallback"}
        sensor.launch(fallback)
        quiet = sensor.tick()
        assert "arrival queue unavailable, fell back to listing" in skipped(quiet)
        assert bucket.queue_url in skipped(quiet) and "ServiceUnavailable" in skipped(quiet)
        outage.times = outage.fired  # the queue is back: its notification of `during` is acked
        back = sensor.tick()
        assert not back.run_requests and "1 acked" in skipped(back)
        assert bucket.queued() == []

    everything = [*keys, lost, during]
    ledger = fleet.count("SELECT object_key, count(*) FROM batches GROUP BY 1")
    assert sorted(ledger) == sorted((k, 1) for k in everything)
    assert sorted(sensor.ingested) == sorted(everything)
    assert fleet.count("SELECT count(*), count(DISTINCT (tenant_id, device_id, seq)) FROM telemetry") == [
        (7, 7)
    ]


def keys_named(message: dict) -> list[str]:
    return [r["s3"]["object"]["key"] for r in json.loads(message["Body"]).get("Records", [])]


def other_bucket(body: str) -> dict:
    record = json.loads(body)["Records"][0]
    record["s3"]["bucket"]["name"] = "someone-elses-bucket"
    return record


@pytest.mark.parametrize("receivers", [1, 4])
def test_concurrent_receives_take_each_message_once_up_to_the_tick_bound(
    moto_server: str, receivers: int
) -> None:
    bucket = notifying_bucket(moto_server)
    keys = [
        f"tenant=t-1/device=d-{n:03d}/stream=telemetry/00000000000000000001-00000000000000000010.batch"
        for n in range(57)
    ]
    for key in keys:
        bucket.send(
            {
                "Records": [
                    {
                        "eventName": "ObjectCreated:Put",
                        "s3": {
                            "bucket": {"name": bucket.bucket},
                            "object": {"key": f"{bucket.prefix}/{key}"},
                        },
                    }
                ]
            }
        )
    queue = SqsArrivalQueue(
        bucket.queue_url,
        bucket=bucket.bucket,
        prefix=bucket.prefix,
        endpoint_url=moto_server,
        access_key_id=MOTO_CREDENTIALS["aws_access_key_id"],
        secret_access_key=MOTO_CREDENTIALS["aws_secret_access_key"],
        visibility_timeout_s=60,  # what a receive took stays hidden: nothing is taken twice
        wait_time_s=0,
        receivers=receivers,
    )
    try:
        first = queue.receive(35)  # the tick bound holds although more is queued
        rest = queue.receive(1_000)
        assert len(first) == 35 and len(rest) == 23  # 57 notifications and S3's test event
        named = [k for m in first + rest for k in m.keys]
        assert sorted(named) == sorted(keys)  # every notification once, none lost
        queue.ack(first + rest)  # concurrent delete_message_batch calls, 10 receipts each
    finally:
        queue.close()
    assert bucket.queued() == []
    sqs = moto_client(moto_server, "sqs")
    hidden = sqs.get_queue_attributes(
        QueueUrl=bucket.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]["ApproximateNumberOfMessagesNotVisible"]
    sqs.close()
    if receivers == 1:  # moto is not thread-safe: concurrent calls can leave a few in flight,
        # which come back after the visibility timeout and are acked then (docs/operations.md)
        assert hidden == "0"  # every message deleted, none left in flight with a stale receipt
    with pytest.raises(ValueError, match="receivers must be 1..64"):
        SqsArrivalQueue(bucket.queue_url, bucket=bucket.bucket, receivers=0)
