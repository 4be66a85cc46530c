"""``edgeplat dev``: the Dagster UI on 127.0.0.1 with the shared instance; Ctrl-C stops it."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path

from cli.environment import prepare_home


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dev", help="start the Dagster UI and daemon (dagster dev) on 127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    home = prepare_home()
    repo = Path(__file__).resolve().parents[1]
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    argv = [dagster, "dev", "-w", str(repo / "workspace.yaml"), "-h", args.host, "-p", str(args.port)]
    print(
        f"Dagster UI: http://{args.host}:{args.port}  (state: {home.home}, DAGSTER_HOME={os.environ['DAGSTER_HOME']})"
    )
    print("Stop with Ctrl-C.", flush=True)
    # dagster dev ignores SIGTERM when it inherits an ignored SIGINT (as from a script or
    # a background job): reset both to their defaults before handing over the process.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(repo)
    os.execv(dagster, argv)
    return 0  # not reached
