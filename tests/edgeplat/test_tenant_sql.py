"""``edgeplat sql --tenant``: one tenant's rows only; other catalogs, tables and file reads refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.tenant_sql import TenantScopeError, check_query, open_tenant_session


@pytest.fixture
def lake(tmp_path: Path) -> Lakehouse:
    lh = Lakehouse(LakehouseConfig(catalog=f"sqlite:{tmp_path}/c.sqlite", data_path=f"{tmp_path}/data/"))
    lh.ensure_schema()

    def fill(con):
        con.execute(
            "INSERT INTO telemetry (tenant_id, device_id, stream, seq, hlc, node_id, ts, metric, value) "
            "SELECT 'tenant-' || (i % 3), 'd' || (i % 7), 'telemetry', i, i, 'd', "
            "TIMESTAMPTZ '2026-01-02 03:04:05+00', 'cpu', i FROM range(3000) r(i)"
        )
        con.execute("INSERT INTO devices (tenant_id, device_id) VALUES ('tenant-0', 'a'), ('tenant-1', 'b')")

    lh.write(fill)
    return lh


def run(lake: Lakehouse, tenant: str, query: str) -> list[tuple]:
    con, allowed = open_tenant_session(lake, tenant)
    try:
        check_query(con, query, allowed)
        return con.execute(query).fetchall()
    finally:
        con.close()


def test_only_the_tenants_rows_are_visible(lake: Lakehouse) -> None:
    assert run(lake, "tenant-1", "SELECT DISTINCT tenant_id FROM telemetry") == [("tenant-1",)]
    assert run(lake, "tenant-1", "SELECT count(*) FROM telemetry") == [(1000,)]
    assert run(lake, "tenant-0", "SELECT device_id FROM devices") == [("a",)]
    q = "WITH t AS (SELECT tenant_id FROM telemetry) SELECT count(DISTINCT tenant_id) FROM t JOIN devices USING (tenant_id)"
    assert run(lake, "tenant-0", q) == [(1,)]


@pytest.mark.parametrize(
    "query, why",
    [
        ("SELECT * FROM lake.main.telemetry", "outside the tenant's views"),
        ("SELECT * FROM lake.telemetry", "outside the tenant's views"),
        ("SELECT * FROM read_parquet('/tmp/x.parquet')", "table function read_parquet"),
        ("SELECT * FROM ducklake_snapshots('lake')", "table function ducklake_snapshots"),
        (
            "SELECT * FROM telemetry WHERE seq IN (SELECT seq FROM lake.main.telemetry)",
            "outside the tenant's views",
        ),
        ("SELECT * FROM duckdb_tables()", "table function duckdb_tables"),
        ("DELETE FROM telemetry", "single SELECT queries only"),
        ("SELECT * FROM no_such_table", "not a tenant view"),
    ],
)
def test_escapes_are_refused(lake: Lakehouse, query: str, why: str) -> None:
    with pytest.raises(TenantScopeError, match=why):
        run(lake, "tenant-0", query)


def test_bad_tenant_id_is_refused(lake: Lakehouse) -> None:
    with pytest.raises(ValueError, match="tenant"):
        open_tenant_session(lake, "x' OR '1'='1")
