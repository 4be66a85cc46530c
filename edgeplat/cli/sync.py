"""``edgeplat sync``: ingest, merge and reconcile once, in process, on the shared Dagster instance."""

from __future__ import annotations

import argparse
from typing import Any

from edgeplat.cli.common import QUIET_LOGS, CliError, definitions, dumps, instance


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sync",
        help="ingest new batches, merge state and reconcile once (the runs show in the Dagster UI)",
        description="Run the main job (sync_fleet) once in this process against the same Dagster instance "
        "and lakehouse the sensors and schedules use.",
    )
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(handler=run)


def run_sync() -> dict[str, Any]:
    """Run the main job; returns its run id and the counts its assets reported."""
    from pipelines.jobs import MAIN_JOB

    result = (
        definitions()
        .resolve_job_def(MAIN_JOB)
        .execute_in_process(instance=instance(), raise_on_error=False, run_config=QUIET_LOGS)
    )
    if not result.success:
        raise CliError(
            f"the job {MAIN_JOB} failed (run {result.run_id}); open the Dagster UI (make dev) to see why"
        )
    metadata: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        metadata[mat.asset_key.to_user_string()] = {
            k: getattr(v, "value", v) for k, v in mat.metadata.items()
        }
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    rec = metadata.get("sync_reconciliation", {})
    return {
        "run_id": result.run_id,
        "job": MAIN_JOB,
        "objects_listed": rec.get("objects_listed", 0),
        "batches_accepted": rec.get("missed/accepted", 0),
        "rows_in": rec.get("missed/rows_in", 0),
        "rows_new": rec.get("missed/rows_new", 0),
        "duplicates_dropped": rec.get("missed/duplicates_dropped", 0),
        "quarantined": rec.get("missed/quarantined", 0),
        "conflicts": rec.get("missed/conflicts", 0),
        "deferred_admitted": rec.get("deferred_admitted", 0),
        "checks": checks,
        "assets": metadata,
    }


def run(args: argparse.Namespace) -> int:
    counts = run_sync()
    if args.json:
        print(dumps(counts))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"sync_fleet run {counts['run_id']}")
    t.add_column("what")
    t.add_column("count", justify="right")
    for k in (
        "objects_listed",
        "batches_accepted",
        "rows_in",
        "rows_new",
        "duplicates_dropped",
        "quarantined",
        "conflicts",
        "deferred_admitted",
    ):
        t.add_row(k.replace("_", " "), f"{counts[k]:,}")
    for name, passed in sorted(counts["checks"].items()):
        t.add_row(f"check {name}", "passed" if passed else "[yellow]warn[/]")
    Console().print(t)
    return 0
