"""The production Dagster instance (deploy/dagster/dagster.production.yaml) loads with Dagster's
own config schemas, without a cluster or a database, and limits what the platform needs limited."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes.config_class import class_from_code_pointer

from pipelines.executors import fan_out_executor
from pipelines.jobs import ROLLOUT_TAG, TENANT_TAG

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "deploy" / "dagster" / "dagster.production.yaml"
LOCAL = ROOT / "cli" / "dagster.local.yaml"
ENV = {
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "pw",
    "DAGSTER_PG_HOST": "db",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_K8S_JOB_NAMESPACE": "edgeplat",
}


@pytest.fixture
def production_env(monkeypatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def test_the_production_instance_config_passes_dagsters_schemas(production_env) -> None:
    config, custom_class = dagster_instance_config(str(PRODUCTION.parent), PRODUCTION.name)
    assert custom_class is None
    assert config["storage"]["postgres"]["postgres_db"]["hostname"] == {"env": "DAGSTER_PG_HOST"}
    # each pluggable class's own config schema, as the instance would check it when it builds the class
    for section in ("run_coordinator", "run_launcher"):
        data = config[section]
        cls = class_from_code_pointer(data["module"], data["class"])
        result = process_config(cls.config_type(), data.get("config") or {})
        assert result.success, (section, [e.message for e in result.errors])
    assert config["run_launcher"]["class"] == "K8sRunLauncher"


def test_a_wrong_key_in_the_launcher_config_is_caught(production_env) -> None:
    # the check above is not vacuous: the launcher's schema refuses what it does not know
    data = yaml.safe_load(PRODUCTION.read_text())["run_launcher"]
    cls = class_from_code_pointer(data["module"], data["class"])
    assert not process_config(cls.config_type(), {**data["config"], "job_namespce": "x"}).success


def test_one_ingest_per_tenant_and_one_run_per_rollout_as_locally() -> None:
    prod = yaml.safe_load(PRODUCTION.read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
    local = yaml.safe_load(LOCAL.read_text())["run_queue"]["tag_concurrency_limits"]
    per_value = {
        limit["key"]: limit["limit"]
        for limit in prod
        if isinstance(limit.get("value"), dict) and limit["value"].get("applyLimitPerUniqueValue")
    }
    assert per_value == {TENANT_TAG: 1, ROLLOUT_TAG: 1}
    assert all(limit in prod for limit in local)  # production keeps every local limit


def test_fan_out_jobs_run_their_steps_as_kubernetes_jobs_only_in_production() -> None:
    executor = fan_out_executor("production")
    assert executor is not None and executor.name == "edgeplat_k8s_job_executor"
    assert fan_out_executor("local") is None
