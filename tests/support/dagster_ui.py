"""The Dagster UI under test: a state directory holding a materialized rollout, ``edgeplat dev``
serving it on a free loopback port, and headless Chromium (Debian's ``chromium``, driven by
playwright) to load its pages as a user's browser does.

``edgeplat dev`` runs in its own session; stopping it sends SIGINT to that process group (by
the child's pid), which is how Ctrl-C stops ``dagster dev`` and its code server and daemon.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from cli.environment import instance, lakehouse
from cli.runs import run_partition
from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.events import TERMINAL, Status
from edgeplat.rollouts.store import RolloutStore
from edgeplat.simulator.rollout_fleet import DemoFleet
from pipelines.resources import resources_for
from tests.support.cli import EDGEPLAT
from tests.support.processes import HOST, free_port
from tests.support.rollouts import sized_spec
from tests.support.services import require_service

CHROMIUM = "/usr/bin/chromium"


def completed_rollout(devices: int = 200) -> str:
    """In the current state directory: a demo fleet, a rollout driven through all its phases (a
    finished rollout, so the daemon's promotion sensor leaves it alone while the UI is read), and
    its ``rollout_refresh`` run on the Dagster instance there. Returns the rollout id."""
    lake = lakehouse()
    backend = resources_for()["fleet_backend"].get()
    fleet = DemoFleet(lake, backend, devices=devices, upload_every=None)
    try:
        fleet.advance(30)
        ctl = Controller(RolloutStore(lake), backend)
        rid = ctl.launch(sized_spec(), actor="alice", now=fleet.now)
        for _ in range(100):
            ctl.tick(rid, fleet.now)
            if ctl.store.state(rid).status in TERMINAL:
                break
            fleet.advance(5)
    finally:
        fleet.close()
    status = ctl.store.state(rid).status
    if status != Status.COMPLETED:
        raise AssertionError(f"the healthy demo rollout {rid} ended {status}, not completed")
    instance().add_dynamic_partitions("rollouts", [rid])
    run_partition("rollout_refresh", rid)
    return rid


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://{HOST}:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["data"]


@contextmanager
def dagster_dev(home: Path, *, timeout: float = 180) -> Iterator[str]:
    """``edgeplat dev`` on a free loopback port over the state directory ``home``; yields its URL
    once the code location has loaded, and stops the whole process group on the way out."""
    port = free_port()
    env = {**os.environ, "EDGEPLAT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    proc = subprocess.Popen(
        [EDGEPLAT, "dev", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"edgeplat dev exited with {proc.returncode} before serving")
            try:
                if _graphql(port, "{ assetNodes { id } }")["assetNodes"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Dagster UI did not answer on port {port} within {timeout:.0f} s")
            time.sleep(1)
        _graphql(port, "mutation { setNuxSeen }")  # no "join the community" dialog over the pages
        yield f"http://{HOST}:{port}"
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGINT the child's process group (Ctrl-C), then SIGKILL what is left after a grace period."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for _ in range(60):  # the code server and daemon follow their parent
        if subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True).returncode != 0:
            return
        time.sleep(0.5)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def require_chromium() -> None:
    """Skip the test (fail it under CI) unless Debian's Chromium and playwright are installed."""
    if shutil.which(CHROMIUM) is None:
        require_service("Chromium", f"{CHROMIUM} is not installed")
    if importlib.util.find_spec("playwright") is None:
        require_service("Chromium", "playwright is not installed")


@contextmanager
def chromium_page() -> Iterator:
    """A playwright page in headless Debian Chromium (``require_chromium`` first)."""
    require_chromium()
    from playwright.sync_api import sync_playwright  # an optional test dependency: checked above

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()
