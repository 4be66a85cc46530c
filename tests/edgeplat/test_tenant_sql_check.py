"""The query check of tenant-scoped SQL: CTE names count only inside their own scope.

Only the parser is needed (``json_serialize_sql`` on a plain DuckDB connection); the
sandbox the queries then run in is tested in tests/security/test_tenant_sql_sandbox.py.
"""

from __future__ import annotations

import duckdb
import pytest

from edgeplat.tenant_sql import TenantScopeError, check_query

ALLOWED = {"telemetry", "devices"}
GLOB = "/srv/lake/data/**/*.parquet"


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT count(*) FROM telemetry",
        "WITH t AS (SELECT * FROM telemetry) SELECT * FROM t JOIN devices USING (tenant_id)",
        "WITH a AS (SELECT * FROM telemetry), b AS (SELECT * FROM a) SELECT * FROM b",
        "WITH T AS (SELECT 1) SELECT * FROM t",  # names match without case, as DuckDB binds them
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
        "WITH t AS (SELECT 1 AS x) SELECT * FROM telemetry WHERE seq IN (SELECT x FROM t)",
        "WITH t AS (SELECT 1 AS x) SELECT (SELECT count(*) FROM t), * FROM devices",
        "SELECT * FROM telemetry, LATERAL (SELECT 1) l",
        "SELECT count(*) FROM telemetry UNION ALL SELECT count(*) FROM devices",
        "SELECT * FROM (VALUES (1), (2)) v(x)",
        "FROM Telemetry SELECT device_id LIMIT 3",
    ],
)
def test_queries_over_the_tenant_views_pass(con: duckdb.DuckDBPyConnection, query: str) -> None:
    check_query(con, query, ALLOWED)


@pytest.mark.parametrize(
    "query, why",
    [
        # a CTE named like the glob, the glob read where that CTE is not in scope
        (f"SELECT * FROM '{GLOB}', (WITH \"{GLOB}\" AS (SELECT 1) SELECT 1)", "not a tenant view"),
        (f"SELECT (WITH \"{GLOB}\" AS (SELECT 1) SELECT 1), * FROM '{GLOB}'", "not a tenant view"),
        (f"(WITH \"{GLOB}\" AS (SELECT 1) SELECT 1) UNION ALL (SELECT 1 FROM '{GLOB}')", "not a tenant view"),
        (
            f"WITH a AS (SELECT * FROM '{GLOB}'), \"{GLOB}\" AS (SELECT 1) SELECT * FROM a",
            "not a tenant view",
        ),
        (
            "SELECT * FROM telemetry, LATERAL (WITH duckdb_tables AS (SELECT 1) SELECT 1) JOIN duckdb_tables ON true",
            "not a tenant view",
        ),
        ("WITH t AS (SELECT * FROM t) SELECT * FROM t", "not a tenant view"),  # not recursive: t is a table
        ("SHOW TABLES", "SHOW, DESCRIBE and SUMMARIZE"),
        ("DESCRIBE telemetry", "SHOW, DESCRIBE and SUMMARIZE"),
        ("SUMMARIZE telemetry", "SHOW, DESCRIBE and SUMMARIZE"),
        ("SELECT * FROM (DESCRIBE telemetry)", "SHOW, DESCRIBE and SUMMARIZE"),
        ("SELECT * FROM (PIVOT telemetry ON metric USING count(*))", "single SELECT queries only"),
        ("UNPIVOT telemetry ON value INTO NAME k VALUE v", "PIVOT and UNPIVOT"),
        ("PIVOT telemetry ON metric USING count(*)", "single SELECT queries only"),
        ("PRAGMA show_tables", "single SELECT queries only"),
        ("SET enable_external_access = true", "single SELECT queries only"),
        ("ATTACH 'x.db'", "single SELECT queries only"),
        ("COPY telemetry TO 'x.csv'", "single SELECT queries only"),
        (f"SELECT 1; SELECT * FROM '{GLOB}'", "one SELECT at a time"),
        ("SELECT * FROM main.telemetry", "outside the tenant's views"),
        ("SELECT * FROM memory.main.telemetry", "outside the tenant's views"),
        ("SELECT * FROM telemetry AT (VERSION => 1)", "time travel"),
        ("SELECT lake.main.f(1)", "outside the tenant's session"),
        ("SELECT * FROM generate_series(3)", "table function generate_series"),
    ],
)
def test_escapes_are_refused(con: duckdb.DuckDBPyConnection, query: str, why: str) -> None:
    with pytest.raises(TenantScopeError, match=why):
        check_query(con, query, ALLOWED)
