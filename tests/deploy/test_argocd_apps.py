"""gitops/argocd: the app of apps, one Application per environment, each valid against Argo CD's
own schema, pointing at files that exist, at the chart version of the lock, in sync-wave order."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from tests.support.deploy_tools import (
    ENVIRONMENTS,
    REPO,
    name_of,
    validate_custom_resources,
    wave,
    yaml_documents,
)

ARGOCD = REPO / "gitops" / "argocd"


def _objects() -> list[dict[str, Any]]:
    return [d for p in sorted(ARGOCD.rglob("*.yaml")) for d in yaml_documents(p)]


def _apps() -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in _objects() if o["kind"] == "Application"}


def _locked_dagster_version() -> str:
    lock = (REPO / "requirements.lock").read_text()
    match = re.search(r"^dagster==(\S+)$", lock, re.MULTILINE)
    assert match
    return match.group(1)


@pytest.mark.services  # node and the Argo CD schema package of `make tools`
def test_every_argocd_object_matches_argo_cds_schema() -> None:
    objects = _objects()
    assert {o["kind"] for o in objects} == {"Application", "AppProject"}
    verdicts = validate_custom_resources(objects)
    assert [(name_of(o), v) for o, v in zip(objects, verdicts, strict=True) if v] == []


@pytest.mark.services
def test_the_schema_refuses_a_broken_application() -> None:
    app = copy.deepcopy(_apps()["edgeplat-prod"])
    app["spec"]["syncPolicy"]["automated"]["prune"] = "yes"
    missing = copy.deepcopy(_apps()["edgeplat-dev"])
    del missing["spec"]["destination"]
    assert all(validate_custom_resources([app, missing]))


def test_the_root_deploys_one_application_per_environment() -> None:
    apps = _apps()
    root = apps.pop("edgeplat-root")
    folder = REPO / root["spec"]["source"]["path"]
    in_folder = {d["metadata"]["name"] for p in folder.glob("*.yaml") for d in yaml_documents(p)}
    assert set(apps) == {f"edgeplat-{env}" for env in ENVIRONMENTS} and set(apps) <= in_folder
    project = next(o for o in _objects() if o["kind"] == "AppProject")
    assert project["metadata"]["name"] in in_folder
    # the project first, then dev, then prod
    assert wave(project) < wave(apps["edgeplat-dev"]) < wave(apps["edgeplat-prod"])


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_an_environment_deploys_the_chart_and_its_overlay(env: str) -> None:
    app = _apps()[f"edgeplat-{env}"]
    spec = app["spec"]
    assert spec["destination"]["namespace"] == f"edgeplat-{env}"
    project = next(o for o in _objects() if o["kind"] == "AppProject")
    assert spec["project"] == project["metadata"]["name"]
    allowed = {d["namespace"] for d in project["spec"]["destinations"]}
    assert spec["destination"]["namespace"] in allowed
    sources = spec["sources"]
    assert all(s["repoURL"] in project["spec"]["sourceRepos"] for s in sources)
    (chart,) = [s for s in sources if "chart" in s]
    assert chart["chart"] == "dagster" and chart["targetRevision"] == _locked_dagster_version()
    refs = {s["ref"]: s for s in sources if "ref" in s}
    for value_file in chart["helm"]["valueFiles"]:
        ref, _, path = value_file.partition("/")
        assert ref.lstrip("$") in refs and (REPO / path).is_file(), value_file
    assert path == f"deploy/helm/values-{env}.yaml"
    (overlay,) = [s for s in sources if "path" in s]
    assert (
        overlay["path"] == f"deploy/k8s/overlays/{env}"
        and (REPO / overlay["path"] / "kustomization.yaml").is_file()
    )
    kustomization = yaml.safe_load((REPO / overlay["path"] / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == spec["destination"]["namespace"]
    assert "CreateNamespace=true" in spec["syncPolicy"]["syncOptions"]
