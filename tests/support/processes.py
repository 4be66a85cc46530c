"""Servers the tests start as child processes: a free loopback port to bind, and a stop by process id."""

from __future__ import annotations

import socket
import subprocess

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port nothing listens on now (another process may still take it before the server binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate ``proc``, then kill it if it has not exited within ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
