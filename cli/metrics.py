"""``edgeplat metrics``: the Prometheus exporter of fleet and platform figures (``serve``), or one
exposition printed (``show``), read from the lakehouse of the current environment."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from datetime import timedelta
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from cli.common import CliError
from cli.environment import lakehouse
from edgeplat.lakehouse import Lakehouse
from edgeplat.metrics.collector import LakehouseCollector


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "metrics",
        help="export fleet and platform metrics for Prometheus",
        description="Prometheus metrics read from the lakehouse: devices, sync lag, ingest, quarantine, "
        "conflicts, rollouts, gates, notifications (docs/monitoring.md).",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve_p = actions.add_parser("serve", help="serve /metrics over HTTP until stopped (Ctrl-C or SIGTERM)")
    serve_p.add_argument("--port", type=int, default=9464, help="TCP port (default 9464)")
    serve_p.add_argument("--addr", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    show_p = actions.add_parser("show", help="print the metrics once, in the Prometheus text format")
    for q in (serve_p, show_p):
        q.add_argument(
            "--max-age",
            type=float,
            default=15.0,
            help="seconds a lakehouse read is served before the next scrape reads again (default 15)",
        )
        q.add_argument(
            "--per-device",
            action="store_true",
            help="also export one sync-lag series per device (large fleets: many series)",
        )
        q.add_argument(
            "--recent-hours",
            type=float,
            default=24.0,
            help="finished rollouts keep their series this long (default 24)",
        )
    serve_p.set_defaults(handler=run_serve)
    show_p.set_defaults(handler=run_show)


def registry_for(
    lake: Lakehouse, *, max_age: float, per_device: bool, recent_hours: float
) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(
        LakehouseCollector(lake, max_age=max_age, per_device=per_device, recent=timedelta(hours=recent_hours))
    )
    return registry


def serve(
    registry: CollectorRegistry, port: int, addr: str = "127.0.0.1"
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` at http://addr:port/metrics from a background thread; ``server.shutdown()`` stops it."""
    try:
        return start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise CliError(f"cannot listen on {addr}:{port} ({exc}); choose another --port") from exc


def _options(args: argparse.Namespace) -> dict:
    if args.max_age < 0 or args.recent_hours < 0:
        raise CliError("--max-age and --recent-hours must be 0 or more")
    return {"max_age": args.max_age, "per_device": args.per_device, "recent_hours": args.recent_hours}


def run_serve(args: argparse.Namespace) -> int:
    options = _options(args)
    registry = registry_for(lakehouse(), **options)
    server, _thread = serve(registry, args.port, args.addr)
    print(f"metrics: http://{args.addr}:{args.port}/metrics  (stop with Ctrl-C)", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    server.shutdown()
    return 0


def run_show(args: argparse.Namespace) -> int:
    options = _options(args)
    registry = registry_for(lakehouse(), **options)
    sys.stdout.write(generate_latest(registry).decode())
    return 0
