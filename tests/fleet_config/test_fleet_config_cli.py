"""``edgeplat fleet-config render`` on the example fleet/ tree: resolved values with their layers,
and a broken working copy refused with every error, before anything is pushed (the device
need not be registered yet: --tag gives its tags)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.cli import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet"


@pytest.mark.slow
def test_render_shows_each_value_with_its_layer_and_refuses_a_broken_tree(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "gitops"
    shutil.copytree(EXAMPLE, work / "fleet")
    out = cli(
        "fleet-config",
        "render",
        "--repo",
        str(work),
        "--tenant",
        "acme",
        "--device",
        "pump-007",
        "--tag",
        "site=north",
        "--tag",
        "link=lte",
        "--json",
        home=home,
    )
    view = json.loads(out.stdout)
    assert view["errors"] == [] and view["tags"] == {"site": "north", "link": "lte"}
    got = {(v["key"], v["field"]): (v["value"], v["layer"]) for v in view["values"]}
    assert got == {
        ("pump", "mode"): ("turbo", "fleet/acme/devices/pump-007.yaml"),
        ("pump", "interval_s"): (30, "fleet/acme/tags/north-sites.yaml"),
        ("pump", "firmware_pin"): ("2.4.1", "fleet/acme/tenant.yaml"),
        ("pump", "calibration"): (1.5, "fleet/acme/tags/north-sites.yaml"),
        ("telemetry", "sample_s"): (120, "fleet/acme/tags/cellular.yaml"),
        ("telemetry", "upload"): ("wifi_only", "fleet/acme/tags/cellular.yaml"),
    }

    (work / "fleet/acme/devices/pump-007.yaml").write_text("values: {config: {pump: {mode: warp}}}\n")
    bad = cli(
        "fleet-config",
        "render",
        "--repo",
        str(work),
        "--tenant",
        "acme",
        "--device",
        "pump-007",
        "--tag",
        "site=north",
        home=home,
        check=False,
    )
    assert bad.returncode == 1
    assert "fleet/acme/devices/pump-007.yaml" in bad.stdout and "'warp' is not one of" in bad.stdout
    assert "the platform would refuse this tree" in bad.stdout
