"""deploy/helm: the values of the official Dagster chart, per environment: only keys the chart
knows, pods that Kubernetes accepts and that run locked down, the instance database password
from the Secret External Secrets writes, the K8sRunLauncher, and the run queue of the local
instance."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pydantic
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

from tests.support.dagster_chart import ChartValues, chart_pods
from tests.support.deploy_tools import ENVIRONMENTS, KUBERNETES_VERSION, REPO

pytestmark = pytest.mark.xdist_group("deploy")  # shares the rendered overlays with the other deploy tests
VALUES = {env: REPO / "deploy" / "helm" / f"values-{env}.yaml" for env in ENVIRONMENTS}


def _raw(env: str) -> dict[str, Any]:
    return yaml.safe_load(VALUES[env].read_text())


def test_the_values_use_only_keys_the_chart_knows(chart_values: dict[str, ChartValues]) -> None:
    assert set(chart_values) == set(ENVIRONMENTS)


@pytest.mark.parametrize(
    "path, value",
    [
        (("dagsterWebserver", "replicas"), 2),  # the chart's key is replicaCount
        (("runLauncher", "type"), "K8sRunlauncher"),
        (("dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator", "maxConcurentRuns"), 4),
        (("postgresql", "postgresqlPasword"), "x"),
    ],
)
def test_a_misspelt_key_is_refused(path: tuple[str, ...], value: Any) -> None:
    values = copy.deepcopy(_raw("dev"))
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(pydantic.ValidationError):
        ChartValues.model_validate(values)


def test_every_pod_of_the_chart_is_valid_and_locked_down(chart_values: dict[str, ChartValues]) -> None:
    for env, values in chart_values.items():
        pods = chart_pods(values)
        assert {"webserver", "daemon", "user-edgeplat", "run-edgeplat"} <= set(pods)
        for name, pod in pods.items():
            kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True, (env, name)
            (container,) = pod["spec"]["containers"]
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, (
                env,
                name,
            )
            assert sc["runAsUser"] >= 10000 and not sc.get("privileged", False), (env, name)
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), (env, name)


def test_a_container_listens_above_1024_as_a_non_root_user_must(chart_values: dict[str, ChartValues]) -> None:
    for values in chart_values.values():
        assert values.dagsterWebserver.service.port > 1024
        assert all(d.port > 1024 for d in values.dagster_user_deployments.deployments)


@pytest.mark.services  # the rendered overlays: kubectl of `make tools`
def test_the_database_password_comes_from_the_vault_secret(
    chart_values: dict[str, ChartValues], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    for env, values in chart_values.items():
        assert values.generatePostgresqlPasswordSecret is False and values.postgresql.enabled is False
        assert "postgresqlPassword" not in _raw(env)["postgresql"]
        targets = {o["spec"]["target"]["name"] for o in rendered[env] if o["kind"] == "ExternalSecret"}
        assert values.global_.postgresqlSecretName in targets
        # the migration Job reaches the same database as the chart
        db = next(o for o in rendered[env] if o["metadata"]["name"] == "edgeplat-dagster-db")["data"]
        assert db["DAGSTER_PG_HOST"] == values.postgresql.postgresqlHost
        assert db["DAGSTER_PG_DB"] == values.postgresql.postgresqlDatabase
        assert db["DAGSTER_PG_USERNAME"] == values.postgresql.postgresqlUsername


def test_runs_launch_as_kubernetes_jobs_from_the_code_location(chart_values: dict[str, ChartValues]) -> None:
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    for values in chart_values.values():
        assert values.runLauncher.type == "K8sRunLauncher"
        assert values.migrate.enabled is False  # deploy/k8s runs it, ordered by sync waves
        (deployment,) = values.dagster_user_deployments.deployments
        assert deployment.includeConfigInLaunchedRuns and deployment.includeConfigInLaunchedRuns.enabled
        args = deployment.dagsterApiGrpcArgs or []
        assert args[args.index("-m") + 1] == workspace["module_name"]
        assert args[args.index("-a") + 1] == workspace["attribute"]


def _tag_limits(instance: dict[str, Any]) -> list[dict[str, Any]]:
    """The run tag limits of a dagster.yaml, in either spelling (``run_queue`` or ``concurrency.runs``)."""
    limits = (instance.get("run_queue") or {}).get("tag_concurrency_limits") or (
        (instance.get("concurrency") or {}).get("runs") or {}
    ).get("tag_concurrency_limits", [])
    return sorted(limits, key=lambda t: t["key"])


def _limits(values: ChartValues) -> list[dict[str, Any]]:
    assert values.concurrency is not None and values.concurrency.enabled
    return sorted(
        (
            {
                "key": t.key,
                "value": t.value.model_dump() if isinstance(t.value, pydantic.BaseModel) else t.value,
                "limit": t.limit,
            }
            for t in values.concurrency.runs.tagConcurrencyLimits
        ),
        key=lambda t: (t["key"], t["limit"]),
    )


def _sorted(limits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(({"value": None, **t} for t in limits), key=lambda t: (t["key"], t["limit"]))


def test_the_run_limits_are_the_instances(chart_values: dict[str, ChartValues]) -> None:
    """The tag limits keep every limit of the local instance (one ingest per tenant, one run per
    rollout) and are those of deploy/dagster/dagster.production.yaml where it exists; the
    limits live in the chart's `concurrency` block only (Dagster refuses them in two places)."""
    local = _sorted(_tag_limits(yaml.safe_load((REPO / "cli" / "dagster.local.yaml").read_text())))
    assert local, "cli/dagster.local.yaml has no tag limits to compare with"
    production_file = REPO / "deploy" / "dagster" / "dagster.production.yaml"
    production = yaml.safe_load(production_file.read_text()) if production_file.exists() else None
    for env, values in chart_values.items():
        ours = _limits(values)
        assert all(limit in ours for limit in local), env
        queued = values.dagsterDaemon.runCoordinator.config.queuedRunCoordinator
        assert queued.tagConcurrencyLimits is None and queued.maxConcurrentRuns is None
        if production is not None and _tag_limits(production):
            assert ours == _sorted(_tag_limits(production)), env
            pools = production["concurrency"]["pools"]
            assert values.concurrency is not None
            assert (values.concurrency.pools.defaultLimit, values.concurrency.pools.granularity) == (
                pools.get("default_limit"),
                pools.get("granularity"),
            )
            if env == "prod":
                assert (
                    values.concurrency.runs.maxConcurrentRuns
                    == production["concurrency"]["runs"]["max_concurrent_runs"]
                )


@pytest.mark.services  # the rendered overlays: kubectl of `make tools`
def test_one_image_and_tag_per_environment(
    chart_values: dict[str, ChartValues], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """The promotion changes the tag in the values and in the overlay together; they must agree."""
    for env, values in chart_values.items():
        images = {
            f"{i.repository}:{i.tag}"
            for i in (
                values.dagsterWebserver.image,
                values.dagsterDaemon.image,
                *(d.image for d in values.dagster_user_deployments.deployments),
            )
        }
        overlay = {
            c["image"]
            for o in rendered[env]
            if o["kind"] in {"Deployment", "Job"}
            for c in o["spec"]["template"]["spec"]["containers"]
        }
        assert len(images) == 1 and images == overlay, env


@pytest.mark.services  # the rendered overlays: kubectl of `make tools`
def test_the_migration_instance_config_is_a_valid_dagster_instance(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = next(o for o in rendered["prod"] if o["metadata"]["name"] == "edgeplat-migrate-instance")
    (tmp_path / "dagster.yaml").write_text(config["data"]["dagster.yaml"])
    for var in ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB"):
        monkeypatch.setenv(var, "x")
    instance_config, _ = dagster_instance_config(str(tmp_path))
    assert instance_config["storage"]["postgres"]["postgres_db"]["hostname"] == {"env": "DAGSTER_PG_HOST"}


@pytest.mark.services
def test_step_logs_go_to_the_environments_lake_bucket(
    chart_values: dict[str, ChartValues], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    for env, values in chart_values.items():
        config = next(o for o in rendered[env] if o["metadata"]["name"] == "edgeplat-env")["data"]
        assert values.computeLogManager is not None
        logs = values.computeLogManager.config.s3ComputeLogManager
        assert f"s3://{logs.bucket}/" == config["EDGEPLAT_LAKE_DATA"].removesuffix("edgeplat/")
        assert logs.region == config["AWS_REGION"]
