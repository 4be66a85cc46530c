"""Layers point one way: cli -> pipelines -> assets -> resources -> edgeplat -> edge_sync.

A module may import from its own layer and the layers to its right, never to its left; the
domain (``edgeplat``, ``edge_sync``) imports no Dagster package, and a project import sits at
the top of its module, not inside a function, where it would hide a cycle. The test reads every
import statement of the source tree (``ast``), so a back edge fails here before it ships.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Left to right: a layer imports only from itself and the layers after it.
LAYERS = ("cli", "pipelines", "assets", "resources", "edgeplat", "edge_sync")
DOMAIN = ("edgeplat", "edge_sync")
DAGSTER = ("dagster", "dagster_webserver", "dagster_aws", "dagster_k8s", "dagster_postgres", "dagster_pipes")

# Project imports deliberately inside a function, each with its reason.
_HVAC = "hvac (and requests) load only on a device configured for Vault"
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("edge_sync/cli.py", "edge_sync.agent"): "DuckDB and pyarrow load only for commands that run the agent",
    ("edge_sync/config.py", "edge_sync.vault"): _HVAC,
    ("edge_sync/config.py", "edge_sync.vault_keys"): _HVAC,
    (
        "edge_sync/config.py",
        "edge_sync.iot_credentials",
    ): "botocore loads only for S3 credentials from AWS IoT",
    ("edge_sync/storage_credentials.py", "edge_sync.vault"): _HVAC,
    ("edge_sync/storage_credentials.py", "edge_sync.vault_admin"): _HVAC,
    ("edge_sync/live_credentials.py", "edge_sync.vault_admin"): _HVAC,
    ("assets/rollouts/health.py", "edgeplat.rollouts.plots"): "matplotlib loads only when a chart is drawn",
}


@dataclass(frozen=True)
class Import:
    path: str  # the importing file, relative to the repository
    line: int
    module: str  # the imported module, absolute
    in_function: bool

    @property
    def top(self) -> str:
        return self.module.split(".")[0]


def _imports(path: Path, root: Path = REPO) -> list[Import]:
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), filename=rel)
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend(Import(rel, child.lineno, a.name, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append(Import(rel, child.lineno, child.module, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def _source_files(layer: str) -> list[Path]:
    # build/ folders are setuptools' copies of the sources, not sources
    return sorted(p for p in (REPO / layer).rglob("*.py") if "build" not in p.relative_to(REPO).parts)


def _source_imports() -> list[Import]:
    return [i for layer in LAYERS for path in _source_files(layer) for i in _imports(path)]


def test_every_layer_is_found() -> None:
    imports = _source_imports()
    assert {i.path.split("/")[0] for i in imports} == set(LAYERS)


def test_imports_point_one_way() -> None:
    back = []
    for i in _source_imports():
        here, there = LAYERS.index(i.path.split("/")[0]), i.top
        if there in LAYERS and LAYERS.index(there) < here:
            back.append(f"{i.path}:{i.line} imports {i.module} ({i.path.split('/')[0]} -> {there})")
    assert not back, "imports against the layers:\n" + "\n".join(back)


def test_the_domain_imports_no_dagster() -> None:
    found = [
        f"{i.path}:{i.line} imports {i.module}"
        for i in _source_imports()
        if i.path.split("/")[0] in DOMAIN and i.top in DAGSTER
    ]
    assert not found, "\n".join(found)


def test_project_imports_sit_at_the_top_of_their_module() -> None:
    lazy = [
        f"{i.path}:{i.line} imports {i.module} inside a function"
        for i in _source_imports()
        if i.in_function and i.top in LAYERS and (i.path, i.module) not in LAZY_IMPORTS
    ]
    assert not lazy, (
        "move these imports to the top of the module (or break the cycle they hide):\n" + "\n".join(lazy)
    )


def test_the_checker_sees_a_back_edge(tmp_path: Path) -> None:
    bad = tmp_path / "edgeplat" / "x.py"
    bad.parent.mkdir()
    bad.write_text("import os\n\n\ndef f():\n    from pipelines.resources import resources_for\n")
    (i,) = [i for i in _imports(bad, tmp_path) if i.top == "pipelines"]
    assert i.in_function and LAYERS.index(i.top) < LAYERS.index("edgeplat")
