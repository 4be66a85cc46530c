"""A real Mosquitto broker on a free loopback port, started as a child process and stopped by pid.

``Broker.stop()`` / ``start()`` take it down and bring it back on the same port, for tests of
a broker that is unreachable for a while.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import HOST, free_port, stop

MOSQUITTO = "/usr/sbin/mosquitto"


class Broker:
    """One Mosquitto process (anonymous, no persistence) on ``HOST:port``."""

    def __init__(self, root: Path, port: int | None = None, extra: str = "", anonymous: bool = True) -> None:
        self.port = port or free_port()
        self.conf = root / "mosquitto.conf"
        self.conf.write_text(
            # run as the test's user: started as root, Mosquitto would drop to `mosquitto` and
            # could no longer read the test's files (certificates, ACL, log)
            f"user {getpass.getuser()}\nlistener {self.port} {HOST}\n"
            f"allow_anonymous {'true' if anonymous else 'false'}\npersistence false\n"
            f"log_dest file {root / 'mosquitto.log'}\n{extra}"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()[:500]}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {HOST}:{self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@contextmanager
def running_mosquitto(root: Path, extra: str = "", anonymous: bool = True) -> Iterator[Broker]:
    """A broker; ``extra`` adds lines to the listener's configuration (TLS, ACLs, password file)."""
    if not Path(MOSQUITTO).exists():
        raise FileNotFoundError(f"{MOSQUITTO} is missing")
    broker = Broker(root, extra=extra, anonymous=anonymous).start()
    try:
        yield broker
    finally:
        broker.stop()
