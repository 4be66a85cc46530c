"""The object store as a Dagster resource: a local folder by default, S3 through boto3 in production;
``notifications`` names where its object-created notifications arrive (resources/arrival_queue.py).

On S3 the connection (endpoint, region, credentials, attempts) may come from ``dagster-aws``'s
``S3Resource``, the field's standard S3 configuration; the store still builds its own client from
it, because it needs settings that resource does not carry (botocore's retry mode, checksum and
addressing options for conditional writes).
"""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3Resource

from edge_sync.objectstore import ObjectStore
from edge_sync.objectstore_url import from_url
from resources.arrival_queue import ArrivalNotifications


class ObjectStoreResource(dg.ConfigurableResource):
    """Where devices upload batches and fetch desired state: ``/path`` or ``s3://bucket/prefix``."""

    url: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    retry_mode: str = "standard"  # botocore retry mode: standard | adaptive
    max_attempts: int = 5
    notifications: ArrivalNotifications | None = None  # None: the arrival sensor lists the store
    s3: S3Resource | None = None  # when set, the S3 connection settings above come from it

    def get(self) -> ObjectStore:
        if not self.url.startswith("s3://"):
            return from_url(self.url)
        if self.s3 is not None:
            return from_url(
                self.url,
                endpoint_url=self.s3.endpoint_url or None,
                region=self.s3.region_name or self.region,
                access_key_id=self.s3.aws_access_key_id,
                secret_access_key=self.s3.aws_secret_access_key,
                session_token=self.s3.aws_session_token,
                retry_mode=self.retry_mode,
                max_attempts=self.s3.max_attempts,
            )
        return from_url(
            self.url,
            endpoint_url=self.endpoint_url or None,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            retry_mode=self.retry_mode,
            max_attempts=self.max_attempts,
        )
