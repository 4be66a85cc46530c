"""edge_sync installs and imports on a device without Dagster, Kubernetes or Azure."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import edge_sync

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("dagster", "kubernetes", "azure", "dagster_k8s", "pandas")


def test_base_dependencies_leave_out_the_central_stack() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    for name in ("dagster", "kubernetes", "azure", "dagster-k8s"):
        assert name not in base, f"{name} must not be a base (device) dependency"
    assert any(d.startswith("dagster==") for d in project["optional-dependencies"]["central"])


def test_every_edge_sync_module_imports_with_the_central_stack_blocked() -> None:
    modules = [m.name for m in pkgutil.walk_packages(edge_sync.__path__, "edge_sync.")]
    assert "edge_sync.hlc" in modules
    script = f"""
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {FORBIDDEN!r}:
            raise ImportError('blocked on a device: ' + name)
sys.meta_path.insert(0, Block())
for m in {modules!r}:
    importlib.import_module(m)
print('ok', len({modules!r}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
