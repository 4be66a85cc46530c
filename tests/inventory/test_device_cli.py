"""``edgeplat device register|list|show`` on a fresh state directory (three CLI processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import cli

pytestmark = pytest.mark.slow


def test_register_list_show(tmp_path: Path) -> None:
    out = cli(
        "device", "register", "--tenant", "acme", "--device", "d1", "--platform", "edge_agent",
        "--tag", "channel=beta", home=tmp_path,
    )  # fmt: skip
    assert "acme/d1: registered" in out.stdout
    rows = json.loads(cli("device", "list", "--format", "json", home=tmp_path).stdout)
    assert [(r["device_id"], r["platform"], json.loads(r["tags"])) for r in rows] == [
        ("d1", "edge_agent", {"channel": "beta"})
    ]
    missing = cli("device", "show", "--tenant", "acme", "--device", "nope", home=tmp_path, check=False)
    assert missing.returncode != 0 and "edgeplat device register" in missing.stderr + missing.stdout
