"""``edgeplat dev``: the Dagster UI on 127.0.0.1 with the shared instance and the live MQTT
subscriber beside it; Ctrl-C stops both."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from cli.environment import prepare_home

_PR_SET_PDEATHSIG = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dev", help="start the Dagster UI and daemon (dagster dev) on 127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(handler=run)


def start_live_subscriber() -> subprocess.Popen[bytes] | None:
    """``edgeplat live --local-broker`` beside Dagster; it stops with this process (which becomes
    ``dagster dev``): it shares the process group Ctrl-C signals, and Linux sends it SIGTERM when
    the parent exits."""
    edgeplat = shutil.which("edgeplat", path=str(Path(sys.executable).parent))
    if edgeplat is None:
        return None

    def die_with_parent() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    print("Live subscriber: edgeplat live --local-broker (MQTT on 127.0.0.1:1883 unless EDGEPLAT_MQTT_URL)")
    return subprocess.Popen([edgeplat, "live", "--local-broker"], preexec_fn=die_with_parent)


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
    start_live_subscriber()
    os.execv(dagster, argv)
    return 0  # not reached
