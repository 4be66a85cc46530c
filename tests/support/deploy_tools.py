"""The deployment files (deploy/, gitops/, infrastructure/, ci-cd/) as the checkers see them.

Helpers for tests/deploy: YAML documents of a folder, the kustomize overlays rendered by
kubectl, custom resources validated against their projects' schemas (npm packages run by
node), and the paths of the checkers ``make tools`` installs. A checker that is missing skips
the test on a developer's machine and fails it under ``CI=true`` (``require_service``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.services import require_service

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools"
NODE_MODULES = TOOLS / "node" / "node_modules"
CRD_VALIDATE = REPO / "tests" / "deploy" / "crd_validate.mjs"
# The Kubernetes version the manifests are checked against (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.33"
ENVIRONMENTS = ("dev", "prod")
SYNC_WAVE = "argocd.argoproj.io/sync-wave"


def tool(name: str) -> Path:
    """A checker of the tools venv (checkov, kubectl)."""
    path = TOOLS / "venv" / "bin" / name
    if not path.exists():
        require_service("deployment checkers", f"{path.relative_to(REPO)} is not installed")
    return path


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def kustomize(overlay: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize overlay`` renders (what Argo CD applies)."""
    out = subprocess.run(
        [str(tool("kubectl")), "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"kubectl kustomize {overlay} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def is_core(obj: dict[str, Any]) -> bool:
    """Built into Kubernetes (core group or a *.k8s.io-free built-in group such as apps/v1)."""
    group = obj["apiVersion"].rpartition("/")[0]
    return group in {"", "apps", "batch", "policy", "autoscaling"} or group.endswith(".k8s.io")


def validate_custom_resources(objects: list[dict[str, Any]]) -> list[str | None]:
    """Per object, None or why its project's schema refuses it (tests/deploy/crd_validate.mjs)."""
    node = shutil.which("node")
    if node is None or not NODE_MODULES.exists():
        require_service("deployment checkers", "node or the schema packages (.tools/node) are missing")
    out = subprocess.run(
        [node, str(CRD_VALIDATE), str(NODE_MODULES)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"crd_validate.mjs failed:\n{out.stderr}"
    return json.loads(out.stdout)


def wave(obj: dict[str, Any]) -> int:
    return int((obj.get("metadata", {}).get("annotations") or {}).get(SYNC_WAVE, "0"))


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"
