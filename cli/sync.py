"""``edgeplat sync``: ingest, merge and reconcile once, in process, on the shared Dagster instance."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from cli.common import dumps
from cli.runs import run_main_job

COUNTS = (
    "objects_listed",
    "batches_accepted",
    "rows_in",
    "rows_new",
    "duplicates_dropped",
    "quarantined",
    "conflicts",
    "deferred_admitted",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sync",
        help="ingest new batches, merge state and reconcile once (the runs show in the Dagster UI)",
        description="Run the main job (sync_fleet) once in this process against the same Dagster instance "
        "and lakehouse the sensors and schedules use.",
    )
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    counts = run_main_job()
    if args.json:
        print(dumps(counts))
        return 0
    t = Table(title=f"sync_fleet run {counts['run_id']}")
    t.add_column("what")
    t.add_column("count", justify="right")
    for k in COUNTS:
        t.add_row(k.replace("_", " "), f"{counts[k]:,}")
    for name, passed in sorted(counts["checks"].items()):
        t.add_row(f"check {name}", "passed" if passed else "[yellow]warn[/]")
    Console().print(t)
    return 0
