"""The code location loads, validates, and has the expected asset graph and jobs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[2]


def test_definitions_load_with_local_resources() -> None:
    from pipelines.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"lakehouse_tables", "fleet_status"} <= keys
    assert defs.resolve_job_def("fleet_refresh") is not None
    assert set(defs.resources) >= {"lakehouse", "object_store"}


def test_production_resources_take_secrets_from_env_vars(monkeypatch) -> None:
    from pipelines.resources import resources_for

    res = resources_for("production")
    # EnvVar-backed fields stay unresolved in the definitions: no secret value is baked in.
    for name in ("s3_access_key_id", "s3_secret_access_key", "catalog"):
        assert isinstance(getattr(res["lakehouse"], name), dg.EnvVar), name


def test_unknown_environment_is_a_clear_error(monkeypatch) -> None:
    from edgeplat.settings import environment

    monkeypatch.setenv("EDGEPLAT_ENV", "prod")
    with pytest.raises(ValueError, match="EDGEPLAT_ENV='prod' is not known; set it to one of: local, production"):
        environment()


@pytest.mark.slow
def test_dagster_definitions_validate_passes(tmp_path: Path) -> None:
    env = {**os.environ, "EDGEPLAT_HOME": str(tmp_path / "home")}
    env.pop("DAGSTER_HOME", None)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All code locations passed validation" in out.stdout + out.stderr


def test_main_job_materializes_the_fleet_assets() -> None:
    from pipelines.definitions import defs

    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("fleet_refresh").execute_in_process(instance=instance)
        assert result.success
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert materialized == {"lakehouse_tables", "fleet_status"}
        md = instance.get_latest_materialization_event(dg.AssetKey("lakehouse_tables")).asset_materialization.metadata
        assert md["rows/telemetry"].value == 0
