"""A local Mosquitto for ``make dev``: started on loopback only when nothing listens on the port.

Production brokers (a Mosquitto or EMQX cluster, AWS IoT Core, a Greengrass core's broker)
are run by the operator; this is the embedded default beside the local Dagster.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "mosquitto")


def _die_with_parent() -> None:
    """Linux: SIGTERM the broker when the subscriber that started it exits, however it exits."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def start_local_broker(host: str, port: int) -> subprocess.Popen[bytes] | None:
    """Start Mosquitto on ``host:port`` unless a broker already answers there; None if it does
    or if Mosquitto is not installed (the subscriber then keeps retrying the port)."""
    if listening(host, port):
        return None
    binary = next((p for p in MOSQUITTO_PATHS if Path(p).exists() or shutil.which(p)), None)
    if binary is None:
        return None
    conf = Path(tempfile.mkdtemp(prefix="edgeplat-mqtt-")) / "mosquitto.conf"
    conf.write_text(f"listener {port} {host}\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and proc.poll() is None and not listening(host, port):
        time.sleep(0.05)
    return proc
