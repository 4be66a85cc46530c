"""``edgeplat metrics``: the exporter as a user starts it, on the environment's lakehouse."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import EDGEPLAT, cli
from tests.support.processes import free_port, stop


def families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_show_prints_the_exposition_of_an_empty_lakehouse(tmp_path: Path) -> None:
    out = cli("metrics", "show", home=tmp_path / "home")
    got = families(out.stdout)
    assert [s.value for s in got["edgeplat_exporter_lakehouse_up"]] == [1.0]
    assert got["edgeplat_devices"] == []  # no devices yet: the family, no series
    assert {s.labels["kind"] for s in got["edgeplat_rollout_events"]} >= {"rollback", "promote"}


def test_bad_options_are_named(tmp_path: Path) -> None:
    out = cli("metrics", "show", "--max-age", "-1", home=tmp_path / "home", check=False)
    assert out.returncode == 2 and "--max-age" in out.stderr


@pytest.mark.slow
def test_serve_answers_scrapes_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "EDGEPLAT_HOME": str(tmp_path / "home")}
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.Popen(
        [EDGEPLAT, "metrics", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "the exporter never answered"
                time.sleep(0.3)
        assert "edgeplat_exporter_lakehouse_up 1.0" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        stop(proc)
