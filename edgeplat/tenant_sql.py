"""Tenant-scoped SQL sessions: a query sees one tenant's rows and nothing else.

``edgeplat sql --tenant T`` opens the lakehouse read-only and builds, in DuckDB's
in-memory catalog, one view per lakehouse table and view that has a ``tenant_id``
column, filtered to ``T`` and named like the original (``telemetry``, ``devices``,
``telemetry_hourly``, ...). The query must reference only those names (or its own CTEs,
inside their own scope): DuckDB's own parser (``json_serialize_sql``) gives the query tree,
and any reference to another catalog (``lake.telemetry``), another table or file, a table
function (``read_parquet``, ``query``, ...), SHOW/DESCRIBE/SUMMARIZE or PIVOT is refused
before the query runs. Only single SELECT statements parse, so the session cannot write either.

This is an operator-side guard for sharing query access per tenant; the hard boundary
between tenants is their separate object-store prefixes, credentials and keys (docs/security.md).
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from edge_sync.ids import validate_id
from edgeplat.lakehouse import LAKE, Lakehouse

SCOPE = "memory"  # DuckDB's default in-memory catalog holds the tenant views
# Table references a tenant query may use (everything else, e.g. TABLE_FUNCTION, SHOW_REF,
# PIVOT, is refused) and query nodes it may contain.
_TABLE_REFS = {"BASE_TABLE", "SUBQUERY", "JOIN", "EXPRESSION_LIST", "EMPTY"}
_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE"}
_REF_NAMES = {"SHOW_REF": "SHOW, DESCRIBE and SUMMARIZE are", "PIVOT": "PIVOT and UNPIVOT are"}


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
    """Refuse a query that is not one SELECT over the tenant views and its own CTEs."""
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0])
    if tree.get("error"):
        raise TenantScopeError(
            "a tenant-scoped session runs single SELECT queries only (no SHOW, PIVOT, SET, PRAGMA, "
            f"ATTACH, COPY, ...): {tree.get('error_message', 'not a SELECT')}"
        )
    statements = tree.get("statements", [])
    if len(statements) != 1:
        raise TenantScopeError(f"a tenant-scoped session runs one SELECT at a time, not {len(statements)}")
    _Checker({a.casefold() for a in allowed}, sorted(allowed)).walk(statements[0], frozenset())


class _Checker:
    """Walks a serialized query tree, keeping track of which CTE names are in scope where."""

    def __init__(self, allowed: set[str], listing: list[str]) -> None:
        self.allowed = allowed
        self.listing = ", ".join(listing)

    def walk(self, obj: Any, ctes: frozenset[str]) -> None:
        if isinstance(obj, list):
            for v in obj:
                self.walk(v, ctes)
            return
        if not isinstance(obj, dict):
            return
        if "modifiers" in obj and "class" not in obj:
            self._query_node(obj, ctes)
            return
        if "sample" in obj and "class" not in obj:
            self._table_ref(obj, ctes)
        elif obj.get("class") == "FUNCTION" and obj.get("catalog"):
            raise TenantScopeError(
                f"{obj['catalog']}.{obj.get('function_name', '?')}() is outside the tenant's session"
            )
        for v in obj.values():
            self.walk(v, ctes)

    def _query_node(self, node: dict[str, Any], ctes: frozenset[str]) -> None:
        if node.get("type") not in _QUERY_NODES:
            raise TenantScopeError(f"{node.get('type')} is not available in a tenant-scoped session")
        # A CTE is visible in the body of the query that defines it and in the CTEs defined
        # after it (and in itself when recursive); nowhere else, where DuckDB would resolve
        # the same name as a table, a system view or a file path.
        visible = set(ctes)
        for entry in (node.get("cte_map") or {}).get("map", []):
            name = entry["key"].casefold()
            inner = entry["value"].get("query", {}).get("node", {})
            recursive = (
                inner.get("type") == "RECURSIVE_CTE_NODE" and inner.get("cte_name", "").casefold() == name
            )
            self.walk(entry["value"], frozenset(visible | {name}) if recursive else frozenset(visible))
            visible.add(name)
        scope = frozenset(visible)
        for key, v in node.items():
            if key != "cte_map":
                self.walk(v, scope)

    def _table_ref(self, ref: dict[str, Any], ctes: frozenset[str]) -> None:
        kind = ref.get("type")
        if kind not in _TABLE_REFS:
            if kind == "TABLE_FUNCTION":
                what = f"table function {ref.get('function', {}).get('function_name', '?')}() is"
            else:
                what = _REF_NAMES.get(kind, f"{kind} is")
            raise TenantScopeError(f"{what} not available in a tenant-scoped session")
        if kind != "BASE_TABLE":
            return
        name, schema, catalog = ref["table_name"], ref.get("schema_name", ""), ref.get("catalog_name", "")
        if catalog or schema:
            raise TenantScopeError(
                f"{'.'.join(p for p in (catalog, schema, name) if p)} is outside the tenant's views; "
                f"use the unqualified names: {self.listing}"
            )
        if ref.get("at_clause"):
            raise TenantScopeError(f"time travel (AT) on {name} is not available in a tenant-scoped session")
        if name.casefold() in ctes:
            return
        if name.casefold() not in self.allowed:
            raise TenantScopeError(f"{name} is not a tenant view; available: {self.listing}")
