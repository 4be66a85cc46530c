"""An operator's conflict rules outside the package: a rules file and resolver code in a tmp dir.

``write_rules`` writes ``state_rules.yaml`` (version, a custom rule for ``config.label``, the
resolvers entry) into a directory of the test's own; ``write_resolver_module`` writes a Python
module there with resolvers registered by ``@register_resolver``. Module names are unique per
test so the interpreter's import cache never hands one test another's module.
"""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import yaml

_SEQ = itertools.count()

# Keeps the lexicographically smallest text: commutative, associative, idempotent.
SMALLEST = """
@register_resolver("{name}", probes=[("b", "a", "ab", "")])
def smallest(a, b):
    return min(str(a), str(b))
"""
# Keeps the first argument: not commutative, so it must be refused at load.
FIRST_WINS = """
@register_resolver("{name}")
def first(a, b):
    return a
"""


def unique(prefix: str) -> str:
    return f"{prefix}_{next(_SEQ)}"


def write_resolver_module(directory: Path, module: str, *bodies: str) -> Path:
    """``directory/<module>.py`` registering the resolvers ``bodies`` (SMALLEST, FIRST_WINS, formatted)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{module}.py"
    code = "from edge_sync.resolvers import register_resolver\n" + "".join(textwrap.dedent(b) for b in bodies)
    path.write_text(code)
    return path


def write_rules(
    directory: Path, *, version: int, label_rule: str, resolvers: list[dict] | None = None
) -> Path:
    """``directory/state_rules.yaml``: the packaged layout with ``config.label`` under ``label_rule``."""
    directory.mkdir(parents=True, exist_ok=True)
    doc: dict = {
        "version": version,
        "default": "lww",
        "namespaces": {"config": {"default": "lww", "fields": {"threshold": "max", "label": label_rule}}},
    }
    if resolvers is not None:
        doc["resolvers"] = resolvers
    path = directory / "state_rules.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_distribution(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    """An installed distribution's metadata in ``site`` (on sys.path), declaring ``entry_points``
    (name -> ``module:attr``) in group ``edgeplat.resolvers``, as ``pip install`` would leave it."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[edgeplat.resolvers]\n{lines}")
