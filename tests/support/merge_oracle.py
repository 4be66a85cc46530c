"""The reference merge: small, obviously correct, the oracle the merge tests compare
``edge_sync.merge.StateMerger`` against (state and conflicts of a list of edits, computed
directly per key)."""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict

from edge_sync.merge import JSON_NUMBER, KEY_COLUMNS, EditError, custom_value, set_union_value
from edge_sync.rules import SET_UNION, RuleSet, custom_name, rule_kind


def _num(value: str) -> float:
    if not re.fullmatch(JSON_NUMBER, value) or not math.isfinite(float(value)):
        raise EditError(f"value {value!r} is not a finite JSON number")
    return float(value)


def _order(rule: str, e: dict) -> tuple:
    kind = rule_kind(rule)
    p = int(e["origin"] == kind.prefers) if kind.prefers else 0
    n = kind.sign * _num(e["value"]) if kind.sign else 0.0
    return (p, n, e["hlc"], e["node_id"], e["value"], e["origin"])


def _latest(e: dict) -> tuple:
    return (e["hlc"], e["node_id"], e["value"], e["origin"])


def _key(e: dict) -> tuple[str, ...]:
    return tuple(e[c] for c in KEY_COLUMNS)


def _picks_order(rule: str):
    return (lambda e: _order(rule, e)) if rule_kind(rule).picks else _latest


def merge_reference(edits: list[dict], rules: RuleSet) -> dict[tuple[str, ...], dict]:
    """The merged state of ``edits`` computed directly: key -> {value, hlc, node_id, origin, rule}."""
    groups: dict[tuple[str, ...], list[dict]] = defaultdict(list)
    for e in edits:
        groups[_key(e)].append(e)
    state = {}
    for key, es in groups.items():
        rule = rules.rule_for(key[2], key[4])
        if rule_kind(rule).picks:
            win = max(es, key=lambda e, r=rule: _order(r, e))
            value = win["value"]
        elif rule_kind(rule).sums:
            by_id: dict[tuple, dict] = {}
            for e in es:
                ident = (e["node_id"], e["hlc"])
                if ident not in by_id or (e["value"], e["origin"]) > (
                    by_id[ident]["value"],
                    by_id[ident]["origin"],
                ):
                    by_id[ident] = e
            value = str(sum(int(e["value"]) for e in by_id.values()))
            win = max(by_id.values(), key=_latest)
        else:
            win = max(es, key=_latest)
            vals = [e["value"] for e in es]
            value = set_union_value(vals) if rule == SET_UNION.name else custom_value(rule, vals)
        state[key] = {
            "value": value,
            "hlc": win["hlc"],
            "node_id": win["node_id"],
            "origin": win["origin"],
            "rule": rule,
        }
    return state


def conflicts_reference(edits: list[dict], rules: RuleSet) -> set[tuple]:
    """The conflicts of ``edits`` computed directly: (key..., loser_node_id, loser_hlc, loser_value, winner_node_id)."""
    state = merge_reference(edits, rules)
    out = set()
    by_key_node = itertools.groupby(
        sorted(edits, key=lambda e: (_key(e), e["node_id"])), key=lambda e: (_key(e), e["node_id"])
    )
    for (key, node), es in by_key_node:
        rule = state[key]["rule"]
        if not rule_kind(rule).conflicts:
            continue
        head = max(es, key=_picks_order(rule))
        win = state[key]
        if head["value"] != win["value"] and (custom_name(rule) or node != win["node_id"]):
            out.add((*key, node, head["hlc"], head["value"], win["node_id"]))
    return out
