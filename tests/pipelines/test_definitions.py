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
    assert {
        "lakehouse_tables",
        "fleet_status",
        "devices",
        "device_health",
        "ingested_batches",
        "sync_reconciliation",
        "rollout_assignments",
        "rollout_phase_status",
        "rollout_health",
        "rollout_events",
        "device_drift",
    } <= keys
    for job in (
        "sync_fleet",
        "ingest_batches",
        "reconcile_sync",
        "edit_device_state",
        "publish_state_rules",
        "launch_rollout",
        "approve_phase",
        "pause",
        "resume",
        "abort",
        "fail_phase",
        "archive_settled",
        "replay_archive",
    ):
        assert defs.resolve_job_def(job) is not None, job
    assert {s.name for s in defs.sensors} >= {
        "batch_arrival_sensor",
        "rollout_promotion_sensor",
        "rollout_gitops_sensor",
        "state_rules_publish_sensor",
    }
    assert [s.cron_schedule for s in defs.schedules] == [
        "*/15 * * * *",
        "* * * * *",
        "7 * * * *",
        "*/2 * * * *",
        "5-59/15 * * * *",
        "37 * * * *",
    ]
    assert "platform_run_failure_sensor" in {s.name for s in defs.sensors}
    assert set(defs.resources) >= {
        "lakehouse",
        "object_store",
        "key_service",
        "device_registry",
        "platform_signer",
        "fleet_backend",
        "gitops_repo",
    }


def test_the_fleet_backend_and_the_merge_share_the_state_rules_resource() -> None:
    from pipelines.resources import resources_for

    for env in ("local", "production"):
        res = resources_for(env)
        assert res["fleet_backend"].state_rules is res["state_rules"], env


def test_production_resources_take_secrets_from_env_vars(monkeypatch) -> None:
    from pipelines.resources import resources_for

    res = resources_for("production")
    # EnvVar-backed fields stay unresolved in the definitions: no secret value is baked in.
    for name in ("s3_access_key_id", "s3_secret_access_key", "catalog"):
        assert isinstance(getattr(res["lakehouse"], name), dg.EnvVar), name
    for name in ("aws_access_key_id", "aws_secret_access_key"):  # dagster-aws's S3 settings
        assert isinstance(getattr(res["object_store"], name), dg.EnvVar), name
    vault = res["key_service"].vault
    for name in ("addr", "role_id", "secret_id"):
        assert isinstance(getattr(vault, name), dg.EnvVar), name


def test_arrival_notifications_are_chosen_per_environment(monkeypatch) -> None:
    from pipelines.resources import resources_for

    assert resources_for("local")["object_store"].notifications.kind == "journal"
    assert resources_for("production")["object_store"].notifications is None  # no queue: listing
    queue = "https://sqs.eu-west-1.amazonaws.com/123456789012/edgeplat-prod-arrivals"
    monkeypatch.setenv("EDGEPLAT_ARRIVAL_QUEUE_URL", queue)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    notifications = resources_for("production")["object_store"].notifications
    assert (notifications.kind, notifications.queue_url, notifications.region) == ("sqs", queue, "eu-west-1")
    assert isinstance(notifications.secret_access_key, dg.EnvVar)
    monkeypatch.delenv("EDGEPLAT_ARRIVAL_QUEUE_URL")
    monkeypatch.setenv("EDGEPLAT_ARRIVAL_AZURE_QUEUE", "arrivals")
    notifications = resources_for("production")["object_store"].notifications
    assert (notifications.kind, notifications.queue_name) == ("azure_queue", "arrivals")
    assert isinstance(notifications.connection_string, dg.EnvVar)


def test_unknown_environment_is_a_clear_error(monkeypatch) -> None:
    from edgeplat.settings import environment

    monkeypatch.setenv("EDGEPLAT_ENV", "prod")
    with pytest.raises(
        ValueError, match="EDGEPLAT_ENV='prod' is not known; set it to one of: local, production"
    ):
        environment()


@pytest.mark.slow
def test_dagster_definitions_validate_passes(tmp_path: Path) -> None:
    env = {**os.environ, "EDGEPLAT_HOME": str(tmp_path / "home")}
    env.pop("DAGSTER_HOME", None)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All code locations passed validation" in out.stdout + out.stderr


def test_main_job_materializes_the_fleet_and_sync_assets() -> None:
    from pipelines.definitions import defs

    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("sync_fleet").execute_in_process(instance=instance)
        assert result.success
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert materialized >= {
            "lakehouse_tables",
            "sync_reconciliation",
            "devices",
            "device_health",
            "fleet_status",
        }
        assert "ingested_batches" not in materialized  # the sensor's job, with its object keys
        md = instance.get_latest_materialization_event(
            dg.AssetKey("lakehouse_tables")
        ).asset_materialization.metadata
        assert md["rows/telemetry"].value == 0
