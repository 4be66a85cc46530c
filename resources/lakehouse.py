"""The lakehouse as a Dagster resource: configuration in, an ``edgeplat.lakehouse.Lakehouse`` out."""

from __future__ import annotations

import dagster as dg

from edgeplat.lakehouse import Lakehouse, LakehouseConfig, S3Settings


class LakehouseResource(dg.ConfigurableResource):
    """DuckDB + DuckLake: SQLite catalog and local data by default, PostgreSQL + S3 in production."""

    catalog: str  # "sqlite:<path>" or "postgres:<libpq DSN>"
    data_path: str  # a folder, or s3://bucket/prefix/
    metadata_schema: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None

    def get(self) -> Lakehouse:
        s3 = None
        if self.data_path.startswith("s3://"):
            s3 = S3Settings(
                endpoint_url=self.s3_endpoint_url or None,
                access_key_id=self.s3_access_key_id,
                secret_access_key=self.s3_secret_access_key,
                region=self.s3_region,
            )
        return Lakehouse(
            LakehouseConfig(
                catalog=self.catalog,
                data_path=self.data_path,
                s3=s3,
                metadata_schema=self.metadata_schema or None,
            )
        )
