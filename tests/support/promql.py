"""The metric names a PromQL expression selects, and the expressions of the monitoring files.

A small lexer, not a PromQL parser: it drops strings, label matchers, range/offset brackets
and the label lists of ``by``/``without``/``on``/``ignoring``/``group_*``, then keeps every
identifier that is not a function call or a keyword. Enough for the expressions we write, and
strict: an identifier it cannot place counts as a metric name and fails the check that uses it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.$:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,")


def metric_names(expr: str) -> set[str]:
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    return {m for m in _IDENT.findall(text) if m not in KEYWORDS and not re.fullmatch(r"\d[\w.]*", m)}


def rule_exprs(path: Path) -> Iterator[tuple[str, str]]:
    """(alert or record name, expr) of every rule in a Prometheus rules file."""
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def recorded_names(path: Path) -> set[str]:
    return {
        r["record"] for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"] if "record" in r
    }


def dashboard_exprs(path: Path) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable of a dashboard JSON file."""
    board: dict[str, Any] = json.loads(path.read_text())
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            yield f"{path.name}: panel {panel.get('title')!r}", target["expr"]
    for var in board.get("templating", {}).get("list", []):
        found = _LABEL_VALUES.search(str(var.get("query", "")))
        if found:
            yield f"{path.name}: variable {var.get('name')!r}", found.group(1)
