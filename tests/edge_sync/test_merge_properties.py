"""Properties of the state merge (invariant 3): order-, batching- and repetition-free, equal to the oracle.

Random histories cover every rule, including a registered custom resolver, with few HLC
values and nodes so that ties, duplicates and same-id edits with different values happen.
"""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_sync.merge import StateMerger
from edge_sync.rules import parse_rules
from tests.support.merge import EVERY_RULE
from tests.support.merge_oracle import conflicts_reference, merge_reference

RULES = parse_rules(
    {
        "version": 4,
        "default": "lww",
        "namespaces": {"config": {"fields": {**EVERY_RULE, "long": "custom:longest"}}},
    }
)

# Without max/min the merge takes its cheaper path (arg_max on (p, hlc)) whenever no HLC
# repeats inside a batch; the oracle must hold on both paths.
RULES_NO_NUMERIC = parse_rules(
    {
        "version": 5,
        "namespaces": {
            "config": {"fields": {f: r for f, r in EVERY_RULE.items() if r not in ("max", "min")}}
        },
    }
)

# Plain lww (the default rule set of most fleets): a node's edits order by HLC alone.
RULES_LWW = parse_rules({"version": 6, "default": "lww"})

_number = st.one_of(st.integers(-3, 3), st.sampled_from([1.0, 1.5, -0.5, 2.25])).map(json.dumps)
_text = st.sampled_from(["a", "b", "cc", "ddd"]).map(json.dumps)
VALUES = {
    "hi": _number,
    "lo": _number,
    "n": st.integers(-2, 5).map(str),
    "tags": st.lists(st.one_of(st.integers(0, 3), st.sampled_from(["x", "y"])), max_size=3).map(json.dumps),
    "pin": _text,
    "cal": _text,
    "lbl": _text,
    "long": _text,
    "note": _text,
}


@st.composite
def edit(draw, max_hlc: int = 4) -> dict:
    field = draw(st.sampled_from(sorted(VALUES)))
    node = draw(st.sampled_from(["central", "dev-a", "dev-b"]))
    return {
        "tenant_id": "t1",
        "device_id": draw(st.sampled_from(["d1", "d2"])),
        "namespace": "other" if field == "note" else "config",
        "key": "k1",
        "field": field,
        "value": draw(VALUES[field]),
        "hlc": draw(st.integers(0, max_hlc)),
        "node_id": node,
        "origin": "central" if node == "central" else "device",
    }


@st.composite
def history(draw) -> list[dict]:
    # Few HLC values force ties and same-id edits; many make HLCs unique inside batches,
    # which is when the merge may order a node's edits by (p, hlc) alone.
    max_hlc = draw(st.sampled_from([4, 10_000]))
    edits = draw(st.lists(edit(max_hlc), min_size=1, max_size=30))
    # A burst: one node editing one field several times (its edits must order by HLC).
    base = edits[0]
    hlcs = draw(st.lists(st.integers(0, max_hlc), max_size=4, unique=True))
    burst = [dict(base, hlc=h, value=draw(VALUES[base["field"]])) for h in hlcs]
    # Re-deliveries: exact copies of some edits.
    repeats = draw(st.lists(st.sampled_from(edits), max_size=6))
    return edits + burst + repeats


@st.composite
def arrival(draw, edits: list[dict]) -> list[list[dict]]:
    """The edits in a random order, cut into random batches."""
    order = draw(st.permutations(edits))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=4)))
    bounds = [0, *cuts, len(order)]
    return [order[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


TABLES = {"state": "updated_ms", "conflicts": "detected_ms", "contrib": None}


def merge_all(batches: list[list[dict]], rules=RULES) -> tuple[duckdb.DuckDBPyConnection, StateMerger]:
    con = duckdb.connect()
    m = StateMerger(
        con, rules, state_table="state", conflicts_table="conflicts", contributions_table="contrib"
    )
    for batch in batches:
        m.merge(pa.Table.from_pylist(batch))
    return con, m


def snapshot(con, *, with_times: bool = False) -> dict[str, list[tuple]]:
    out = {}
    for table, clock in TABLES.items():
        cols = "*" if with_times or clock is None else f"* EXCLUDE ({clock})"
        out[table] = con.execute(f"SELECT {cols} FROM {table} ORDER BY ALL").fetchall()
    return out


def as_reference(con) -> tuple[dict, set]:
    state = {
        tuple(r[:5]): {"value": r[5], "hlc": r[6], "node_id": r[7], "origin": r[8], "rule": r[9]}
        for r in con.execute("SELECT * FROM state").fetchall()
    }
    conflicts = {(*r[:5], r[8], r[7], r[6], r[12]) for r in con.execute("SELECT * FROM conflicts").fetchall()}
    return state, conflicts


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@pytest.mark.parametrize(
    "rules", [RULES, RULES_NO_NUMERIC, RULES_LWW], ids=["all-rules", "no-numeric", "lww-only"]
)
@SETTINGS
@given(data=st.data())
def test_any_order_and_batching_gives_the_oracles_state_and_conflicts(rules, data) -> None:
    edits = data.draw(history())
    first, second = data.draw(arrival(edits)), data.draw(arrival(edits))
    con1, _ = merge_all(first, rules)
    con2, _ = merge_all(second, rules)
    state, conflicts = as_reference(con1)
    assert state == merge_reference(edits, rules)
    assert conflicts == conflicts_reference(edits, rules)
    # Commutative and associative: the whole tables agree, conflict pairing included.
    assert snapshot(con1) == snapshot(con2)


@pytest.mark.slow
@SETTINGS
@given(st.data())
def test_merging_again_changes_nothing(data) -> None:
    edits = data.draw(history())
    batches = data.draw(arrival(edits))
    con, m = merge_all(batches)
    before = snapshot(con, with_times=True)
    for batch in [edits, *batches]:
        stats = m.merge(pa.Table.from_pylist(batch))
        assert (stats.keys_changed, stats.conflicts, stats.conflicts_cleared) == (0, 0, 0)
    assert snapshot(con, with_times=True) == before


@settings(max_examples=10, deadline=None)
@given(
    st.lists(st.sampled_from(["dev-a", "dev-b", "dev-c", "central"]), min_size=2, max_size=4, unique=True),
    st.data(),
)
def test_equal_hlcs_break_by_node_id(nodes: list[str], data) -> None:
    edits = [
        {
            "tenant_id": "t1",
            "device_id": "d1",
            "namespace": "other",
            "key": "k",
            "field": "note",
            "value": json.dumps(-i),
            "hlc": 42,
            "node_id": n,
            "origin": "central" if n == "central" else "device",
        }
        for i, n in enumerate(sorted(nodes))
    ]  # fmt: skip  (values fall as node ids rise, so a value tie-break would pick the wrong one)
    con, _ = merge_all(data.draw(arrival(edits)))
    assert con.execute("SELECT node_id FROM state").fetchone()[0] == max(nodes)
    losers = {r[0] for r in con.execute("SELECT loser_node_id FROM conflicts").fetchall()}
    assert losers == set(nodes) - {max(nodes)}
