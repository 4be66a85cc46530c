"""The device package installs on its own: the wheel built from ./edge_sync holds the agent and nothing else.

The platform (``edgeplat``, the Dagster layers, the ``edgeplat`` command) is a second project at
the repository root that depends on it. These tests build the device wheel the way a device
image would, then import every module from that wheel alone, with the platform and the central
stack blocked.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEVICE = REPO / "edge_sync"
# Nothing of the platform may reach a device: its packages, Dagster and the central stack.
BLOCKED = (
    "edgeplat",
    "assets",
    "resources",
    "pipelines",
    "cli",
    "dagster",
    "dagster_webserver",
    "dagster_graphql",
    "dagster_pipes",
    "dagster_aws",
    "dagster_k8s",
    "dagster_postgres",
    "kubernetes",
    "azure",
    "pandas",
    "matplotlib",
)


@pytest.fixture(scope="module")
def device_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # a copy: setuptools writes build/ and egg-info folders beside the sources it builds
    source = shutil.copytree(
        DEVICE, out / "edge_sync", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    uv = Path(sys.executable).parent / "uv"
    build = subprocess.run(
        [str(uv), "build", "--wheel", "--quiet", "-o", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = out.glob("edge_sync-*.whl")
    return wheel


def test_the_device_wheel_holds_the_agent_only(device_wheel: Path) -> None:
    with zipfile.ZipFile(device_wheel) as z:
        names = z.namelist()
        meta = email.message_from_bytes(z.read(next(n for n in names if n.endswith("/METADATA"))))
        entry_points = z.read(next(n for n in names if n.endswith("/entry_points.txt"))).decode()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"edge_sync", device_wheel.name.split("-")[0] + "-0.1.0.dist-info"}, tops
    assert "edge_sync/state_rules.yaml" in names  # the device merges with the platform's rules
    assert "edge_sync/packaging/greengrass-recipe.yaml" in names
    assert "edge-sync = edge_sync.cli:main" in entry_points and "edgeplat" not in entry_points
    requires = " ".join(meta.get_all("Requires-Dist") or []).lower()
    for name in ("dagster", "kubernetes", "azure", "pandas", "edgeplat"):
        assert name not in requires, f"{name} must not be a device dependency"


def test_every_module_of_the_wheel_imports_with_the_platform_blocked(
    device_wheel: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(device_wheel) as z:
        z.extractall(tmp_path / "site")
        modules = [
            n[:-3].replace("/", ".").removesuffix(".__init__")
            for n in z.namelist()
            if n.startswith("edge_sync/") and n.endswith(".py")
        ]
    assert "edge_sync.hlc" in modules and "edge_sync.agent" in modules
    script = f"""
import importlib, sys
# only the wheel and the third-party packages: not the repository, not its editable installs
sys.path = [{str(tmp_path / "site")!r}] + [p for p in sys.path if p not in ('', {str(REPO)!r})]
sys.meta_path = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ImportError('blocked on a device: ' + name)
sys.meta_path.insert(0, Block())
for m in {modules!r}:
    importlib.import_module(m)
import edge_sync
assert edge_sync.__file__.startswith({str(tmp_path / "site")!r}), edge_sync.__file__
from edge_sync.rules import default_rules
default_rules()
print('ok', len({modules!r}))
"""
    out = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_the_platform_project_depends_on_the_device_package_not_the_reverse() -> None:
    platform = tomllib.loads((REPO / "pyproject.toml").read_text())
    device = tomllib.loads((DEVICE / "pyproject.toml").read_text())
    assert "edge-sync==0.1.0" in platform["project"]["dependencies"]
    assert "edge_sync*" not in platform["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any("edgeplat" in d or "dagster" in d for d in device["project"]["dependencies"])
    assert device["project"]["scripts"] == {"edge-sync": "edge_sync.cli:main"}
