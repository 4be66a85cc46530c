"""A real OpenBao dev server on loopback for service-backed tests.

OpenBao speaks the Vault HTTP API, so hvac talks to it exactly as it would to Vault in
production. The server keeps everything in memory (``-dev``), is reached only on
127.0.0.1 and is stopped by its process id when the context exits.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from edgeplat.security.openbao_binary import bao_binary
from tests.support.processes import free_port, stop

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


def _wait_healthy(addr: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"OpenBao exited with code {proc.returncode} before answering; log:\n{log_path.read_text()[-2000:]}"
            )
        try:
            # 200 means initialised, unsealed and active: a dev server is all three once ready.
            if requests.get(f"{addr}/v1/sys/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"OpenBao did not answer sys/health at {addr} within {START_TIMEOUT_S:.0f} s")


@contextmanager
def running_openbao(log_dir: Path | None = None) -> Iterator[tuple[str, str]]:
    """Start ``bao server -dev`` on a free loopback port; yield ``(addr, root_token)``.

    The root token is random per run and is not written to ``~/.vault-token``
    (``-dev-no-store-token``). The server log goes to ``log_dir/openbao.log`` when given.
    """
    port = free_port()
    root_token = "root-" + secrets.token_hex(16)
    addr = f"http://127.0.0.1:{port}"
    log_root = log_dir if log_dir is not None else Path(os.environ.get("TMPDIR", "/tmp"))
    log_path = log_root / f"openbao-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                "-dev-no-store-token",
                f"-dev-root-token-id={root_token}",
                f"-dev-listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        _wait_healthy(addr, proc, log_path)
        yield addr, root_token
    finally:
        stop(proc, STOP_TIMEOUT_S)
