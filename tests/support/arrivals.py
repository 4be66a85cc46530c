"""Driving the batch arrival sensor in tests: evaluate a tick on a real Dagster instance, launch its
runs the way the daemon would (a run key already launched is skipped), and an S3 bucket on moto
that sends its ObjectCreated notifications to an SQS queue."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import dagster as dg

from edgeplat.sync.ingest import ingest_objects
from pipelines.sensors import batch_arrival
from resources.arrival_queue import ArrivalNotifications
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from tests.support.fleet import Fleet
from tests.support.moto_server import moto_client


def run_keys(result: dg.SensorResult) -> list[str]:
    return [
        k
        for r in result.run_requests
        for k in r.run_config["ops"]["ingested_batches"]["config"]["object_keys"]
    ]


def skipped(result: dg.SensorResult) -> str:
    """The tick's skip message ('' when it requested runs)."""
    return result.skip_reason.skip_message if result.skip_reason else ""


@dataclass
class SensorDriver:
    """Ticks of ``batch_arrival_sensor`` over a fleet's store and lakehouse, and the daemon's part."""

    fleet: Fleet
    store: ObjectStoreResource
    instance: dg.DagsterInstance
    cursor: str | None = None
    launched: set[str] = field(default_factory=set)  # run keys, as the daemon deduplicates them
    ingested: list[str] = field(default_factory=list)  # object keys the launched runs were given

    def tick(self) -> dg.SensorResult:
        resources = {
            "object_store": self.store,
            "lakehouse": LakehouseResource(
                catalog=self.fleet.lake.config.catalog, data_path=self.fleet.lake.config.data_path
            ),
        }
        # a context manager, so nested resources (dagster-aws's S3Resource) are set up
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources=resources) as ctx:
            result = batch_arrival.batch_arrival_sensor(ctx)
        self.cursor = result.cursor or self.cursor
        return result

    def launch(self, result: dg.SensorResult) -> int:
        """Run the requested ingest runs not launched before (the op's call); returns how many ran."""
        ran = 0
        for r in result.run_requests:
            if r.run_key in self.launched:
                continue
            self.launched.add(r.run_key)
            keys = r.run_config["ops"]["ingested_batches"]["config"]["object_keys"]
            ingest_objects(self.fleet.env(), keys)
            self.ingested += keys
            ran += 1
        return ran


@dataclass(frozen=True)
class NotifyingBucket:
    """A moto bucket whose ObjectCreated events under ``prefix/`` go to ``queue_url``; ``dlq_url`` for poison."""

    endpoint: str
    bucket: str
    prefix: str
    queue_url: str
    dlq_url: str

    @property
    def notification(self) -> dict:
        sqs = moto_client(self.endpoint, "sqs")
        arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sqs.close()
        rules = [{"Name": "prefix", "Value": f"{self.prefix}/"}, {"Name": "suffix", "Value": ".batch"}]
        return {
            "QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"], "Filter": {"Key": {"FilterRules": rules}}}
            ]
        }

    def notify(self, on: bool) -> None:
        s3 = moto_client(self.endpoint)
        s3.put_bucket_notification_configuration(
            Bucket=self.bucket, NotificationConfiguration=self.notification if on else {}
        )
        s3.close()

    def queued(self, url: str | None = None) -> list[dict]:
        """Every message now visible on ``url`` (default: the arrival queue), left there."""
        sqs = moto_client(self.endpoint, "sqs")
        out = sqs.receive_message(
            QueueUrl=url or self.queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        sqs.close()
        return out

    def send(self, body: str | dict) -> None:
        sqs = moto_client(self.endpoint, "sqs")
        sqs.send_message(
            QueueUrl=self.queue_url, MessageBody=body if isinstance(body, str) else json.dumps(body)
        )
        sqs.close()


def notifying_bucket(endpoint: str, prefix: str = "fleet") -> NotifyingBucket:
    name = uuid.uuid4().hex[:12]
    s3, sqs = moto_client(endpoint), moto_client(endpoint, "sqs")
    s3.create_bucket(Bucket=f"arrivals-{name}")
    queue = sqs.create_queue(QueueName=f"arrivals-{name}")["QueueUrl"]
    dlq = sqs.create_queue(QueueName=f"arrivals-dlq-{name}")["QueueUrl"]
    s3.close()
    sqs.close()
    bucket = NotifyingBucket(endpoint, f"arrivals-{name}", prefix, queue, dlq)
    bucket.notify(True)
    return bucket


def sqs_notifications(b: NotifyingBucket, endpoint: str | None = None, **kw) -> ArrivalNotifications:
    """The arrival notifications of ``b`` (through ``endpoint``, e.g. a fault proxy, if given)."""
    return ArrivalNotifications(
        kind="sqs",
        queue_url=b.queue_url,
        dead_letter_url=b.dlq_url,
        endpoint_url=endpoint or b.endpoint,
        access_key_id="testing",
        secret_access_key="testing",
        visibility_timeout_s=0,  # an unacked message is checked again on the next tick
        wait_time_s=0,
        **kw,
    )
