"""``edgeplat rollout``: launch, inspect and steer progressive rollouts.

Commands that change a rollout (launch, approve, pause, resume, abort, fail-phase) run the
same Dagster jobs the UI launches, in process on the shared instance, so every command is
a run in the UI with who and why; ``status`` and ``list`` read the lakehouse.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cli.common import CliError, dumps, print_rows
from cli.environment import lakehouse
from cli.runs import run_job
from edgeplat.rollouts.events import Kind, RolloutState, Status
from edgeplat.rollouts.plan import plan_on_lake, plan_rows
from edgeplat.rollouts.spec import RolloutSpec, SpecError, format_duration, load_spec
from edgeplat.rollouts.store import RolloutNotFound, RolloutStore

ACTIONS = {  # CLI name -> (job, machine command)
    "approve": ("approve_phase", "approve"),
    "pause": ("pause", "pause"),
    "resume": ("resume", "resume"),
    "abort": ("abort", "abort"),
    "fail-phase": ("fail_phase", "fail_phase"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollout",
        help="launch and steer progressive rollouts",
        description="Progressive rollouts: launch a spec, watch it, approve, pause, resume, abort.",
    )
    rsub = p.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--json", action="store_true", help="print JSON (what scripts read)")

    q = rsub.add_parser("launch", help="launch a rollout from a spec file (runs the launch_rollout job)")
    q.add_argument("spec", type=Path, help="rollout spec YAML (see examples/rollouts/)")
    q.add_argument("--who", default=None, help="who launches (default: your login)")
    q.add_argument("--why", default="launched from the CLI", help="why (recorded in the rollout's events)")
    common(q)
    q.set_defaults(handler=launch)

    q = rsub.add_parser(
        "plan",
        help="print a spec's plan: devices per phase and stratum, earliest verdict (does not launch)",
        description="Size each phase of SPEC on the target devices the lakehouse holds now: devices "
        "per phase and stratum, how many will report (99% of launches), when the gates' minimum sample "
        "is reached and the earliest verdict. Exit code 1 when launch would refuse the plan.",
    )
    q.add_argument("spec", type=Path, help="rollout spec YAML (see examples/rollouts/)")
    common(q)
    q.set_defaults(handler=plan)

    q = rsub.add_parser("status", help="a rollout's status, or every active rollout's")
    q.add_argument("rollout", nargs="?", help="rollout id or name (default: all active)")
    q.add_argument("--events", type=int, default=15, help="how many recent events to show")
    common(q)
    q.set_defaults(handler=status)

    q = rsub.add_parser("list", help="every rollout, newest first")
    q.add_argument("--active", action="store_true", help="only rollouts still in progress")
    common(q)
    q.set_defaults(handler=list_rollouts)

    for name, (job, _) in ACTIONS.items():
        q = rsub.add_parser(name, help=f"{name} a rollout (runs the {job} job)")
        q.add_argument("rollout", help="rollout id or name")
        q.add_argument("--who", default=None, help="who gives the command (default: your login)")
        q.add_argument("--why", default="", help="why (recorded in the rollout's events)")
        if name == "approve":
            q.add_argument(
                "--phase", type=int, default=None, help="the phase approved (default: the waiting one)"
            )
        common(q)
        q.set_defaults(handler=act, action=name)


# ---------------------------------------------------------------------- running jobs


def approve(
    rollout: str, who: str, why: str, phase: int | None = None, at: str = ""
) -> tuple[str, dict[str, Any]]:
    """The CLI's approval path (also what ``edgeplat demo`` calls; ``at``: simulated time, ISO)."""
    return run_job(
        "approve_phase", "approve_op", {"rollout": rollout, "who": who, "why": why, "phase": phase, "at": at}
    )


# ---------------------------------------------------------------------- handlers


def _load(path: Path) -> tuple[str, RolloutSpec]:
    if not path.exists():
        raise CliError(f"no such spec file {str(path)!r}")
    text = path.read_text()
    try:
        return text, load_spec(text)  # fail fast with the field-level errors, before any run
    except SpecError as exc:
        raise CliError(str(exc).replace("rollout spec", f"rollout spec {str(path)!r}", 1)) from None


def plan(args: argparse.Namespace) -> int:
    _, spec = _load(args.spec)
    lake = lakehouse()
    lake.ensure_schema()
    with lake.session(read_only=True) as con:
        result = plan_on_lake(con, spec)
    if args.json:
        print(dumps(result.as_dict()))
        return 0 if result.ok else 1
    print(
        f"{spec.name}: {result.devices} target devices, {result.online_fraction:.0%} online; "
        f"bakes start {format_duration(result.settle)} after a deploy (device_timeout for offline devices)"
    )
    header, rows = plan_rows(result)
    table = Table(title="plan (times after each phase's deploy)")
    for c in header:
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(v) for v in r))
    # Piped output (scripts, tests) gets full-width rows instead of rich's 80-column wrapping.
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    for p in result.problems:
        print(f"refused: {p}")
    for w in result.warnings:
        print(f"warning: {w}")
    if result.ok:
        print("launchable: every phase can reach a gate verdict")
    return 0 if result.ok else 1


def launch(args: argparse.Namespace) -> int:
    text, _ = _load(args.spec)
    run_id, meta = run_job(
        "launch_rollout",
        "launch_rollout_op",
        {
            "spec_yaml": text,
            "who": args.who or getpass.getuser(),
            "why": args.why,
            "source": {"kind": "cli", "path": str(args.spec)},
        },
    )
    out = {"rollout_id": meta.get("rollout_id"), "status": meta.get("status"), "run_id": run_id}
    print(dumps(out) if args.json else f"launched {out['rollout_id']} ({out['status']}), run {run_id}")
    return 0


def act(args: argparse.Namespace) -> int:
    job, kind = ACTIONS[args.action]
    config: dict[str, Any] = {"rollout": args.rollout, "who": args.who or getpass.getuser(), "why": args.why}
    if args.action == "approve":
        config["phase"] = args.phase
    run_id, meta = run_job(job, f"{kind}_op", config)
    out = {
        "rollout_id": meta.get("rollout_id"),
        "command": kind,
        "status": meta.get("status"),
        "phase": meta.get("phase"),
        "run_id": run_id,
    }
    print(
        dumps(out)
        if args.json
        else f"{args.action}: {out['rollout_id']} is {out['status']} (phase {out['phase']}), run {run_id}"
    )
    return 0


def _store() -> RolloutStore:
    lake = lakehouse()
    lake.ensure_schema()
    return RolloutStore(lake)


def status(args: argparse.Namespace) -> int:
    store = _store()
    if not args.rollout:
        return list_rollouts(argparse.Namespace(active=True, json=args.json))
    try:
        rid = store.resolve(args.rollout)
        state = store.state(rid)
    except RolloutNotFound as exc:
        raise CliError(str(exc)) from None
    spec = state.spec
    waiting = sorted(state.approval_requested - set(state.approvals))
    out = {
        "rollout_id": rid,
        "name": spec.name,
        "release": f"{spec.release.name} {spec.release.version}",
        "status": str(state.status),
        "phase": state.phase,
        "phases": [p.percent for p in spec.phases],
        "deployed_phase": state.deployed_phase,
        "awaiting_approval": waiting,
        "approvals": state.approvals,
        "unreachable": len(state.unreachable),
        "reason": _why(state),
        "events": [
            {"at": e.at.isoformat(), "kind": e.kind, "phase": e.phase, "who": e.actor, "why": e.reason}
            for e in state.events[-args.events :]
        ],
    }
    if args.json:
        print(dumps(out))
        return 0
    print(
        f"{rid}: {out['release']} is {out['status']} at phase {state.phase} "
        f"(phases {out['phases']}; awaiting approval: {waiting or 'none'})"
    )
    if out["reason"]:
        print(f"why: {out['reason']}")
    print_rows(
        ["at", "kind", "phase", "who", "why"],
        [(e["at"], e["kind"], e["phase"], e["who"], e["why"]) for e in out["events"]],
        title="recent events",
    )
    return 0


def _why(state: RolloutState) -> str:
    """Why the rollout is where it is, when that is not obvious: a pause, or gates still inconclusive."""
    if state.status == Status.PAUSED:
        return state.pause_reason
    if state.status == Status.ROLLING_BACK or state.status in (Status.ROLLED_BACK, Status.ABORTED):
        return state.rollback_reason
    if state.inconclusive_streak:
        last = next((e for e in reversed(state.events) if e.kind == Kind.RECORD_GATES), None)
        return last.reason if last is not None else ""
    return ""


def list_rollouts(args: argparse.Namespace) -> int:
    rows = _store().list_rollouts(active_only=args.active)
    if args.json:
        print(dumps([r.as_dict() for r in rows]))
        return 0
    print_rows(
        ["rollout_id", "name", "release", "status", "phase", "tenants", "updated"],
        [
            (
                r.rollout_id,
                r.name,
                r.release_version,
                r.status,
                r.phase,
                ",".join(r.tenants),
                r.updated_at.isoformat(timespec="seconds"),
            )
            for r in rows
        ],
        title="rollouts",
    )
    return 0
