"""``edgeplat simulate``: run a fleet of simulated devices (the real edge agent) and write ground truth."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cli.common import CliError, dumps
from cli.environment import prepare_home
from edgeplat.simulator import ReleaseProfiles, SimulationConfig, simulate, write_truth


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a fleet of devices writing to the configured object store",
        description=(
            "Run N simulated devices over T tenants (Greengrass and IoT Edge) for some simulated hours. Each "
            "runs the real edge agent with its own encrypted cache and uploads to the object store of "
            "EDGEPLAT_HOME; the run ends with every device online until its cache is drained (unless "
            "--leave-offline). Deterministic under --seed."
        ),
        epilog="example: edgeplat simulate --devices 50 --tenants 3 --hours 2 --offline-fraction 0.2 "
        "--clock-skew 120 --crash-rate 0.05 --seed 7 --truth truth.json",
    )
    p.add_argument("--devices", type=int, default=10, help="number of devices (default 10)")
    p.add_argument("--tenants", type=int, default=2, help="number of tenants (default 2)")
    p.add_argument("--hours", type=float, default=1.0, help="simulated hours (default 1)")
    p.add_argument(
        "--offline-fraction",
        type=float,
        default=0.1,
        help="fraction of devices that lose their link during the run (default 0.1)",
    )
    p.add_argument("--outage-minutes", type=float, default=30.0, help="mean outage length (default 30)")
    p.add_argument(
        "--clock-skew",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="maximum absolute wall-clock skew per device (default 0)",
    )
    p.add_argument(
        "--crash-rate",
        type=float,
        default=0.0,
        help="probability that a sync kills the agent mid-upload (default 0)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--truth", metavar="FILE", help="write the ground truth JSON here")
    p.add_argument(
        "--leave-offline",
        action="store_true",
        help="do not drain: devices offline at the end keep their pending rows",
    )
    p.add_argument(
        "--telemetry-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between telemetry samples (default 10)",
    )
    p.add_argument("--metrics-per-sample", type=int, default=3, help="telemetry rows per sample (default 3)")
    p.add_argument(
        "--sync-interval",
        type=int,
        default=15,
        metavar="MINUTES",
        help="simulated minutes between syncs (default 15)",
    )
    p.add_argument("--release", default="1.0.0", metavar="VERSION", help="initial release (default 1.0.0)")
    p.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="VERSION:FIELD=VALUE,...",
        help="a release health profile, e.g. 2.0.0:error_rate=0.08,crash_rate=1 (repeatable)",
    )
    p.add_argument(
        "--device-edits",
        type=float,
        default=1.0,
        metavar="PER_HOUR",
        help="device state edits per device-hour (default 1)",
    )
    p.add_argument(
        "--central-edits",
        type=float,
        default=0.5,
        metavar="PER_HOUR",
        help="central state edits per device-hour (default 0.5)",
    )
    p.add_argument("--cache-max-bytes", type=int, help="device cache size bound (default: the agent's)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=run)


def parse_profile(text: str) -> tuple[str, dict[str, float]]:
    version, sep, rest = text.partition(":")
    if not sep or not version or not rest:
        raise CliError(
            f"--profile {text!r}: write VERSION:FIELD=VALUE[,FIELD=VALUE], e.g. 2.0.0:error_rate=0.08"
        )
    fields = {}
    for part in rest.split(","):
        name, eq, value = part.partition("=")
        try:
            fields[name.strip()] = float(value)
        except ValueError:
            raise CliError(f"--profile {text!r}: {part!r} is not FIELD=NUMBER") from None
        if not eq:
            raise CliError(f"--profile {text!r}: {part!r} is not FIELD=NUMBER")
    return version, fields


def run(args: argparse.Namespace) -> int:
    try:
        config = SimulationConfig(
            devices=args.devices,
            tenants=args.tenants,
            hours=args.hours,
            offline_fraction=args.offline_fraction,
            outage_minutes=args.outage_minutes,
            clock_skew_s=args.clock_skew,
            crash_rate=args.crash_rate,
            seed=args.seed,
            leave_offline=args.leave_offline,
            telemetry_interval_s=args.telemetry_interval,
            metrics_per_sample=args.metrics_per_sample,
            sync_interval_min=args.sync_interval,
            release=args.release,
            device_edit_rate_per_hour=args.device_edits,
            central_edit_rate_per_hour=args.central_edits,
            cache_max_bytes=args.cache_max_bytes,
            workers=args.workers,
        )
        profiles = ReleaseProfiles()
        for text in args.profile:
            version, fields = parse_profile(text)
            profiles.set(version, **fields)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    prepare_home()
    err = Console(stderr=True)
    total = config.devices * config.minutes
    with Progress(
        TextColumn("simulated device-hours"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("simulate", total=total / 60)
        try:
            result = simulate(config, profiles=profiles, progress=lambda m: bar.advance(task, m / 60))
        except FileExistsError as exc:
            raise CliError(str(exc)) from None
    summary = result.summary
    if args.truth:
        summary["truth"] = str(write_truth(args.truth, result.truth))
    if args.json:
        print(dumps(summary))
        return 0
    t = Table(title=f"Simulated {config.devices} devices x {config.hours:g} h (seed {config.seed})")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in summary["rows"].items():
        t.add_row(f"rows {k}", f"{v:,}")
    for k in (
        "syncs",
        "offline_syncs",
        "upload_crashes",
        "app_crashes",
        "bytes_sent",
        "devices_with_pending",
        "elapsed_s",
        "peak_rss_mb",
    ):
        t.add_row(k, f"{summary[k]:,}")
    for origin, n in summary["state_edits"].items():
        t.add_row(f"state edits ({origin})", f"{n:,}")
    for v, n in summary["versions"].items():
        t.add_row(f"running {v}", f"{n:,}")
    Console().print(t)
    Console().print(
        f"objects: {summary['object_store']}" + (f"   truth: {summary['truth']}" if args.truth else "")
    )
    return 0
