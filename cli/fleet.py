"""``edgeplat fleet status``: the fleet at a glance."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from cli.common import dumps
from cli.environment import lakehouse
from edgeplat.fleet import fleet_status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="fleet commands", description="Look at the fleet.")
    fsub = p.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND", required=True)
    s = fsub.add_parser("status", help="devices online/offline, versions, sync lag, queue depth")
    s.add_argument("--tenant", help="only this tenant")
    s.add_argument("--json", action="store_true", help="print JSON for scripts")
    s.set_defaults(handler=status)


def status(args: argparse.Namespace) -> int:
    lake = lakehouse()
    with lake.session(read_only=True) as con:
        st = fleet_status(con, tenant_id=args.tenant)
    if args.json:
        print(dumps(st.as_dict()))
        return 0
    t = Table(title="Fleet status" + (f" — tenant {args.tenant}" if args.tenant else ""))
    t.add_column("what")
    t.add_column("value", justify="right")
    for k in ("devices", "tenants", "online", "offline", "unknown", "queue_depth"):
        t.add_row(k, str(getattr(st, k)))
    t.add_row("max sync lag", "-" if st.max_sync_lag_s is None else f"{st.max_sync_lag_s:,.0f} s")
    for plat, n in st.by_platform.items():
        t.add_row(f"platform {plat}", str(n))
    for ver, n in st.versions.items():
        t.add_row(f"version {ver}", str(n))
    Console().print(t)
    return 0
