"""The Dagster side of the alerts: the scheduled evaluate_alerts job notifies a loopback sink from
the lakehouse, and a failed run of a platform job notifies the platform sinks (run-failure sensor)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from pipelines.jobs import evaluate_alerts
from pipelines.sensors.run_failure import platform_run_failure_sensor
from resources.alerts import AlertRulesResource
from resources.lakehouse import LakehouseResource
from tests.support.sink_servers import http_sink

pytestmark = pytest.mark.slow


def resources(tmp_path: Path, url: str) -> dict:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(
        "rules:\n"
        "  - {name: offline, kind: devices_offline, threshold: 1}\n"
        "  - {name: jobs, kind: run_failure}\n"
        f"sinks:\n  tenant-a:\n    - {{name: hook, kind: webhook, url: '{url}/tenant-a'}}\n"
        f"platform_sinks:\n  - {{name: ops, kind: webhook, url: '{url}/platform'}}\n"
        "delivery: {attempts: 2, backoff_s: 0.01}\n"
    )
    lake = LakehouseResource(catalog=f"sqlite:{tmp_path}/catalog.sqlite", data_path=f"{tmp_path}/lake/")
    return {"lakehouse": lake, "alert_rules": AlertRulesResource(rules_path=str(rules))}


def test_the_scheduled_job_notifies_from_the_lakehouse(tmp_path: Path) -> None:
    with http_sink() as (url, hook):
        res = resources(tmp_path, url)
        lake = Lakehouse(LakehouseConfig(f"sqlite:{tmp_path}/catalog.sqlite", f"{tmp_path}/lake/"))
        lake.ensure_schema()
        lake.write(
            lambda con: con.execute(
                "INSERT INTO devices (tenant_id, device_id, status, updated_at) VALUES ('tenant-a', 'd1', 'offline', ?)",
                [datetime.now(UTC)],
            )
        )
        assert evaluate_alerts.execute_in_process(resources=res).success
        assert [(b["rule"], b["state"]) for b in hook.bodies("/tenant-a")] == [("offline", "firing")]
        assert hook.bodies("/platform") == []


def test_a_failed_run_notifies_the_platform_sinks(tmp_path: Path) -> None:
    @dg.op
    def breaks() -> None:
        raise RuntimeError("catalog unreachable")

    @dg.job
    def ingest_like() -> None:
        breaks()

    with http_sink() as (url, hook), dg.instance_for_test() as instance:
        result = ingest_like.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
        context = dg.build_run_status_sensor_context(
            sensor_name=platform_run_failure_sensor.name,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=failure,
            resources=resources(tmp_path, url),
        ).for_run_failure()
        platform_run_failure_sensor(context)
        bodies = hook.bodies("/platform")
    assert [(b["tenant_id"], b["rule"], b["state"]) for b in bodies] == [("_platform", "jobs", "firing")]
    assert "ingest_like" in bodies[0]["summary"]
    assert hook.bodies("/tenant-a") == []
