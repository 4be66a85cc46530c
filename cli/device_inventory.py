"""``edgeplat device list|show|register``: the device inventory (the ``devices`` table) on the CLI.

``register`` is the operator's claim (the strongest source, see ``edgeplat.inventory.claims``):
it sets a device's platform and tags, e.g. for a device that only sends batches and is on no
platform registry; the ``device_inventory`` asset imports the rest from Greengrass and IoT Hub.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from cli.common import CliError, dumps, print_rows
from cli.environment import lakehouse
from edgeplat.inventory.claims import DeviceClaim
from edgeplat.inventory.store import fold_claims, list_devices, show_device

PLATFORMS = ("edge_agent", "greengrass", "iot_edge")


def add_commands(dsub: argparse._SubParsersAction) -> None:
    ls = dsub.add_parser("list", help="devices with platform, tags, connectivity, what they run")
    ls.add_argument("--tenant")
    ls.add_argument("--platform", choices=PLATFORMS)
    ls.add_argument("--conflicts", action="store_true", help="only devices whose sources disagree")
    ls.add_argument("--limit", type=int, default=1000)
    ls.add_argument("--format", choices=("table", "csv", "json"), default="table")
    ls.set_defaults(handler=list_cmd)
    sh = dsub.add_parser("show", help="one device: every field, where it came from, conflicts")
    sh.add_argument("--tenant", required=True)
    sh.add_argument("--device", required=True)
    sh.set_defaults(handler=show_cmd)
    rg = dsub.add_parser("register", help="set a device's platform and tags (the operator's claim)")
    rg.add_argument("--tenant", required=True)
    rg.add_argument("--device", required=True)
    rg.add_argument("--platform", choices=PLATFORMS)
    rg.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE", help="repeatable")
    rg.add_argument("--json", action="store_true")
    rg.set_defaults(handler=register_cmd)


def _lake():
    lake = lakehouse()
    lake.ensure_schema()  # a lakehouse made before the inventory columns existed gets them
    return lake


def list_cmd(args: argparse.Namespace) -> int:
    with _lake().session(read_only=True) as con:
        rows = list_devices(
            con, tenant=args.tenant, platform=args.platform, conflicts_only=args.conflicts, limit=args.limit
        )
    if args.format == "json":
        print(dumps(rows))
        return 0
    cols = ["tenant_id", "device_id", "platform", "tags", "connectivity", "last_seen", "reported_version"]
    cols += ["platform_state", "conflicts"]
    print_rows(cols, [tuple(r[c] for c in cols) for r in rows], args.format, title=f"{len(rows)} devices")
    return 0


def show_cmd(args: argparse.Namespace) -> int:
    with _lake().session(read_only=True) as con:
        row = show_device(con, args.tenant, args.device)
    if row is None:
        raise CliError(
            f"no device {args.tenant}/{args.device} in the inventory: check the ids with `edgeplat device list "
            f"--tenant {args.tenant}`, or add it with `edgeplat device register`"
        )
    print(dumps(row))
    return 0


def register_cmd(args: argparse.Namespace) -> int:
    tags = {}
    for item in args.tag:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--tag {item!r}: write NAME=VALUE, e.g. --tag channel=beta")
        tags[name] = value
    if args.platform is None and not tags:
        raise CliError("nothing to register: give --platform and/or --tag NAME=VALUE")
    claim = DeviceClaim(args.tenant, args.device, "operator", platform=args.platform, tags=tags)
    report = _lake().write(lambda con: fold_claims(con, [claim], datetime.now(UTC)), what="device register")
    if args.json:
        print(dumps(report.as_dict()))
    else:
        what = "registered" if report.new else ("updated" if report.changed else "unchanged")
        print(
            f"{args.tenant}/{args.device}: {what} ({json.dumps({'platform': args.platform, 'tags': tags})})"
        )
    return 0
