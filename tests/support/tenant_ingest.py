"""Per-tenant ingest on the production layout (PostgreSQL catalog, S3 data on a moto server).

The PostgreSQL tenant-ingest test and the tenant-scaling benchmark build the same lakehouse
and worker spec; this is that one setup.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edge_sync.objectstore_s3 import S3ObjectStore
from edgeplat.lakehouse import Lakehouse, LakehouseConfig, S3Settings
from edgeplat.simulator.tenant_batches import TenantBatches
from edgeplat.sync.tenant_workers import IngestWorkerSpec
from tests.support.moto_server import MOTO_CREDENTIALS
from tests.support.postgres import PG_DSN, fresh_schema

S3_CREDS = {
    "access_key_id": MOTO_CREDENTIALS["aws_access_key_id"],
    "secret_access_key": MOTO_CREDENTIALS["aws_secret_access_key"],
}
FLEET_PREFIX = "fleet"


def fleet_store(endpoint: str, bucket: str) -> S3ObjectStore:
    """The devices' object store: the bucket's ``fleet`` prefix."""
    return S3ObjectStore(bucket, FLEET_PREFIX, endpoint_url=endpoint, **S3_CREDS)


@contextmanager
def postgres_s3_ingest(
    endpoint: str,
    bucket: str,
    batches: TenantBatches,
    *,
    lake_prefix: str,
    schema_prefix: str = "edgeplat_test",
    objects_prefix: str = FLEET_PREFIX,
) -> Iterator[tuple[Lakehouse, IngestWorkerSpec]]:
    """A fresh lakehouse (a new PostgreSQL schema, data under ``s3://bucket/<lake_prefix>/``) and the
    spec tenant workers ingest ``batches`` (under ``objects_prefix``) with; the schema is dropped
    afterwards."""
    with fresh_schema(schema_prefix) as schema:
        lake_config = LakehouseConfig(
            catalog=f"postgres:{PG_DSN}",
            data_path=f"s3://{bucket}/{lake_prefix}/",
            metadata_schema=schema,
            s3=S3Settings(endpoint_url=endpoint, **S3_CREDS),
        )
        lake = Lakehouse(lake_config)
        lake.ensure_schema()
        yield (
            lake,
            IngestWorkerSpec(
                lake=lake_config,
                objects_url=f"s3://{bucket}/{objects_prefix}",
                keys_dir=str(batches.keys_dir),
                registry_dir=str(batches.registry_dir),
                s3_endpoint_url=endpoint,
                s3_access_key_id=S3_CREDS["access_key_id"],
                s3_secret_access_key=S3_CREDS["secret_access_key"],
            ),
        )
