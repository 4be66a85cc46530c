"""``edgeplat rollout``: launch, inspect and steer progressive rollouts.

Commands that change a rollout (launch, approve, pause, resume, abort, fail-phase) run the
same Dagster jobs the UI launches, in process on the shared instance, so every command is
a run in the UI with who and why; ``status`` and ``list`` read the lakehouse.
"""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path
from typing import Any

from cli.common import CliError, dumps, print_rows
from cli.environment import lakehouse
from cli.runs import run_job
from edgeplat.rollouts.spec import SpecError, load_spec
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


def launch(args: argparse.Namespace) -> int:
    if not args.spec.exists():
        raise CliError(f"no such spec file {str(args.spec)!r}")
    text = args.spec.read_text()
    try:
        load_spec(text)  # fail fast with the field-level errors, before any run
    except SpecError as exc:
        raise CliError(str(exc).replace("rollout spec", f"rollout spec {str(args.spec)!r}", 1)) from None
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
    if meta.get("empty_target"):
        out["empty_target"] = meta["empty_target"]
    print(dumps(out) if args.json else f"launched {out['rollout_id']} ({out['status']}), run {run_id}")
    if out.get("empty_target") and not args.json:
        print(f"warning: the spec selects no device: {out['empty_target']}")
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
    print_rows(
        ["at", "kind", "phase", "who", "why"],
        [(e["at"], e["kind"], e["phase"], e["who"], e["why"]) for e in out["events"]],
        title="recent events",
    )
    return 0


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
