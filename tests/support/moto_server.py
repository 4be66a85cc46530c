"""Run moto's S3 API server on loopback as a subprocess, for service-backed tests.

``running_moto_server()`` starts ``python -m moto.server`` (the ``moto_server`` console
script) on 127.0.0.1 on a free port, waits until it answers HTTP, yields its endpoint URL
and stops it afterwards by process id: terminate, then kill if it does not exit in time.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from botocore.exceptions import ClientError

from tests.support.processes import HOST, free_port, stop

MOTO_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # moto accepts any


def moto_client(endpoint: str, service: str = "s3", **credentials: str):
    """A boto3 client of ``service`` on the moto server at ``endpoint`` (region us-east-1), signed
    with ``credentials`` (``aws_access_key_id``, ``aws_secret_access_key``), MOTO_CREDENTIALS by default."""
    import boto3

    return boto3.client(
        service, endpoint_url=endpoint, region_name="us-east-1", **(credentials or MOTO_CREDENTIALS)
    )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


def _start(log: Path, startup_timeout: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break  # exited: most likely the port was taken between free_port() and bind
        if _answers(f"{url}/moto-api/"):
            return proc, url
        time.sleep(0.1)
    stop(proc)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"moto server on {url} did not start (exit code {proc.returncode}):\n{tail}")


@contextmanager
def running_moto_server(*, startup_timeout: float = 30.0, tries: int = 3) -> Iterator[str]:
    """Yield the endpoint URL of a fresh moto server; stop it (by pid) on exit."""
    with tempfile.TemporaryDirectory(prefix="moto-") as tmp:
        log = Path(tmp) / "moto.log"
        for attempt in range(tries):
            try:
                proc, url = _start(log, startup_timeout)
                break
            except RuntimeError:
                if attempt + 1 == tries:
                    raise
        try:
            yield url
        finally:
            stop(proc)


def s3_outcome(call) -> str:
    """What the S3 API answered a call: "allowed", or its error code (e.g. "AccessDenied")."""
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return "allowed"
