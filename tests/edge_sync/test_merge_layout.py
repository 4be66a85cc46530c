"""What the merge stores where: the state row and conflict rows hold the heads, contributions only the rest,
and tables written in the older layout (every node's head in contributions) merge to the same result."""

from __future__ import annotations

import json
import random

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from edge_sync.merge import StateMerger
from edge_sync.merge_arrow import best_per_key, distinct_edits, key_codes, text_ranks
from edge_sync.rules import parse_rules
from tests.support.merge import EVERY_RULE
from tests.support.merge_oracle import conflicts_reference, merge_reference

RULES = parse_rules({"version": 3, "namespaces": {"config": {"fields": EVERY_RULE}}})

VALUES = {
    "hi": ["1", "2.5", "-3"],
    "lo": ["1", "2.5", "-3"],
    "n": ["1", "2", "-1"],
    "tags": ['["a"]', '["b", 1]', "[]"],
    "pin": ['"a"', '"b"'],
    "cal": ['"a"', '"b"'],
    "lbl": ['"a"', '"bb"'],
    "note": ['"a"', '"b"', '"c"'],
}


def edit(field: str, value: str, hlc: int, node: str, key: str = "k1") -> dict:
    return {
        "tenant_id": "t1",
        "device_id": "d1",
        "namespace": "config",
        "key": key,
        "field": field,
        "value": value,
        "hlc": hlc,
        "node_id": node,
        "origin": "central" if node == "central" else "device",
    }


def merger(con: duckdb.DuckDBPyConnection) -> StateMerger:
    return StateMerger(
        con, RULES, state_table="state", conflicts_table="conflicts", contributions_table="contrib"
    )


def rows(con, table: str) -> list[tuple]:
    clock = {"state": "updated_ms", "conflicts": "detected_ms"}.get(table)
    cols = f"* EXCLUDE ({clock})" if clock else "*"
    return con.execute(f"SELECT {cols} FROM {table} ORDER BY ALL").fetchall()


def test_a_field_edited_by_one_node_stores_only_its_state_row() -> None:
    con = duckdb.connect()
    merger(con).merge(pa.Table.from_pylist([edit("note", '"a"', h, "d1") for h in (1, 2, 3)]))
    assert len(rows(con, "state")) == 1
    assert rows(con, "contrib") == [] and rows(con, "conflicts") == []


def test_losing_heads_live_in_conflicts_and_equal_values_in_contributions() -> None:
    con = duckdb.connect()
    m = merger(con)
    m.merge(
        pa.Table.from_pylist(
            [
                edit("note", '"a"', 1, "d1"),
                edit("note", '"b"', 2, "d2"),
                edit("note", '"c"', 3, "central"),  # wins: d1 and d2 lost, a conflict each
                edit("note", '"s"', 1, "d1", key="k2"),
                edit("note", '"s"', 2, "central", key="k2"),  # wins with d1's value: no conflict
            ]
        )
    )
    assert {(r[3], r[8]) for r in rows(con, "conflicts")} == {("k1", "d1"), ("k1", "d2")}
    assert [(r[3], r[5], r[6], r[9]) for r in rows(con, "contrib")] == [("k2", "d1", 1, "head")]
    # d1's stored head (only in contributions) still counts: its value now loses to a new one.
    m.merge(pa.Table.from_pylist([edit("note", '"t"', 5, "central", key="k2")]))
    assert ("k2", "d1", '"s"', "central") in {(r[3], r[8], r[6], r[12]) for r in rows(con, "conflicts")}
    assert [r for r in rows(con, "contrib") if r[3] == "k2"] == []


def random_history(rng: random.Random, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        field = rng.choice(sorted(VALUES))
        node = rng.choice(["central", "dev-a", "dev-b"])
        out.append(
            edit(field, rng.choice(VALUES[field]), rng.randint(0, 6), node, key=rng.choice(["k1", "k2"]))
        )
    return out


def to_older_layout(con) -> None:
    """Rewrite the tables as the previous merge left them: a head row for every node in contributions."""
    picking = "('lww', 'max', 'min', 'prefer_device', 'prefer_central')"
    con.execute(
        "INSERT INTO contrib SELECT tenant_id, device_id, namespace, key, field, node_id, hlc, value, origin, "
        f"'head', rule FROM state WHERE rule IN {picking}"
    )
    con.execute(
        "INSERT INTO contrib SELECT DISTINCT tenant_id, device_id, namespace, key, field, loser_node_id, "
        f"loser_hlc, loser_value, loser_origin, 'head', rule FROM conflicts WHERE rule IN {picking}"
    )


@pytest.mark.parametrize("seed", range(12))
def test_tables_in_the_older_layout_merge_to_the_oracle_and_convert(seed: int) -> None:
    rng = random.Random(seed)
    first, second = random_history(rng, 25), random_history(rng, 25)
    con = duckdb.connect()
    m = merger(con)
    m.merge(pa.Table.from_pylist(first))
    to_older_layout(con)
    m.merge(pa.Table.from_pylist(second))
    edits = first + second
    state = {
        tuple(r[:5]): {"value": r[5], "hlc": r[6], "node_id": r[7], "origin": r[8], "rule": r[9]}
        for r in con.execute("SELECT * FROM state").fetchall()
    }
    assert state == merge_reference(edits, RULES)
    conflicts = {(*r[:5], r[8], r[7], r[6], r[12]) for r in con.execute("SELECT * FROM conflicts").fetchall()}
    assert conflicts == conflicts_reference(edits, RULES)
    # Every touched field is back in the current layout: the same rows as one merge of everything.
    fresh = duckdb.connect()
    merger(fresh).merge(pa.Table.from_pylist(edits))
    touched = {(e["key"], e["field"]) for e in second}
    for table in ("state", "conflicts", "contrib"):
        got = [r for r in rows(con, table) if (r[3], r[4]) in touched]
        assert got == [r for r in rows(fresh, table) if (r[3], r[4]) in touched], table


def test_key_codes_do_not_confuse_keys_a_separator_would_join() -> None:
    table = pa.table({"a": ["x|y", "x", "x|y", "x"], "b": ["z", "y|z", "z", "y|z"]})
    codes = key_codes(table, ["a", "b"])
    assert codes[0] == codes[2] and codes[1] == codes[3] and codes[0] != codes[1]


def test_best_per_key_and_byte_order_ranks() -> None:
    nodes = pa.array(["b", "a", "é", "Z", "a"])
    ranks = text_ranks(nodes)
    assert [sorted(set(nodes.to_pylist())).index(x) + 1 for x in nodes.to_pylist()] == ranks.tolist()
    keys = np.array([0, 0, 1, 1, 0])
    hlc = np.array([5, 5, 1, 2, 3])
    best = best_per_key(keys, [hlc, ranks])
    assert best.tolist() == [0, 0, 3, 3, 0]  # hlc 5 tie: node "b" beats "a"


def test_key_codes_stay_exact_when_the_digits_would_overflow() -> None:
    rng = np.random.default_rng(3)
    # Five columns of ~1000 distinct values: the radix product passes 2**62 and is made dense.
    cols = {c: [f"{c}{i}" for i in rng.integers(0, 1000, 3000)] for c in "abcde"}
    table = pa.table(cols)
    codes = key_codes(table, list(cols))
    rows = list(zip(*cols.values(), strict=True))
    assert len(set(codes.tolist())) == len(set(rows))
    first = {}
    for row, code in zip(rows, codes.tolist(), strict=True):
        assert first.setdefault(row, code) == code
    assert codes.min() >= 0 and codes.max() < 4 * len(rows)


def test_best_per_key_orders_floats_like_duckdb_and_ranks_ties_lazily() -> None:
    keys = np.array([0, 0, 0, 1, 1, 2, 2])
    n = np.array([-0.0, 0.0, -1.5, np.nan, np.inf, -np.inf, -5.0])
    hlc = np.array([1, 2, 9, 1, 2, 3, 3])
    seen = []

    def node(rows: np.ndarray) -> np.ndarray:
        seen.append(rows.tolist())
        return -rows  # the lower row wins a full tie

    assert best_per_key(keys, [n, hlc, node]).tolist() == [1, 1, 1, 3, 3, 6, 6]
    assert seen == []  # no tie left after the HLC: the node column is never computed
    assert best_per_key(keys, [np.zeros(7), np.ones(7), node]).tolist() == [0, 0, 0, 3, 3, 5, 5]
    assert seen == [[0, 1, 2, 3, 4, 5, 6]]


def test_distinct_edits_counts_copies_and_flags_different_edits_with_one_id() -> None:
    e = edit("note", '"a"', 1, "d1")
    assert distinct_edits(pa.Table.from_pylist([e, e, edit("note", '"a"', 1, "d2")]), ["node_id"]) == (
        2,
        True,
    )
    clash = edit("note", '"b"', 1, "d1")
    assert distinct_edits(pa.Table.from_pylist([e, clash]), ["node_id"]) == (1, False)
    many = pa.Table.from_pylist([edit("note", json.dumps(i), i, "d1") for i in range(50)])
    assert distinct_edits(many, ["node_id"]) == (50, True)
