"""``edgeplat demo``: run the main job on the embedded default and show where to look."""

from __future__ import annotations

import argparse
import time

from edgeplat.cli.common import QUIET_LOGS, CliError, dumps, instance, lakehouse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the platform end to end on the embedded default and print a summary",
        description="Create the lakehouse, load the definitions, run the main job, print what happened.",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON (what scripts read)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=args.json, quiet=args.json)
    started = time.monotonic()
    summary: dict = {"steps": []}

    def step(name: str) -> None:
        summary["steps"].append({"step": name, "at_s": round(time.monotonic() - started, 2)})
        console.print(f"[bold cyan]▶[/] {name}")

    step("creating the lakehouse")
    lake = lakehouse()
    created = lake.ensure_schema()

    step("loading the Dagster definitions")
    from pipelines.definitions import defs
    from pipelines.jobs import MAIN_JOB

    inst = instance()
    step(f"running the main job '{MAIN_JOB}'")
    result = defs.resolve_job_def(MAIN_JOB).execute_in_process(
        instance=inst, raise_on_error=False, run_config=QUIET_LOGS
    )
    if not result.success:
        raise CliError(f"the job {MAIN_JOB} failed (run {result.run_id}); open the Dagster UI (make dev) to see why")
    materialized = sorted(
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events() if e.asset_key
    )

    from edgeplat.fleet import fleet_status
    from edgeplat.settings import paths

    with lake.session(read_only=True) as con:
        fleet = fleet_status(con).as_dict()
    p = paths()
    summary.update(
        {
            "state_dir": str(p.home),
            "dagster_home": str(inst.root_directory),
            "tables_created": created,
            "table_rows": lake.table_counts(),
            "run_id": result.run_id,
            "job": MAIN_JOB,
            "assets_materialized": materialized,
            "fleet": fleet,
            "where_to_look": {
                "dagster_ui": "make dev, then http://127.0.0.1:3000 (runs, asset graph, metadata)",
                "sql": 'edgeplat sql "SELECT * FROM devices LIMIT 10"',
                "fleet": "edgeplat fleet status",
            },
            "elapsed_s": round(time.monotonic() - started, 2),
        }
    )
    if args.json:
        print(dumps(summary))
        return 0
    from rich.table import Table

    t = Table(title="Lakehouse tables")
    t.add_column("table")
    t.add_column("rows", justify="right")
    for name, n in summary["table_rows"].items():
        t.add_row(name, f"{n:,}")
    console.print(t)
    console.print(f"Run [bold]{result.run_id}[/] of job {MAIN_JOB}: materialized {', '.join(materialized)}")
    console.print(f"State directory: {p.home}")
    for what, where in summary["where_to_look"].items():
        console.print(f"  {what:>10}: {where}")
    return 0
