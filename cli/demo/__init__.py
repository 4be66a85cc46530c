"""``edgeplat demo``: the platform end to end on the embedded default, with a summary of what happened.

1. Simulate a small multi-tenant fleet (real device agents with encrypted caches) with
   outages, clock skew, crashes mid-upload and state edits on both sides (``fleet_sync``).
2. Run the main job (``sync_fleet``): ingest exactly once, merge state, reconcile.
3. Run two rollouts on 2,000 simulated devices that report through the same data path: a bad
   release caught in its first phase and a good one taken to 100% with a manual approval
   (``rollouts``).
4. Summarise: rows per stream generated vs stored, duplicates dropped, quarantined, conflicts
   by rule, sync lag, and per rollout its outcome, blast radius and decisions.

Simulating and rolling out happen once per state directory: a second demo re-runs only the
sync (which then changes nothing) and shows the same summary.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from cli.common import CliError, dumps
from cli.demo import fleet_sync
from cli.demo.production import device_key_service, production_environment, simulation_parts
from cli.demo.rollouts import DEMO_DEVICES, run_rollouts
from cli.environment import instance, lakehouse
from cli.runs import run_main_job
from edgeplat.fleet import fleet_status
from edgeplat.settings import paths
from pipelines.resources import resources_for

MIN_ROLLOUT_DEVICES = 100


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate a fleet, sync it, run two rollouts, and print a summary",
        description="Simulate a small multi-tenant fleet with outages and clock skew, ingest and merge it with "
        "the main job, run a bad and a good rollout, and print what happened and where to look.",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON (what scripts read)")
    p.add_argument("--skip-rollouts", action="store_true", help="only simulate and sync (faster)")
    p.add_argument(
        "--production",
        action="store_true",
        help="run on the production stack (PostgreSQL, S3, Vault) with local stand-ins it starts and stops: "
        "PostgreSQL at 127.0.0.1:5432, a moto S3 server, an OpenBao dev server",
    )
    p.add_argument(
        "--rollout-devices",
        type=int,
        default=DEMO_DEVICES,
        metavar="N",
        help=f"devices of the rollouts' fleet (default {DEMO_DEVICES:,}, at least {MIN_ROLLOUT_DEVICES}; "
        "a smaller fleet is faster and gets a floor of 15 canaries in the 1%% phase)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    devices = getattr(args, "rollout_devices", DEMO_DEVICES)
    if devices < MIN_ROLLOUT_DEVICES:
        raise CliError(
            f"--rollout-devices {devices} is too few: the gates need 15 canaries and 15 baseline devices; "
            f"give at least {MIN_ROLLOUT_DEVICES} (default {DEMO_DEVICES})"
        )
    if getattr(args, "production", False):
        with production_environment(paths().home, fleet_sync.FLEET):
            return _run(args, production=True)
    return _run(args)


def _run(args: argparse.Namespace, *, production: bool = False) -> int:
    console = Console(stderr=True) if args.json else Console()
    started = time.monotonic()
    steps: list[dict] = []

    def step(name: str) -> None:
        steps.append({"step": name, "at_s": round(time.monotonic() - started, 2)})
        console.print(f"[bold cyan]▶[/] {name}")

    step("creating the lakehouse")
    lake = lakehouse()
    parts = None
    if production:
        store = resources_for()["object_store"].process_config_and_initialize().get()
        parts = simulation_parts(lake, store)
    fleet = fleet_sync.simulate_fleet(lake, step, parts)
    truth = fleet["truth"]
    tenants = {r["tenant_id"] for r in truth["streams"]}
    step("running the main job 'sync_fleet' (ingest, merge, reconcile)")
    sync = run_main_job()
    rollouts = []
    if not args.skip_rollouts:
        devices = getattr(args, "rollout_devices", DEMO_DEVICES)
        rollouts = run_rollouts(
            step, devices=devices, device_key_service=device_key_service() if production else None
        )
    with lake.session(read_only=True) as con:
        status = fleet_status(con).as_dict()
    inst = instance()
    p = paths()
    summary = {
        "environment": "production" if production else "local",
        "state_dir": str(p.home),
        "dagster_home": str(inst.root_directory),
        "job": sync["job"],
        "run_id": sync["run_id"],
        "assets_materialized": sorted(sync["assets"]),
        "fleet": {
            k: fleet["summary"].get(k)
            for k in (
                "devices",
                "tenants",
                "platforms",
                "simulated_minutes",
                "syncs",
                "offline_syncs",
                "upload_crashes",
                "max_abs_skew_s",
                "state_edits",
            )
        },
        "rows_by_stream": fleet_sync.rows_by_stream(truth, fleet_sync.stored_rows(lake, tenants)),
        "duplicates_dropped": sync["duplicates_dropped"],
        **fleet_sync.central_picture(lake, tenants),
        "checks": sync["checks"],
        "fleet_status": status,
        "rollouts": rollouts,
        "table_rows": lake.table_counts(),
        "where_to_look": {
            "dagster_ui": "make dev, then http://127.0.0.1:3000 (runs, asset graph, checks, metadata plots)",
            "sql": 'edgeplat sql "SELECT * FROM telemetry_hourly LIMIT 20"',
            "fleet": "edgeplat fleet status",
            "rollouts": "edgeplat rollout list",
        },
        "steps": steps,
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    if args.json:
        print(dumps(summary))
    else:
        _print(console, summary)
    return 0


def _print(console, s: dict) -> None:
    f = s["fleet"]
    console.print(
        f"Fleet: {f['devices']} devices, {f['tenants']} tenants, {f['simulated_minutes']} simulated minutes, "
        f"{f['offline_syncs']} syncs while offline, {f['upload_crashes']} crashes mid-upload, "
        f"clock skew up to {f['max_abs_skew_s']:g} s"
    )
    t = Table(title="Rows per stream: generated on devices vs stored centrally")
    for c in ("stream", "generated", "evicted", "pending", "stored", "missing"):
        t.add_column(c, justify="left" if c == "stream" else "right")
    for stream, r in sorted(s["rows_by_stream"].items()):
        t.add_row(stream, *(f"{r[k]:,}" for k in ("generated", "evicted", "pending", "stored", "missing")))
    console.print(t)
    lag = s["sync_lag_s"]
    console.print(
        f"Duplicates dropped: {s['duplicates_dropped']:,}   quarantined: {s['quarantined'] or 'none'}   "
        f"conflicts by rule: {s['conflicts_by_rule'] or 'none'}   sync lag: max {lag['max']} s, "
        f"median {lag['median']} s"
    )
    for r in s["rollouts"]:
        console.print(
            f"\n[bold]Rollout {r['name']}[/] (release {r['release']}): [bold]{r['outcome']}[/], "
            f"last phase {r['last_phase']}, devices updated at peak {r['devices_updated_at_peak']}, "
            f"blast radius {r['blast_radius']}"
        )
        log = Table(show_header=True)
        for c in ("at", "kind", "phase", "actor", "reason"):
            log.add_column(c)
        for e in r["decision_log"]:
            log.add_row(
                str(e.get("at", ""))[:19],
                str(e.get("kind", "")),
                str(e.get("phase", "")),
                str(e.get("actor", "")),
                str(e.get("reason", ""))[:70],
            )
        console.print(log)
    console.print(f"\nRun {s['run_id']} of job {s['job']}; state directory {s['state_dir']}")
    for what, where in s["where_to_look"].items():
        console.print(f"  {what:>10}: {where}")
