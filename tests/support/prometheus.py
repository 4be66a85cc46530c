"""A real Prometheus and a real Alertmanager (the Debian binaries) on free loopback ports.

Each runs from its own temporary config and storage directory with short intervals, is waited
for until it answers its readiness endpoint, and is stopped by pid. A binary that is missing or
a server that does not start is a missing service (``require_service``: a skip locally, a
failure under ``CI=true``). ``webhook_sink`` is the loopback HTTP server Alertmanager delivers to.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.support.http_double import serving
from tests.support.processes import HOST, free_port, stop
from tests.support.services import require_service

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
PROMTOOL = "/usr/bin/promtool"
AMTOOL = "/usr/bin/amtool"


def binary(path: str, service: str) -> str:
    """``path`` (or the same name on PATH), or ``require_service`` when neither is there."""
    found = path if Path(path).is_file() else shutil.which(Path(path).name)
    if not found:
        require_service(service, f"{path} is not installed")
    return found


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


@contextmanager
def _server(
    argv: list[str], ready_url: str, log: Path, name: str, startup_timeout: float = 60.0
) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"{name} did not become ready at {ready_url} (exit {proc.returncode}):\n{tail}"
                )
            try:
                _get(ready_url)
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        yield
    finally:
        stop(proc)


@contextmanager
def running_alertmanager(config: dict[str, Any]) -> Iterator[str]:
    """Alertmanager serving ``config``; yields its base URL."""
    exe = binary(ALERTMANAGER, "Alertmanager")
    with tempfile.TemporaryDirectory(prefix="alertmanager-") as tmp:
        cfg = Path(tmp) / "alertmanager.yml"
        cfg.write_text(yaml.safe_dump(config))
        port = free_port()
        url = f"http://{HOST}:{port}"
        argv = [
            exe,
            f"--config.file={cfg}",
            f"--storage.path={tmp}/data",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",  # no gossip port: a single instance
        ]
        with _server(argv, f"{url}/-/ready", Path(tmp) / "log", "Alertmanager"):
            yield url


@contextmanager
def running_prometheus(*, targets: list[str], rule_files: list[Path], alertmanager: str) -> Iterator[str]:
    """Prometheus scraping ``targets`` every second with ``rule_files`` evaluated every second,
    alerting ``alertmanager`` (host:port); yields its base URL."""
    exe = binary(PROMETHEUS, "Prometheus")
    with tempfile.TemporaryDirectory(prefix="prometheus-") as tmp:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
            "scrape_configs": [{"job_name": "edgeplat", "static_configs": [{"targets": targets}]}],
        }
        cfg = Path(tmp) / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        port = free_port()
        url = f"http://{HOST}:{port}"
        argv = [
            exe,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp}/data",
            f"--web.listen-address={HOST}:{port}",
        ]
        with _server(argv, f"{url}/-/ready", Path(tmp) / "log", "Prometheus"):
            yield url


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    """The instant-query result of ``promql``; a PromQL error raises."""
    body = json.loads(_get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
    if body.get("status") != "success":
        raise AssertionError(f"query {promql!r} failed: {body}")
    return body["data"]["result"]


class Deliveries:
    """The Alertmanager webhook payloads a ``webhook_sink`` received, in order."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.arrived = threading.Condition()

    def respond(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        with self.arrived:
            self.payloads.append(json.loads(body or b"{}"))
            self.arrived.notify_all()
        return 200, {}, {}

    def wait_for(self, alertname: str, timeout: float) -> dict[str, Any] | None:
        """The first firing alert named ``alertname`` delivered within ``timeout`` seconds, or None."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for p in self.payloads:
                    for a in p.get("alerts", []):
                        if a.get("labels", {}).get("alertname") == alertname and a.get("status") == "firing":
                            return a
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.arrived.wait(left)


@contextmanager
def webhook_sink() -> Iterator[tuple[str, Deliveries]]:
    """A loopback HTTP server recording what Alertmanager posts; yields (URL, deliveries)."""
    deliveries = Deliveries()
    with serving(deliveries.respond, name="alertmanager-webhook") as url:
        yield f"{url}/alerts", deliveries
