"""Tenant-scoped SQL sessions: a query sees one tenant's rows and nothing else.

``edgeplat sql --tenant T`` opens the lakehouse read-only and builds, in DuckDB's
in-memory catalog, one view per lakehouse table and view that has a ``tenant_id``
column, filtered to ``T`` and named like the original (``telemetry``, ``devices``,
``telemetry_hourly``, ...). The query must reference only those names (or its own CTEs):
DuckDB's own parser (``json_serialize_sql``) gives the query tree, and any reference to
another catalog (``lake.telemetry``), another table, or a table function
(``read_parquet``, ``query``, ...) is refused before the query runs. Only SELECT
statements parse, so the session cannot write either.

This is an operator-side guard for sharing query access per tenant; the hard boundary
between tenants is their separate object-store prefixes, credentials and keys (docs/security.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb

from edge_sync.ids import validate_id
from edgeplat.lakehouse import LAKE, Lakehouse

SCOPE = "memory"  # DuckDB's default in-memory catalog holds the tenant views


class TenantScopeError(ValueError):
    """The query reaches outside the tenant's views; the message names what and why."""


def tenant_relations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Tables and views of the lakehouse that carry a ``tenant_id`` column."""
    return [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT table_name FROM duckdb_columns() WHERE database_name = ? AND column_name = 'tenant_id' "
            "ORDER BY 1",
            [LAKE],
        ).fetchall()
    ]


def open_tenant_session(lake: Lakehouse, tenant_id: str) -> tuple[duckdb.DuckDBPyConnection, set[str]]:
    """A read-only connection whose in-memory catalog holds the tenant's filtered views."""
    validate_id("tenant", tenant_id)
    con = lake.read_only(fresh=True)  # the tenant views live in this connection's own catalog
    names = tenant_relations(con)
    quoted = tenant_id.replace("'", "''")
    for name in names:
        con.execute(
            f'CREATE VIEW {SCOPE}.main."{name}" AS SELECT * FROM {LAKE}.main."{name}" WHERE tenant_id = \'{quoted}\''
        )
    con.execute(f"USE {SCOPE}")
    return con, set(names)


def check_query(con: duckdb.DuckDBPyConnection, query: str, allowed: set[str]) -> None:
    """Refuse a query that references anything but the tenant views and its own CTEs."""
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0])
    if tree.get("error"):
        raise TenantScopeError(
            f"a tenant-scoped session runs single SELECT queries only: {tree.get('error_message', 'not a SELECT')}"
        )
    ctes: set[str] = set()
    refs: list[dict[str, Any]] = []
    for node in _walk(tree):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            ctes.update(entry["key"] for entry in cte_map.get("map", []))
        if node.get("type") in ("BASE_TABLE", "TABLE_FUNCTION"):
            refs.append(node)
    for ref in refs:
        if ref["type"] == "TABLE_FUNCTION":
            fn = ref.get("function", {}).get("function_name", "?")
            raise TenantScopeError(f"table function {fn}() is not available in a tenant-scoped session")
        name, schema, catalog = ref["table_name"], ref.get("schema_name", ""), ref.get("catalog_name", "")
        if name in ctes and not schema and not catalog:
            continue
        if (catalog or schema) and (catalog, schema) not in {("", "main"), (SCOPE, "main"), (SCOPE, "")}:
            raise TenantScopeError(
                f"{'.'.join(p for p in (catalog, schema, name) if p)} is outside the tenant's views; "
                f"use the unqualified names: {', '.join(sorted(allowed))}"
            )
        if name not in allowed:
            raise TenantScopeError(f"{name} is not a tenant view; available: {', '.join(sorted(allowed))}")


def _walk(obj: Any) -> Iterator[dict[str, Any]]:
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)
