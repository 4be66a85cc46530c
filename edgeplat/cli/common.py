"""Helpers shared by the CLI subcommands: the lakehouse, the Dagster instance, output."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any

# Run config for in-process runs started by the CLI: the console shows warnings only,
# the full event log still goes to the Dagster instance (see it in the UI).
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def lakehouse():
    """The lakehouse of the current environment, configured exactly as the code location's."""
    from edgeplat.settings import ensure_home
    from pipelines.resources import resources_for

    ensure_home()
    lake = resources_for()["lakehouse"].get()
    lake.ensure_created()
    return lake


def definitions():
    """The code location, built now for the current environment and state directory."""
    from pipelines.definitions import build_definitions

    return build_definitions()


def instance():
    """The shared Dagster instance under ``DAGSTER_HOME`` (inside ``EDGEPLAT_HOME`` by default)."""
    from dagster import DagsterInstance

    from edgeplat.settings import ensure_home

    ensure_home()
    return DagsterInstance.get()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_jsonable)


def print_rows(columns: list[str], rows: list[tuple], fmt: str = "table", title: str | None = None) -> None:
    if fmt == "json":
        print(dumps([dict(zip(columns, map(_jsonable, r), strict=True)) for r in rows]))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        writer.writerows([[_jsonable(v) for v in r] for r in rows])
        sys.stdout.write(buf.getvalue())
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for c in columns:
            table.add_column(c)
        for r in rows:
            table.add_row(*("" if v is None else str(_jsonable(v)) for v in r))
        Console().print(table)
