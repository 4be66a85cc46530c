"""The one place that chooses resources for an environment (``EDGEPLAT_ENV``).

``local`` (default): everything embedded under ``EDGEPLAT_HOME``: SQLite-catalogued
DuckLake, a folder as object store. ``production``: PostgreSQL catalog, S3 data and
objects. Secrets reach resources only through ``dg.EnvVar``, so they are read at run time
and never appear in run config or the UI; non-secret settings are plain values.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from edgeplat.settings import environment, paths
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource

# Production settings (documented in the README): secrets via EnvVar, the rest as values.
PRODUCTION_ENV = {
    "EDGEPLAT_CATALOG": "DuckLake catalog (secret: may hold a password), e.g. 'postgres:dbname=edgeplat host=db'",
    "EDGEPLAT_LAKE_DATA": "s3://bucket/prefix/ for the lakehouse Parquet files",
    "EDGEPLAT_OBJECTS_URL": "s3://bucket/prefix for device batches and desired-state documents",
    "AWS_ACCESS_KEY_ID": "S3 access key (secret)",
    "AWS_SECRET_ACCESS_KEY": "S3 secret key (secret)",
    "EDGEPLAT_S3_ENDPOINT": "optional: S3 API endpoint URL for non-AWS stores",
    "AWS_REGION": "optional: region, default us-east-1",
}


def local_resources() -> dict[str, Any]:
    p = paths()
    return {
        "lakehouse": LakehouseResource(catalog=f"sqlite:{p.catalog}", data_path=f"{p.lake_data}/"),
        "object_store": ObjectStoreResource(url=str(p.objects)),
    }


def production_resources() -> dict[str, Any]:
    endpoint = os.environ.get("EDGEPLAT_S3_ENDPOINT") or None
    region = os.environ.get("AWS_REGION", "us-east-1")
    return {
        "lakehouse": LakehouseResource(
            catalog=dg.EnvVar("EDGEPLAT_CATALOG"),
            data_path=os.environ.get("EDGEPLAT_LAKE_DATA", ""),
            s3_endpoint_url=endpoint,
            s3_region=region,
            s3_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
            s3_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
        ),
        "object_store": ObjectStoreResource(
            url=os.environ.get("EDGEPLAT_OBJECTS_URL", ""),
            endpoint_url=endpoint,
            region=region,
            access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
            secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
        ),
    }


def resources_for(env: str | None = None) -> dict[str, Any]:
    env = env or environment()
    return production_resources() if env == "production" else local_resources()
