"""Terraform files read with python-hcl2 (no terraform binary or provider can be had here).

``load`` parses a file into plain Python: block labels and string values without their HCL
quotes, comments dropped; ``blocks`` indexes a module's resources, data sources, variables,
modules or locals by their labels across all of its files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2

LABELS = {"resource": 2, "data": 2, "variable": 1, "module": 1, "output": 1, "provider": 1}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {_unquote(k): _plain(v) for k, v in value.items() if k not in {"__comments__", "__is_block__"}}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return _unquote(value) if isinstance(value, str) else value


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def load(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        return _plain(hcl2.load(fh))


def blocks(module: Path, kind: str) -> dict[tuple[str, ...], dict[str, Any]]:
    """``kind`` blocks of every .tf file in ``module``, keyed by their labels:
    ``("aws_s3_bucket", "fleet")`` for a resource, ``("environment",)`` for a variable."""
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for path in sorted(module.glob("*.tf")):
        for block in load(path).get(kind, []):
            if kind == "locals":
                found.update({(k,): {"value": v} for k, v in block.items()})
                continue
            labels: tuple[str, ...] = ()
            body = block
            for _ in range(LABELS[kind]):
                ((label, body),) = body.items()
                labels += (label,)
            found[labels] = body
    return found
