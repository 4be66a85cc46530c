"""The object store as a Dagster resource: a local folder by default, S3 through boto3 in production;
``notifications`` names where its object-created notifications arrive (resources/arrival_queue.py).

Its S3 connection settings are dagster-aws's (``ResourceWithS3Configuration``, the fields of
``S3Resource``: ``endpoint_url``, ``region_name``, ``aws_access_key_id``, ...). The store still
builds its own client from them, because it needs what that resource's client does not set:
botocore's retry mode and the checksum and addressing options of conditional writes.
"""

from __future__ import annotations

from dagster_aws.s3.resources import ResourceWithS3Configuration

from edge_sync.objectstore import ObjectStore
from edge_sync.objectstore_url import from_url
from resources.arrival_queue import ArrivalNotifications


class ObjectStoreResource(ResourceWithS3Configuration):
    """Where devices upload batches and fetch desired state: ``/path`` or ``s3://bucket/prefix``."""

    url: str
    retry_mode: str = "standard"  # botocore retry mode: standard | adaptive
    notifications: ArrivalNotifications | None = None  # None: the arrival sensor lists the store

    def get(self) -> ObjectStore:
        if not self.url.startswith("s3://"):
            return from_url(self.url)
        return from_url(
            self.url,
            endpoint_url=self.endpoint_url or None,
            region=self.region_name or "us-east-1",
            access_key_id=self.aws_access_key_id,
            secret_access_key=self.aws_secret_access_key,
            session_token=self.aws_session_token,
            retry_mode=self.retry_mode,
            max_attempts=self.max_attempts,
        )
