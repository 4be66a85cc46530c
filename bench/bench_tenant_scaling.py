"""Ingest scale-out: 1, 2 and 4 concurrent tenant workers on the production layout.

Four tenants' signed, encrypted telemetry batches (with re-sent overlapping ones) in an S3
bucket on a moto server; each worker count ingests all of them into a fresh lakehouse whose
catalog is a fresh schema of the machine's PostgreSQL (127.0.0.1:5432, db ``test``, or
``EDGEPLAT_TEST_PG_DSN``) and whose data is in the same bucket. Workers are processes, one
tenant each at a time (``edgeplat.sync.tenant_workers``: how N run pods share the ingest).

Figure: rows stored per second of wall clock with N workers, as a ratio of the single-worker
figure on the same data in the same run (no target: it depends on the cores, PostgreSQL and
the S3 endpoint; on this 2-core machine shared with other work read it as "does it scale at
all"). Every run must store exactly the unique rows, checked before a figure is reported.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from bench.harness import Result
from edgeplat.simulator.tenant_batches import write_tenant_batches
from edgeplat.sync.tenant_workers import ingest_tenants
from tests.support.moto_server import running_moto_server
from tests.support.tenant_ingest import S3_CREDS, fleet_store, postgres_s3_ingest

WORKERS = (1, 2, 4)


def run(quick: bool) -> list[Result]:
    devices, rows = (6, 1_200) if quick else (25, 3_600)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-tenants-") as tmp, running_moto_server() as endpoint:
        import boto3

        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_CREDS["access_key_id"],
            aws_secret_access_key=S3_CREDS["secret_access_key"],
        ).create_bucket(Bucket=bucket)
        store = fleet_store(endpoint, bucket)
        batches = write_tenant_batches(
            Path(tmp), store, tenants=4, devices_per_tenant=devices, rows_per_device=rows, rows_per_batch=600
        )
        per_second: dict[int, float] = {}
        for workers in WORKERS:
            with postgres_s3_ingest(
                endpoint, bucket, batches, lake_prefix=f"lake-{workers}", schema_prefix="edgeplat_bench"
            ) as (lake, spec):
                seconds, reports = ingest_tenants(spec, batches.keys_by_tenant, workers)
                with lake.session(read_only=True) as con:
                    stored = con.execute("SELECT count(*) FROM telemetry").fetchone()[0]
                if stored != batches.unique_rows or sum(r["rows_new"] for r in reports) != stored:
                    raise AssertionError(f"{workers} workers stored {stored} rows, not {batches.unique_rows}")
                per_second[workers] = stored / seconds
                print(f"  {workers} worker(s): {stored:,} rows in {seconds:.2f} s", flush=True)
        for workers in WORKERS[1:]:
            results.append(
                Result(
                    name=f"tenant ingest, {workers} workers (PostgreSQL catalog, moto S3)",
                    value=per_second[workers],
                    unit="rows/s",
                    baseline="1 worker, same data",
                    baseline_value=per_second[1],
                    target=None,
                    note=f"{batches.unique_rows:,} rows, {sum(map(len, batches.keys_by_tenant.values()))} "
                    f"objects, 4 tenants; 1 worker: {per_second[1]:,.0f} rows/s; cores: {os.cpu_count()}",
                )
            )
    return results
