"""The suite's own layout: fixtures come from conftest.py files and helpers from tests/support/;
no file under tests/ imports a test module (``test_*.py``) or a conftest.py as a module."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_names(source: str, package: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every module and name ``source`` imports; relative imports are
    resolved against ``package``, the dotted package of the file."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(p for p in (*parts[: len(parts) - node.level + 1], base) if p)
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def is_test_module(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] == "tests" and any(p.startswith("test_") or p == "conftest" for p in parts[1:])


def test_no_file_under_tests_imports_a_test_module_or_a_conftest() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        package = ".".join(path.relative_to(TESTS.parent).parent.parts)
        for line, name in imported_names(path.read_text(), package):
            if is_test_module(name):
                offenders.append(f"{path.relative_to(TESTS.parent)}:{line} imports {name}")
    assert offenders == [], (
        "a shared fixture belongs in the nearest conftest.py, a shared helper in tests/support/:\n"
        + "\n".join(offenders)
    )


def test_the_check_sees_every_form_of_import() -> None:
    source = (
        "from . import conftest\n"
        "from .test_jobs import helper\n"
        "import tests.rollouts.test_store\n"
        "from tests.support.batches import make_table\n"
        "from edge_sync import test_vectors\n"
    )
    caught = [name for _, name in imported_names(source, "tests.sync") if is_test_module(name)]
    assert caught == [
        "tests.sync.conftest",
        "tests.sync.test_jobs",
        "tests.sync.test_jobs.helper",
        "tests.rollouts.test_store",
    ]


# Spelled in two parts so that this file does not name the folder it forbids.
BESIDE_THE_CLONE = "../" + "shared"


def test_the_suite_needs_nothing_beside_the_clone() -> None:
    """The benchmarks' yardstick lives in the shared folder beside the clone; tests neither import
    the benchmarks nor read that folder, so they pass in a clone with nothing beside it."""
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path == Path(__file__).resolve():
            continue
        text = path.read_text()
        package = ".".join(path.relative_to(TESTS.parent).parent.parts)
        offenders += [
            f"{path.relative_to(TESTS.parent)}:{line} imports {name}"
            for line, name in imported_names(text, package)
            if name.split(".")[0] == "bench"
        ]
        if BESIDE_THE_CLONE in text:
            offenders.append(f"{path.relative_to(TESTS.parent)} names {BESIDE_THE_CLONE}")
    assert offenders == [], "\n".join(offenders)
