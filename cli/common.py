"""What every CLI subcommand shares: the user-facing error and the output formats (table, CSV, JSON)."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


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
        table = Table(title=title)
        for c in columns:
            table.add_column(c)
        for r in rows:
            table.add_row(*("" if v is None else str(_jsonable(v)) for v in r))
        Console().print(table)
