"""``edgeplat``: the operator's command line. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys

from cli.common import CliError

# Subcommand modules, each with ``register(subparsers)``; later features append here.
COMMANDS = (
    "demo",
    "sql",
    "fleet",
    "sync",
    "simulate",
    "rollout",
    "dev",
    "security",
    "device",
    "metrics",
    "live",
    "release",
    "rules",
    "fleet_config",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeplat",
        description="Edge fleet platform: simulate devices, sync their data, query it, roll out releases.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CliError as exc:
        print(f"edgeplat {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
