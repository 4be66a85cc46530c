"""``edgeplat sync``: ingest, merge and reconcile once, in process, on the shared Dagster instance;
``edgeplat sync archive`` / ``replay``: the archive's jobs (settled objects out of the hot prefix, a
device's range re-ingested exactly once)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from cli.common import CliError, dumps
from cli.runs import run_job, run_main_job
from edgeplat.sync.archive import DEFAULT_ARCHIVE_AFTER, ReplayRange

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
    actions = p.add_subparsers(dest="sync_command", metavar="ACTION", required=False)

    q = actions.add_parser(
        "archive",
        help="move settled batch objects older than the retention to archive/ (runs archive_settled)",
    )
    q.add_argument(
        "--after-hours",
        type=int,
        default=int(DEFAULT_ARCHIVE_AFTER.total_seconds() // 3600),
        help="retention: objects settled longer ago than this leave the hot prefix (default %(default)s)",
    )
    q.add_argument("--tenant", default="", help="one tenant only (default: every tenant)")
    q.add_argument("--json", action="store_true", help="print the counts as JSON")
    q.set_defaults(handler=archive)

    q = actions.add_parser(
        "replay",
        help="re-ingest a device's batch range from the archive exactly once (runs replay_archive)",
        description="Re-ingest the batches of one device (one stream, or all; those overlapping the seq "
        "range) from the archive and the hot prefix. Rows the tables hold are dropped as duplicates, "
        "missing ones restored: run it after rows were lost, or into a fresh lakehouse.",
    )
    q.add_argument("--tenant", required=True)
    q.add_argument("--device", required=True)
    q.add_argument("--stream", default="", help="one stream (default: every stream)")
    q.add_argument("--from-seq", type=int, default=None)
    q.add_argument("--to-seq", type=int, default=None)
    q.add_argument("--json", action="store_true", help="print the counts as JSON")
    q.set_defaults(handler=replay)


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


def _print(title: str, counts: dict, as_json: bool) -> None:
    if as_json:
        print(dumps(counts))
        return
    t = Table(title=title)
    t.add_column("what")
    t.add_column("count", justify="right")
    for k, v in counts.items():
        if isinstance(v, int):
            t.add_row(k.replace("_", " "), f"{v:,}")
    Console().print(t)


def archive(args: argparse.Namespace) -> int:
    if args.after_hours < 0:
        raise CliError(f"--after-hours must be 0 or more, got {args.after_hours}")
    config = {"archive_after_h": args.after_hours, "tenant_id": args.tenant}
    run_id, meta = run_job("archive_settled", "archive_settled_objects", config)
    _print(f"archive_settled run {run_id}", {"run_id": run_id, **meta}, args.json)
    return 0


def replay(args: argparse.Namespace) -> int:
    try:  # the same checks the job makes, before a run is started
        ReplayRange(args.tenant, args.device, args.stream or None, args.from_seq, args.to_seq)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    config = {
        "tenant_id": args.tenant,
        "device_id": args.device,
        "stream": args.stream,
        "from_seq": args.from_seq,
        "to_seq": args.to_seq,
    }
    run_id, meta = run_job("replay_archive", "replay_device_range", config)
    _print(f"replay_archive run {run_id}: {meta.get('range', '')}", {"run_id": run_id, **meta}, args.json)
    return 0
