"""``edgeplat sql``: read-only SQL on the lakehouse, while the pipelines write."""

from __future__ import annotations

import argparse

import duckdb

from cli.common import CliError, print_rows
from cli.environment import lakehouse
from edgeplat.tenant_sql import TenantQueryError, TenantScopeError, run_tenant_query


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sql",
        help="run a read-only SQL query on the lakehouse",
        description="Run a read-only SQL query against the lakehouse (works while `dagster dev` and runs write).",
        epilog='example: edgeplat sql "SELECT tenant_id, count(*) FROM telemetry GROUP BY 1"',
    )
    p.add_argument("query", help="the SQL to run (tables: devices, telemetry, alerts, logs, health, ...)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    p.add_argument(
        "--tenant",
        help="scope the session to one tenant: every table and view shows only its rows; "
        "other catalogs and table functions are refused",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    lake = lakehouse()
    if args.tenant:
        try:
            result = run_tenant_query(lake.config, args.tenant, args.query)
        except TenantScopeError as exc:
            raise CliError(f"refused: {exc}") from exc
        except TenantQueryError as exc:
            raise CliError(f"query failed: {exc}") from exc
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        print_rows(result.columns, result.rows, args.format)
        return 0
    con = lake.read_only()
    try:
        cur = con.execute(args.query)
        if cur.description is None:
            print_rows([], [], args.format)
            return 0
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    except duckdb.InvalidInputException as exc:
        if "read-only" in str(exc).lower() or "cannot execute statement" in str(exc).lower():
            raise CliError(
                "the lakehouse is opened read-only here; data changes go through the pipelines "
                f"(edgeplat sync, the Dagster jobs). DuckDB said: {exc}"
            ) from exc
        raise CliError(str(exc)) from exc
    except duckdb.Error as exc:
        raise CliError(f"query failed: {exc}") from exc
    finally:
        con.close()
    print_rows(columns, rows, args.format)
    return 0
