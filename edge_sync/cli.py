"""``edge-sync``: the device agent's command line (run, status, sync-once).

When an agent is already running with a ``socket_path``, ``status`` and ``sync-once``
ask it over the socket (the cache file is locked by the process that has it open);
otherwise they open the cache themselves.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from edge_sync.config import AgentConfig, ConfigError, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-sync",
        description="The edge device agent: records into an encrypted offline cache and syncs it with the platform.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log at INFO level (DEBUG with -vv)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", "-c", required=True, type=Path, help="path to device.toml")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return p

    add(
        "run",
        "Run the agent: sync every sync_interval_s, serve the local socket; stops on SIGTERM/SIGINT.",
        json_flag=False,
    )
    add("status", "Show queue depth, watermark and evictions per stream, release and the last sync.")
    add(
        "sync-once", "Pull desired state and upload pending rows once, then exit (exit 1 if the sync failed)."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    # Arrow's default mimalloc pool keeps freed memory; the system allocator returns it, which
    # lowers the agent's peak memory (docs/decisions.md, "Agent memory"). Only effective before
    # pyarrow loads.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level={0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        return {"run": _run, "status": _status, "sync-once": _sync_once}[args.command](config, args)
    except ConfigError as exc:
        print(f"edge-sync {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"edge-sync {args.command}: {_explain(exc)}", file=sys.stderr)
        return EXIT_FAILED


def _explain(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "lock" in str(exc).lower() and "conflicting" in str(exc).lower():
        text += (
            "\n(the cache is open in another process, probably a running agent: set socket_path in "
            "device.toml so status and sync-once can ask it)"
        )
    return text


def _agent(config: AgentConfig):
    from edge_sync.agent import DeviceAgent

    return DeviceAgent(config)


def _ask_running(config: AgentConfig, request: dict[str, Any]) -> dict[str, Any] | None:
    """The reply of a running agent, or None when none listens on the socket."""
    if config.socket_path is None or not config.socket_path.exists():
        return None
    from edge_sync.agent import socket_request

    try:
        reply = socket_request(config.socket_path, request)
    except OSError:
        return None  # a stale socket file
    if not reply.get("ok"):
        raise RuntimeError(f"the running agent refused the request: {reply.get('error')}")
    return reply


def _run(config: AgentConfig, args: argparse.Namespace) -> int:
    agent = _agent(config)
    print(
        f"edge-sync: agent for {config.tenant_id}/{config.device_id} running "
        f"(sync every {config.sync_interval_s:g}s{', socket ' + str(config.socket_path) if config.socket_path else ''})",
        file=sys.stderr,
    )
    agent.run()
    return EXIT_OK


def _status(config: AgentConfig, args: argparse.Namespace) -> int:
    reply = _ask_running(config, {"status": {}})
    if reply is not None:
        status = reply["status"]
    else:
        with _agent(config) as agent:
            status = agent.status()
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(_status_text(status))
    return EXIT_OK


def _sync_once(config: AgentConfig, args: argparse.Namespace) -> int:
    reply = _ask_running(config, {"sync": {}})
    if reply is not None:
        report = reply["report"]
    else:
        with _agent(config) as agent:
            report = agent.sync_once().to_dict()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(_report_text(report))
    return EXIT_OK if report["ok"] else EXIT_FAILED


def _status_text(s: dict[str, Any]) -> str:
    lines = [
        f"device {s['tenant_id']}/{s['device_id']}  online: {s['online']}",
        f"release {s['release']['version']} slot {s['release']['slot']}  desired revision {s['desired_revision']}",
        f"cache {s['cache']['size_bytes']:,} / {s['cache']['max_bytes']:,} bytes (file {s['cache']['file_bytes']:,})",
        f"{'stream':<10} {'queued':>10} {'watermark':>10} {'last seq':>10} {'evicted':>9}",
    ]
    for name, st in s["streams"].items():
        lines.append(
            f"{name:<10} {st['queue_depth']:>10,} {st['watermark']:>10,} {st['last_seq']:>10,} "
            f"{st['evicted']['total']:>9,}"
        )
    inst = s.get("installer")
    if inst:  # the slot installer ([install] in device.toml)
        pending = inst["pending"] or {}
        lines.append(
            f"installer: committed {(inst['committed'] or {}).get('version')}  slots {inst['slots']}"
            + (f"  {pending['step']} {pending['version']} (slot {pending['slot']})" if pending else "")
            + (f"  reverted here: {', '.join(inst['reverted'])}" if inst["reverted"] else "")
        )
    last = s.get("last_sync") or {}
    lines.append(
        f"last sync: {last.get('last_ms', 'never')} ok={last.get('ok')} rows={last.get('rows_sent')} "
        f"last ok: {last.get('last_ok_ms', 'never')}"
    )
    live = s.get("live")
    if live:
        lines.append(
            f"live: connected={live['connected']} published={live['published']:,} queued={live['queued']:,} "
            f"dropped={live['dropped_queue_full']:,} errors={live['publish_errors']:,}"
        )
    return "\n".join(lines)


def _report_text(r: dict[str, Any]) -> str:
    lines = [
        f"sync {'ok' if r['ok'] else 'FAILED'}: {r['rows_sent']:,} rows, {r['bytes_sent']:,} bytes"
        + (" (offline)" if r["offline"] else "")
        + (" (budget exhausted)" if r["budget_exhausted"] else ""),
        f"downlink: {(r.get('downlink') or {}).get('status')}",
        f"{'stream':<10} {'rows':>10} {'batches':>8} {'bytes':>12} {'deferred':>10}",
    ]
    for name, st in r["streams"].items():
        lines.append(
            f"{name:<10} {st['rows_sent']:>10,} {st['batches']:>8,} {st['bytes']:>12,} {st['deferred_rows']:>10,}"
        )
    lines += [f"error: {e}" for e in r["errors"]]
    lines += [f"error: {e}" for st in r["streams"].values() for e in st["errors"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
