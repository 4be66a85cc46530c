"""Tenant-scoped SQL sessions: a query sees one tenant's rows and nothing else.

``edgeplat sql --tenant T`` runs the query in a **sandbox**: a fresh in-memory DuckDB
database that holds nothing but one relation per lakehouse table and view with a
``tenant_id`` column (``telemetry``, ``devices``, ``telemetry_hourly``, ...), each streaming
``T``'s rows from the lakehouse. The lakehouse itself is attached in a *separate* DuckDB
database the query cannot name; the sandbox has no extension loaded, no secret, no file
system (``enable_external_access = false``: no file reads or replacement scans of paths,
no ATTACH of files, no COPY, no LOAD), no Python variable scans, and its configuration is
locked so the query cannot switch any of that back on. Other tenants' rows, the catalog,
the S3 credentials and files on disk are therefore not reachable from the session at all.

A query check runs before the sandbox, as a second layer and for clear refusals: DuckDB's
own parser (``json_serialize_sql``) gives the query tree, and only a single SELECT whose
tables are the tenant relations (or CTEs, inside their own scope) passes; table functions,
qualified names, SHOW/DESCRIBE/SUMMARIZE, PIVOT and every non-SELECT statement are refused.

DuckDB's own table functions can still crash the process that runs them (``pandas_scan(NULL)``
is a segmentation fault in DuckDB 1.5, and no setting disables a built-in function), so
``run_tenant_query`` runs check and query in a child process of its own: a query that gets
past the check and crashes DuckDB ends that child, not the caller.

The hard boundary between tenants is still their separate object-store prefixes,
credentials and keys (docs/security.md); this makes handing out per-tenant SQL safe
against the query, not against whoever runs the process.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from edge_sync.duck import connect
from edge_sync.ids import validate_id
from edgeplat.lakehouse import LAKE, Lakehouse, LakehouseConfig, retried

# The sandbox's settings: nothing outside its own memory and its private spill folder is
# reachable from a query. The last two are applied in this order once the spill folder is
# set (DuckDB refuses to change it afterwards), and the lock keeps the query from undoing them.
SANDBOX_CONFIG: dict[str, Any] = {
    "allow_persistent_secrets": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,  # no scan of the calling code's Python variables
}
SANDBOX_LOCK = ("SET enable_external_access = false", "SET lock_configuration = true")
# Table references a tenant query may use (everything else, e.g. TABLE_FUNCTION, SHOW_REF,
# PIVOT, is refused) and query nodes it may contain.
_TABLE_REFS = {"BASE_TABLE", "SUBQUERY", "JOIN", "EXPRESSION_LIST", "EMPTY"}
_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE"}
_REF_NAMES = {"SHOW_REF": "SHOW, DESCRIBE and SUMMARIZE are", "PIVOT": "PIVOT and UNPIVOT are"}


class TenantScopeError(ValueError):
    """The query reaches outside the tenant's views; the message names what and why."""


class TenantQueryError(RuntimeError):
    """The query was allowed but failed (DuckDB's message), or crashed the sandbox process."""


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of a tenant query, as the child process sent them back."""

    columns: list[str]
    rows: list[tuple]


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


class TenantRelation:
    """One lakehouse relation filtered to one tenant, as a re-scannable Arrow stream.

    The sandbox scans it through the Arrow PyCapsule interface: each scan runs the filtered
    query on a cursor of the lakehouse connection and streams its batches, so nothing is
    materialised and every scan sees the lakehouse's latest snapshot.
    """

    def __init__(self, source: Any, name: str, tenant_id: str) -> None:
        self.name = name
        self._source = source
        self._tenant_id = tenant_id
        self._sql = f'SELECT * FROM {LAKE}.main."{name}" WHERE tenant_id = $tenant'
        # The schema is known up front, so binding a query in the sandbox runs nothing here.
        probe = self._run(self._sql + " LIMIT 0")
        try:
            self.schema = probe.to_arrow_reader().schema
        finally:
            probe.close()

    def _run(self, sql: str) -> duckdb.DuckDBPyConnection:
        cursor = self._source.cursor()
        # a read meeting a catalog that a writer has locked is retried (see lakehouse.ReadRetrying)
        return retried(
            cursor, lambda c: c.execute(sql, {"tenant": self._tenant_id}), what="read", transaction=False
        )

    def _batches(self) -> Iterator[pa.RecordBatch]:
        result = self._run(self._sql)
        try:
            yield from result.to_arrow_reader()
        finally:
            result.close()

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        reader = pa.RecordBatchReader.from_batches(self.schema, self._batches())
        return reader.__arrow_c_stream__(requested_schema)


class TenantSession:
    """The sandbox connection of one tenant, and the lakehouse connection feeding it.

    ``execute`` runs SQL in the sandbox; ``check_query`` should be called first (the CLI
    does). ``close`` closes both connections and removes the sandbox's spill folder.
    """

    def __init__(self, lake: Lakehouse, tenant_id: str) -> None:
        validate_id("tenant", tenant_id)
        self.tenant_id = tenant_id
        self._source = lake.read_only(fresh=True)
        # DuckDB types without an Arrow equivalent (HUGEINT, ...) keep their type in the sandbox
        self._source.execute("SET arrow_lossless_conversion = true")
        # A private spill folder: the only directory the sandbox may touch.
        self._spill = tempfile.mkdtemp(prefix="edgeplat-tenant-sql-")
        try:
            self.relations = tenant_relations(self._source)
            self.sandbox = connect(temp_directory=self._spill, **SANDBOX_CONFIG)
            for statement in SANDBOX_LOCK:
                self.sandbox.execute(statement)
            for name in self.relations:
                self.sandbox.register(name, TenantRelation(self._source, name, tenant_id))
        except BaseException:
            self.close()
            raise

    def execute(self, query: str, parameters: object = None) -> duckdb.DuckDBPyConnection:
        return self.sandbox.execute(query) if parameters is None else self.sandbox.execute(query, parameters)

    def close(self) -> None:
        sandbox = getattr(self, "sandbox", None)
        if sandbox is not None:
            sandbox.close()
        self._source.close()
        shutil.rmtree(self._spill, ignore_errors=True)

    def __enter__(self) -> TenantSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_tenant_session(lake: Lakehouse, tenant_id: str) -> tuple[TenantSession, set[str]]:
    """A sandboxed session holding only the tenant's relations, and their names."""
    session = TenantSession(lake, tenant_id)
    return session, set(session.relations)


def check_query(con: Any, query: str, allowed: set[str]) -> None:
    """Refuse a query that is not one SELECT over the tenant relations and its own CTEs."""
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


def run_tenant_query(config: LakehouseConfig, tenant_id: str, query: str) -> QueryResult:
    """Check and run ``query`` in ``tenant_id``'s sandbox, in a child process of its own.

    Raises ``TenantScopeError`` for a refused query and ``TenantQueryError`` when DuckDB
    rejects it or the child dies (the signal is named); the caller's process is unharmed.
    """
    validate_id("tenant", tenant_id)
    kind, payload = run_in_child(_child_query, (config, tenant_id, query))
    if kind == "refused":
        raise TenantScopeError(payload)
    if kind == "failed":
        raise TenantQueryError(payload)
    return payload


def run_in_child(target: Any, args: tuple) -> tuple[str, Any]:
    """Run ``target(*args, sender)`` in a spawned process and return the one outcome it sends.

    A child that dies before sending (a crash inside DuckDB) raises ``TenantQueryError``
    naming the signal or exit code.
    """
    # spawn, not fork: the caller may hold DuckDB connections and threads a fork would copy
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=target, args=(*args, sender), daemon=True)
    child.start()
    sender.close()
    try:
        outcome = receiver.recv()
    except EOFError:
        outcome = None
    finally:
        receiver.close()
        child.join()
    if outcome is None:
        code = child.exitcode or 0
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        raise TenantQueryError(
            f"the query crashed the tenant sandbox ({how}); nothing else was affected. "
            "DuckDB table functions are not available in a tenant session"
        )
    return outcome


def _child_query(config: LakehouseConfig, tenant_id: str, query: str, sender: Any) -> None:
    """The sandbox process: open the session, check, run, send one outcome back."""
    try:
        with TenantSession(Lakehouse(config), tenant_id) as session:
            check_query(session.sandbox, query, set(session.relations))
            cursor = session.execute(query)
            columns = [d[0] for d in cursor.description] if cursor.description else []
            rows = cursor.fetchall() if cursor.description else []
        sender.send(("ok", QueryResult(columns, rows)))
    except TenantScopeError as exc:
        sender.send(("refused", str(exc)))
    except (duckdb.Error, ValueError) as exc:
        sender.send(("failed", str(exc)))
    finally:
        sender.close()
