"""Where the object store's object-created notifications arrive, as config of the object store resource.

``kind``: ``sqs`` (S3 event notifications on an SQS queue, read with boto3 and botocore's retry
modes), ``azure_queue`` (Event Grid blob-created events on a storage queue, read with
azure-storage-queue) or ``journal`` (the local store's journal in its root). The arrival sensor reads it
through :meth:`ArrivalNotifications.opener`; without it, the sensor lists the store.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlparse

import dagster as dg

from edge_sync.objectstore import LocalObjectStore, ObjectStore
from edgeplat.sync.arrival_queue import DEFAULT_VISIBILITY_TIMEOUT_S, ArrivalQueue
from edgeplat.sync.arrival_queue_azure import AzureQueueArrivalQueue
from edgeplat.sync.arrival_queue_journal import JournalArrivalQueue
from edgeplat.sync.arrival_queue_sqs import DEFAULT_RECEIVERS, SqsArrivalQueue
from edgeplat.sync.queue_arrivals import DEFAULT_MAX_MESSAGES

KINDS = ("sqs", "azure_queue", "journal")


class ArrivalNotifications(dg.Config):
    """The notification queue of the object store (see docs/operations.md, *Arrival notifications*)."""

    kind: str = "journal"
    queue_url: str = ""  # sqs: the queue S3 sends ObjectCreated events to
    dead_letter_url: str = ""  # sqs, optional: where poison messages are copied with their reason
    endpoint_url: str | None = None  # sqs, optional: a non-AWS SQS endpoint (moto in tests)
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    retry_mode: str = "standard"  # botocore retry mode: standard | adaptive
    max_attempts: int = 3
    visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S
    wait_time_s: int = 1
    max_messages: int = DEFAULT_MAX_MESSAGES  # per sensor tick: what one tick can drain at most
    receivers: int = DEFAULT_RECEIVERS  # sqs: concurrent receive/delete calls (10 messages each) per tick
    connection_string: str | None = None  # azure_queue: the storage account's (a secret: dg.EnvVar)
    queue_name: str = ""  # azure_queue: the storage queue Event Grid delivers to
    dead_letter_queue: str = ""  # azure_queue, optional: where poison goes, with its reason
    container: str = ""  # azure_queue: the blob container (default: the S3 store's bucket)
    prefix: str | None = None  # azure_queue: blob name prefix of the store (default: the S3 store's)

    def opener(self, store: ObjectStore) -> Callable[[dict | None], ArrivalQueue]:
        """A function from the sensor cursor's journal position to an open queue."""
        if self.kind not in KINDS:
            raise ValueError(f"arrival notifications kind {self.kind!r} is unknown: use one of {KINDS}")
        if self.kind == "journal":
            if not isinstance(store, LocalObjectStore):
                raise ValueError(
                    f"kind 'journal' needs a local object store, not {store.url}: use 'sqs' for S3"
                )
            root = store.root
            return lambda position: JournalArrivalQueue(
                root, position, visibility_timeout_s=self.visibility_timeout_s
            )
        url = urlparse(store.url)
        if self.kind == "azure_queue":
            container = self.container or url.netloc
            prefix = url.path.strip("/") if self.prefix is None else self.prefix
            if not container:
                raise ValueError(
                    "kind 'azure_queue' needs 'container' (the blob container Event Grid reports)"
                )
            return lambda _position: AzureQueueArrivalQueue(
                self.connection_string or "",
                self.queue_name,
                container=container,
                prefix=prefix,
                dead_letter_queue=self.dead_letter_queue or None,
                visibility_timeout_s=self.visibility_timeout_s,
                retry_total=max(self.max_attempts - 1, 0),
            )
        if url.scheme != "s3":
            raise ValueError(
                f"kind 'sqs' needs an S3 object store, not {store.url}: use 'journal' for a folder"
            )
        return lambda _position: SqsArrivalQueue(
            self.queue_url,
            bucket=url.netloc,
            prefix=url.path.strip("/"),
            endpoint_url=self.endpoint_url or None,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            retry_mode=self.retry_mode,  # type: ignore[arg-type]
            max_attempts=self.max_attempts,
            visibility_timeout_s=self.visibility_timeout_s,
            wait_time_s=self.wait_time_s,
            dead_letter_url=self.dead_letter_url or None,
            receivers=self.receivers,
        )
