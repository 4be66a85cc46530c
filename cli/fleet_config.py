"""``edgeplat fleet-config render``: preview what a GitOps ``fleet/`` tree sets on one device."""

from __future__ import annotations

import argparse
import os

from rich.console import Console
from rich.table import Table

from cli.common import CliError, dumps
from cli.environment import lakehouse
from edge_sync.rules import RulesError
from edgeplat.fleet_config.apply import load_inventory
from edgeplat.fleet_config.preview import preview
from edgeplat.fleet_config.source import tree_on_disk
from edgeplat.state_rules_source import operator_rules


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fleet-config",
        help="desired device state from the GitOps repository's fleet/ tree",
        description="Preview the fleet/ tree of a GitOps working directory (docs/gitops.md).",
    )
    fsub = p.add_subparsers(dest="fleet_config_command", metavar="SUBCOMMAND", required=True)
    r = fsub.add_parser(
        "render",
        help="one device's resolved values and the layer each comes from; exit 1 if the tree is invalid",
    )
    r.add_argument("--repo", default=".", help="the GitOps working directory holding fleet/ (default: .)")
    r.add_argument("--tenant", required=True)
    r.add_argument("--device", required=True)
    r.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="lay a tag over the device's inventory tags (repeatable; previews a device not yet registered)",
    )
    r.add_argument(
        "--rules",
        default=os.environ.get("EDGEPLAT_STATE_RULES", ""),
        metavar="PATH",
        help="the conflict rules file the platform merges by (default: $EDGEPLAT_STATE_RULES, else the packaged rules)",
    )
    r.add_argument("--json", action="store_true", help="print JSON for scripts")
    r.set_defaults(handler=render)


def render(args: argparse.Namespace) -> int:
    tags: dict[str, str] | None = None
    for item in args.tag:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--tag {item!r}: write NAME=VALUE, e.g. --tag site=north")
        tags = {**(tags or {}), name: value}
    try:
        files = tree_on_disk(args.repo)
    except FileNotFoundError as exc:
        raise CliError(f"{exc}; give the working directory with --repo") from None
    try:
        rules = operator_rules(args.rules or None)
    except RulesError as exc:
        raise CliError(f"{exc}\n(--rules / EDGEPLAT_STATE_RULES)") from None
    with lakehouse().session(read_only=True) as con:
        inventory = load_inventory(con)
    view = preview(files, inventory, rules, args.tenant, args.device, tags)
    if args.json:
        print(dumps(view.as_dict()))
        return 1 if view.errors else 0
    console = Console()
    t = Table(title=f"{args.tenant}/{args.device} — tags {view.tags or '{}'}")
    for col in ("namespace", "key", "field", "value", "layer"):
        t.add_column(col)
    for row in view.rows():
        t.add_row(*row)
    console.print(t)
    for err in view.errors:
        console.print(f"[red]error[/red] {err}", highlight=False, soft_wrap=True)
    if view.errors:
        console.print(f"{len(view.errors)} error(s): the platform would refuse this tree and change nothing")
        return 1
    return 0
