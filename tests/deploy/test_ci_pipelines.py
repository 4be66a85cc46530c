"""ci-cd/: the GitHub Actions workflows pass actionlint (with shellcheck on their run steps)
and the workflow schema, the GitLab pipeline passes GitLab's CI schema (both schemas as
vendored by check-jsonschema, no network), and both run what the repository runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.deploy_tools import REPO

WORKFLOWS = sorted((REPO / "ci-cd" / "github-actions").glob("*.y*ml"))
GITLAB = REPO / "ci-cd" / "gitlab" / ".gitlab-ci.yml"
BIN = REPO / ".venv" / "bin"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def test_workflows_pass_actionlint() -> None:
    assert shutil.which("shellcheck"), "actionlint checks run steps with shellcheck (system-packages.txt)"
    out = _run(str(BIN / "actionlint"), *map(str, WORKFLOWS))
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  t:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.event.head_commit.message }}\n      - run: echo $UNQUOTED\n"
        "      - uses: actions/checkout@v5\n        with: {nonexistent-input: 1}\n"
    )
    out = _run(str(BIN / "actionlint"), str(bad))
    assert out.returncode == 1
    assert "nonexistent-input" in out.stdout and "untrusted" in out.stdout and "SC2086" in out.stdout


@pytest.mark.parametrize(
    "schema, files",
    [("vendor.github-workflows", WORKFLOWS), ("vendor.gitlab-ci", [GITLAB])],
    ids=["github", "gitlab"],
)
def test_pipelines_match_their_ci_schema(schema: str, files: list[Path]) -> None:
    out = _run(str(BIN / "check-jsonschema"), "--builtin-schema", schema, *map(str, files))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_gitlab_schema_refuses_a_broken_pipeline(tmp_path: Path) -> None:
    bad = tmp_path / ".gitlab-ci.yml"
    bad.write_text("test:\n  stage: test\n  script: make test\n  when: sometimes\n")
    out = _run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(bad))
    assert out.returncode == 1 and "sometimes" in out.stdout


def test_both_pipelines_test_with_make_test_and_promote_through_set_image_tag() -> None:
    github = {p.stem: yaml.safe_load(p.read_text()) for p in WORKFLOWS}
    runs = [s.get("run", "") for job in github["ci"]["jobs"].values() for s in job["steps"]]
    assert "make test" in runs
    # YAML reads the key `on` as True
    assert set(github["ci"][True]) == {"push", "pull_request"}
    promote = [s.get("run", "") for s in github["promote"]["jobs"]["pull-request"]["steps"]]
    assert any(r.startswith("python3 scripts/set-image-tag") for r in promote)
    assert any(
        "create-pull-request" in s.get("uses", "") for s in github["promote"]["jobs"]["pull-request"]["steps"]
    )
    gitlab = yaml.safe_load(GITLAB.read_text())
    assert gitlab["test"]["script"] == ["make test"]
    assert any("scripts/set-image-tag" in line for line in gitlab[".promote"]["script"])
    assert (REPO / "scripts" / "set-image-tag").stat().st_mode & 0o111


def test_set_image_tag_changes_both_files_of_one_environment(tmp_path: Path) -> None:
    for part in ("deploy/helm", "deploy/k8s/overlays/prod", "deploy/k8s/overlays/dev"):
        shutil.copytree(REPO / part, tmp_path / part)
    shutil.copytree(REPO / "scripts", tmp_path / "scripts")
    out = _run(str(BIN / "python"), str(tmp_path / "scripts" / "set-image-tag"), "prod", "1.2.3")
    assert out.returncode == 0, out.stderr
    values = yaml.safe_load((tmp_path / "deploy/helm/values-prod.yaml").read_text())
    tags = {values[k]["image"]["tag"] for k in ("dagsterWebserver", "dagsterDaemon")}
    tags |= {d["image"]["tag"] for d in values["dagster-user-deployments"]["deployments"]}
    overlay = yaml.safe_load((tmp_path / "deploy/k8s/overlays/prod/kustomization.yaml").read_text())
    assert tags == {"1.2.3"} and overlay["images"][0]["newTag"] == "1.2.3"
    assert (tmp_path / "deploy/helm/values-dev.yaml").read_text() == (
        REPO / "deploy/helm/values-dev.yaml"
    ).read_text()
    refused = _run(str(BIN / "python"), str(tmp_path / "scripts" / "set-image-tag"), "prod", "no spaces")
    assert refused.returncode != 0 and "not a valid image tag" in refused.stderr
