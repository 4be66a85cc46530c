"""Concurrent per-tenant ingests (as N run pods) against the production layout: the PostgreSQL
catalog and S3 on a moto server. Every row lands exactly once, and a repeat changes nothing."""

from __future__ import annotations

import pytest

from edgeplat.simulator.tenant_batches import write_tenant_batches
from edgeplat.sync.tenant_workers import ingest_tenants
from tests.support.tenant_ingest import fleet_store, postgres_s3_ingest

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_concurrent_tenant_ingests_store_every_row_exactly_once(tmp_path, s3_bucket) -> None:
    endpoint, bucket = s3_bucket
    store = fleet_store(endpoint, bucket)
    batches = write_tenant_batches(
        tmp_path, store, tenants=3, devices_per_tenant=3, rows_per_device=300, rows_per_batch=100
    )
    with postgres_s3_ingest(endpoint, bucket, batches, lake_prefix="lake") as (lake, spec):
        # every tenant's ingest at once; then all again (a retried run), which finds everything settled
        _, first = ingest_tenants(spec, batches.keys_by_tenant, workers=3)
        assert batches.delivered_rows > batches.unique_rows
        assert sum(r["rows_new"] for r in first) == batches.unique_rows
        assert not any(r["quarantined"] for r in first), first
        _, again = ingest_tenants(spec, batches.keys_by_tenant, workers=2)
        assert sum(r["rows_new"] for r in again) == 0
        assert sum(r["skipped_settled"] for r in again) == sum(
            len(k) for k in batches.keys_by_tenant.values()
        )
        with lake.session(read_only=True) as con:
            rows, distinct = con.execute(
                "SELECT count(*), count(DISTINCT (tenant_id, device_id, seq)) FROM telemetry"
            ).fetchone()
            ledger, objects = con.execute(
                "SELECT count(*), count(DISTINCT object_key) FROM batches"
            ).fetchone()
            per_tenant = dict(con.execute("SELECT tenant_id, count(*) FROM telemetry GROUP BY 1").fetchall())
        assert rows == distinct == batches.unique_rows
        assert ledger == objects == sum(len(k) for k in batches.keys_by_tenant.values())
        assert per_tenant == {t: 3 * 300 for t in batches.keys_by_tenant}
