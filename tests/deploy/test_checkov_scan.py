"""checkov over every deployment file at once (one run: it takes half a minute): Dockerfiles,
the rendered kustomize overlays, the pods the Dagster chart renders from our values, Terraform
and the GitHub workflows. No check may fail; a check skipped in a file must say why; and the
checks the platform relies on (no privileged pods, resource limits, read-only root file
systems, non-root users) must have run and passed on every workload."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.support.dagster_chart import ChartValues, chart_pods
from tests.support.deploy_tools import REPO, tool

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.xdist_group("deploy")]

# check id -> what it holds; each must pass on every workload
REQUIRED_K8S = {
    "CKV_K8S_16": "not privileged",
    "CKV_K8S_20": "no privilege escalation",
    "CKV_K8S_11": "CPU limit",
    "CKV_K8S_13": "memory limit",
    "CKV_K8S_22": "read-only root file system",
    "CKV_K8S_23": "not root (runAsNonRoot)",
    "CKV_K8S_40": "a high user id",
}
# Checks that do not apply, with the reason (the rest are skipped in the files, with theirs).
SKIPPED = {
    "CKV_K8S_43": "images are pinned by immutable tags (the registries refuse overwrites); promotion changes the tag",
    "CKV_K8S_15": "tags are immutable, so IfNotPresent cannot run a stale image",
    "CKV_K8S_35": "the platform reads its settings from environment variables by design (pipelines/resources.py)",
    "CKV_GHA_7": "promote.yml builds nothing: its inputs name an environment and a tag the build already pushed",
}
# What the chart renders itself, which chart_pods leaves out: these pods are scanned for
# their security contexts, resources and volumes.
CHART_RENDERS = {
    "checkov.io/skip1": "CKV_K8S_8=the chart renders the liveness probes of the webserver and the code servers",
    "checkov.io/skip2": "CKV_K8S_9=the chart renders the readiness probes of the webserver and the code servers",
    "checkov.io/skip3": "CKV_K8S_38=the daemon and the webserver launch runs through the Kubernetes API (K8sRunLauncher)",
    "checkov.io/skip4": "CKV2_K8S_6=the webserver and code servers talk gRPC to each other; the cluster's ingress policy covers them",
}


def _deployment(name: str, pod: dict[str, Any]) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "edgeplat-chart", "annotations": CHART_RENDERS},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod["spec"]},
        },
    }


@pytest.fixture(scope="module")
def checkov_report(
    tmp_path_factory: pytest.TempPathFactory,
    rendered: dict[str, list[dict[str, Any]]],
    chart_values: dict[str, ChartValues],
) -> list[dict[str, Any]]:
    root = tmp_path_factory.mktemp("checkov")
    shutil.copytree(REPO / "infrastructure", root / "infrastructure")
    shutil.copytree(REPO / "deploy" / "docker", root / "deploy" / "docker")
    shutil.copytree(REPO / "ci-cd" / "github-actions", root / ".github" / "workflows")
    (root / "k8s").mkdir()
    for env, objects in rendered.items():
        (root / "k8s" / f"{env}.yaml").write_text(yaml.safe_dump_all(objects))
        pods = [_deployment(f"{env}-{name}", pod) for name, pod in chart_pods(chart_values[env]).items()]
        (root / "k8s" / f"{env}-chart.yaml").write_text(yaml.safe_dump_all(pods))
    out = subprocess.run(
        [
            str(tool("checkov")),
            "--directory", str(root),
            "--framework", "dockerfile", "kubernetes", "terraform", "github_actions",
            "--skip-check", ",".join(SKIPPED),
            "--skip-download", "--output", "json", "--compact",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},  # offline: no guideline download
    )  # fmt: skip
    assert out.returncode in (0, 1) and out.stdout, out.stderr[-3000:]
    report = json.loads(out.stdout)
    return report if isinstance(report, list) else [report]


def _by_framework(report: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["check_type"]: r for r in report}


def test_every_framework_was_scanned(checkov_report: list[dict[str, Any]]) -> None:
    frameworks = _by_framework(checkov_report)
    assert set(frameworks) == {"dockerfile", "kubernetes", "terraform", "github_actions"}
    for name, result in frameworks.items():
        assert result["summary"]["parsing_errors"] == 0, name
        assert result["summary"]["passed"] > 0, name


def test_no_check_fails(checkov_report: list[dict[str, Any]]) -> None:
    failed = [
        f"{r['check_type']} {f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}"
        for r in checkov_report
        for f in r["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)


def test_every_skip_in_a_file_gives_its_reason(checkov_report: list[dict[str, Any]]) -> None:
    skipped = [f for r in checkov_report for f in r["results"].get("skipped_checks", [])]
    assert skipped, "the skips in the files (checkov:skip=, checkov.io/skip) were not seen"
    unexplained = [
        f"{f['check_id']} {f['resource']}"
        for f in skipped
        if len((f.get("check_result") or {}).get("suppress_comment", "").strip()) < 20
    ]
    assert unexplained == []


def test_the_pod_security_checks_ran_and_passed_on_every_workload(
    checkov_report: list[dict[str, Any]],
) -> None:
    k8s = _by_framework(checkov_report)["kubernetes"]["results"]
    workloads = {
        f["resource"] for f in k8s["passed_checks"] if f["resource"].split(".")[0] in {"Deployment", "Job"}
    }
    # the overlays' live, metrics and migration, and the chart's four pods, in both environments
    assert len(workloads) == 2 * 3 + 2 * 4, sorted(workloads)
    passed = {(f["check_id"], f["resource"]) for f in k8s["passed_checks"]}
    missing = [
        f"{w}: {what}"
        for w in sorted(workloads)
        for check, what in REQUIRED_K8S.items()
        if (check, w) not in passed
    ]
    assert missing == []
