"""Fixtures of the deployment-file tests: the kustomize overlays rendered once per session,
and the Helm values of each environment parsed against the Dagster chart's keys."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support.dagster_chart import ChartValues
from tests.support.deploy_tools import ENVIRONMENTS, REPO, kustomize


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Per environment, the objects of deploy/k8s/overlays/<env> as Argo CD applies them."""
    return {env: kustomize(REPO / "deploy" / "k8s" / "overlays" / env) for env in ENVIRONMENTS}


@pytest.fixture(scope="session")
def chart_values() -> dict[str, ChartValues]:
    return {
        env: ChartValues.model_validate(
            yaml.safe_load((REPO / "deploy" / "helm" / f"values-{env}.yaml").read_text())
        )
        for env in ENVIRONMENTS
    }
