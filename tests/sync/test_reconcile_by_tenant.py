"""Reconciliation by tenant: a run given a tenant lists and ingests only that tenant's objects,
so one reconciliation per tenant shares the work as the ingest runs do."""

from __future__ import annotations

from edgeplat.sync.reconcile import ingest_missed


def test_a_tenants_reconciliation_ingests_only_its_objects(fleet) -> None:
    for tenant in ("t1", "t2"):
        fleet.upload(fleet.batch(tenant, "d1", "telemetry", range(1, 11)))
    env = fleet.env()
    with fleet.lake.session() as con:
        report, listed = ingest_missed(env, con, "tenant=t1/")
        assert (listed, report.rows_new) == (1, 10)
        assert con.execute("SELECT DISTINCT tenant_id FROM telemetry").fetchall() == [("t1",)]
        report, listed = ingest_missed(env, con, "tenant=t2/")
        assert (listed, report.rows_new) == (1, 10)
        report, listed = ingest_missed(env, con)  # everything settled: nothing left for a full run
        assert (listed, report.rows_new) == (2, 0)
