"""StateMerger: each rule, conflicts, dedupe, idempotence, bad input, and DuckLake tables."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from edge_sync.merge import EditError, StateMerger
from edge_sync.rules import RuleSet, default_rules, parse_rules
from tests.support.merge_oracle import conflicts_reference, merge_reference
from tests.support.services import require_service

RULES = default_rules()


def edit(
    field: str, value: str, hlc: int, node: str, *, ns: str = "config", key: str = "k1", device: str = "d1"
) -> dict:
    origin = "central" if node == "central" else "device"
    return dict(
        tenant_id="t1",
        device_id=device,
        namespace=ns,
        key=key,
        field=field,
        value=value,
        hlc=hlc,
        node_id=node,
        origin=origin,
    )


def merger(con: duckdb.DuckDBPyConnection, rules: RuleSet = RULES, prefix: str = "") -> StateMerger:
    return StateMerger(
        con,
        rules,
        state_table=f"{prefix}state",
        conflicts_table=f"{prefix}conflicts",
        contributions_table=f"{prefix}contrib",
    )


def state(con, table: str = "state") -> dict:
    rows = con.execute(f'SELECT field, "value", hlc, node_id, origin, rule FROM {table}').fetchall()
    return {r[0]: r[1:] for r in rows}


def conflicts(con, table: str = "conflicts") -> set[tuple]:
    return set(
        con.execute(
            f"SELECT field, rule, loser_value, loser_node_id, winner_value, winner_node_id, winner_origin FROM {table}"
        ).fetchall()
    )


def table_rows(con, table: str) -> list[tuple]:
    return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def run(edits: list[dict], rules: RuleSet = RULES):
    con = duckdb.connect()
    m = merger(con, rules)
    return con, m, m.merge(pa.Table.from_pylist(edits))


def test_each_rule_on_a_small_history() -> None:
    edits = [
        edit("threshold", "5", 10, "d1"),
        edit("threshold", "7.5", 5, "central"),  # older, but larger: max keeps it
        edit("low", "5", 10, "d1"),
        edit("boot_count", "1", 10, "d1"),
        edit("boot_count", "2", 11, "central"),
        edit("tags", '["b","a"]', 10, "d1"),
        edit("tags", '["c", "a"]', 11, "central"),
        edit("firmware_pin", '"v2"', 5, "central"),
        edit("firmware_pin", '"v3"', 99, "d1"),  # later, but the device does not win a central pin
        edit("calibration", "1.5", 99, "central"),
        edit("calibration", "1.2", 5, "d1"),
        edit("label", '"bb"', 5, "d1"),
        edit("label", '"a"', 99, "central"),
        edit("note", '"old"', 5, "central"),
        edit("note", '"new"', 6, "d1"),
    ]
    con, _, stats = run(edits)
    got = state(con)
    assert got["threshold"][:2] == ("7.5", 5)
    assert got["low"][0] == "5"
    assert got["boot_count"] == ("3", 11, "central", "central", "counter")
    assert got["tags"][0] == '["a","b","c"]'
    assert got["firmware_pin"][:3] == ('"v2"', 5, "central")
    assert got["calibration"][:3] == ("1.2", 5, "d1")
    assert got["label"][0] == '"bb"'
    assert got["note"][:3] == ('"new"', 6, "d1")
    assert stats.keys_changed == 8 and stats.edits_in == len(edits) and stats.duplicates_dropped == 0
    assert stats.rules_version == RULES.version


def test_max_and_min_compare_numerically_not_as_text() -> None:
    rules = parse_rules({"version": 1, "namespaces": {"config": {"fields": {"hi": "max", "lo": "min"}}}})
    edits = [
        edit("hi", "9", 1, "a"),
        edit("hi", "10", 0, "b"),
        edit("lo", "-2", 0, "a"),
        edit("lo", "-10.5", 0, "b"),
    ]
    con, _, _ = run(edits, rules)
    assert state(con)["hi"][0] == "10"
    assert state(con)["lo"][0] == "-10.5"


def test_hlc_tie_breaks_by_node_id() -> None:
    edits = [edit("note", '"from-a"', 7, "dev-a"), edit("note", '"from-b"', 7, "dev-b")]
    for order in (edits, edits[::-1]):
        con, _, _ = run(order)
        assert state(con)["note"][:3] == ('"from-b"', 7, "dev-b")


def test_merging_the_same_batch_twice_changes_nothing() -> None:
    edits = [
        edit("note", '"x"', 1, "d1"),
        edit("note", '"y"', 2, "central"),
        edit("boot_count", "4", 3, "d1"),
    ]
    con, m, _ = run(edits)
    before = {t: table_rows(con, t) for t in ("state", "conflicts", "contrib")}
    again = m.merge(pa.Table.from_pylist(edits))
    assert (again.keys_changed, again.conflicts, again.conflicts_cleared) == (0, 0, 0)
    assert {t: table_rows(con, t) for t in ("state", "conflicts", "contrib")} == before


def test_counter_counts_each_edit_once_across_redelivery_and_adds_concurrent_increments() -> None:
    con = duckdb.connect()
    m = merger(con)
    a, b, c = (
        edit("boot_count", "1", 10, "d1"),
        edit("boot_count", "1", 10, "central"),
        edit("boot_count", "5", 11, "d1"),
    )
    m.merge(pa.Table.from_pylist([a, a, b]))
    assert state(con)["boot_count"][0] == "2"
    m.merge(pa.Table.from_pylist([b, c, a]))
    assert state(con)["boot_count"][0] == "7"
    assert con.execute("SELECT count(*) FROM contrib WHERE kind = 'increment'").fetchone()[0] == 3


def test_duplicates_inside_a_batch_are_dropped_and_counted() -> None:
    e = edit("note", '"x"', 1, "d1")
    other_node_same_hlc = edit("note", '"x"', 1, "d2")
    con, _, stats = run([e, e, e, other_node_same_hlc])
    assert stats.duplicates_dropped == 2
    assert stats.edits_in == 4


def test_conflict_rows_record_both_sides_and_only_real_losses() -> None:
    edits = [
        edit("note", '"device"', 5, "d1"),
        edit("note", '"central"', 9, "central"),  # d1's value lost: a conflict
        edit("same", '"v"', 5, "d1"),
        edit("same", '"v"', 9, "central"),  # same value: nothing lost
        edit("mine", '"v1"', 5, "d1"),
        edit("mine", '"v2"', 9, "d1"),  # a node updating itself is not a conflict
        edit("tags", '["a"]', 5, "d1"),
        edit("tags", '["b"]', 9, "central"),  # union loses nothing
        edit("boot_count", "1", 5, "d1"),
        edit("boot_count", "2", 9, "central"),  # increments add up
        edit("firmware_pin", '"p1"', 5, "central"),
        edit("firmware_pin", '"p2"', 9, "d1"),  # prefer_central: the later device edit lost
    ]
    con, _, stats = run(edits)
    assert conflicts(con) == {
        ("note", "lww", '"device"', "d1", '"central"', "central", "central"),
        ("firmware_pin", "prefer_central", '"p2"', "d1", '"p1"', "central", "central"),
    }
    assert stats.conflicts == 2 and stats.conflicts_by_rule == {"lww": 1, "prefer_central": 1}
    row = con.execute(
        "SELECT loser_hlc, loser_origin, winner_hlc, rules_version FROM conflicts WHERE field = 'note'"
    ).fetchone()
    assert row == (5, "device", 9, RULES.version)


def test_a_later_edit_of_the_losing_node_settles_the_conflict() -> None:
    con = duckdb.connect()
    m = merger(con)
    m.merge(pa.Table.from_pylist([edit("note", '"dev"', 5, "d1"), edit("note", '"cen"', 9, "central")]))
    assert len(conflicts(con)) == 1
    stats = m.merge(pa.Table.from_pylist([edit("note", '"cen"', 12, "d1")]))  # d1 adopts central's value
    assert stats.conflicts_cleared == 1 and conflicts(con) == set()
    assert state(con)["note"][:3] == ('"cen"', 12, "d1")


def test_conflict_pairing_does_not_depend_on_arrival_order() -> None:
    edits = [edit("note", '"a"', 3, "d1"), edit("note", '"b"', 5, "d2"), edit("note", '"c"', 4, "central")]
    seen = []
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2]):
        con = duckdb.connect()
        m = merger(con)
        for i in order:
            m.merge(pa.Table.from_pylist([edits[i]]))
        seen.append(conflicts(con))
    assert seen[0] == seen[1] == seen[2]
    assert {(c[3], c[5]) for c in seen[0]} == {("d1", "d2"), ("central", "d2")}


def test_stream_envelope_columns_are_ignored() -> None:
    e = edit("note", '"x"', 1, "d1") | {"stream": "state", "seq": 7, "ts": 123}
    con, _, stats = run([e])
    assert stats.keys_changed == 1 and state(con)["note"][0] == '"x"'


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"hlc": None}, r"nulls in \['hlc'\]"),
        ({"origin": "edge"}, "origin must be one of"),
        ({"field": "threshold", "value": '"high"'}, r"config\.threshold \(max\) node d1 hlc 1: '\"high\"'"),
        ({"field": "boot_count", "value": "1.5"}, "counter needs a JSON integer"),
        ({"field": "tags", "value": '"a"'}, "set_union needs a JSON array"),
        ({"field": "label", "value": "not json"}, "is not valid JSON"),
    ],
)
def test_bad_edits_are_rejected_and_nothing_is_written(bad: dict, match: str) -> None:
    con = duckdb.connect()
    m = merger(con)
    good = edit("note", '"ok"', 1, "d1")
    with pytest.raises(EditError, match=match):
        m.merge(pa.Table.from_pylist([good, edit("x", "1", 1, "d1") | bad]))
    assert table_rows(con, "state") == [] and table_rows(con, "contrib") == []


def test_missing_columns_are_named() -> None:
    con = duckdb.connect()
    with pytest.raises(EditError, match=r"lack column\(s\) \['origin'\]"):
        merger(con).merge(
            pa.table(
                {
                    c: ["x"]
                    for c in ("tenant_id", "device_id", "namespace", "key", "field", "value", "node_id")
                }
            ).append_column("hlc", pa.array([1]))
        )


def test_empty_batch_and_bad_table_names() -> None:
    con = duckdb.connect()
    empty = pa.Table.from_pylist([edit("note", "1", 1, "d1")]).slice(0, 0)
    assert merger(con).merge(empty).edits_in == 0
    with pytest.raises(ValueError, match="table name"):
        StateMerger(con, RULES, state_table="x; DROP", conflicts_table="c", contributions_table="k")


def test_matches_the_reference_on_a_mixed_history() -> None:
    edits = [
        edit(f, v, h, n, key=k)
        for k in ("k1", "k2")
        for f, v, h, n in [
            ("threshold", "3", 1, "d1"),
            ("threshold", "3.0", 2, "central"),
            ("note", '"a"', 4, "d1"),
            ("note", '"b"', 4, "central"),
            ("label", '"xy"', 1, "central"),
            ("label", '"z"', 2, "d1"),
            ("tags", "[1, 2]", 1, "d1"),
            ("tags", '[{"b": 1, "a": 2}]', 2, "central"),
        ]
    ]
    con, _, _ = run(edits)
    ref = merge_reference(edits, RULES)
    got = {tuple(r[:5]): r[5:10] for r in con.execute("SELECT * FROM state").fetchall()}
    assert got == {k: (v["value"], v["hlc"], v["node_id"], v["origin"], v["rule"]) for k, v in ref.items()}
    assert state(con)["tags"][0] == '[1,2,{"a":2,"b":1}]'
    got_cf = {(*r[:5], r[8], r[7], r[6], r[12]) for r in con.execute("SELECT * FROM conflicts").fetchall()}
    assert got_cf == conflicts_reference(edits, RULES)


def test_works_on_ducklake_tables(tmp_path) -> None:
    from edge_sync.duck import ExtensionMissing, connect

    try:
        con = connect(extensions=("ducklake",))
    except ExtensionMissing as exc:
        require_service("DuckLake extension", str(exc))
    con.execute(f"ATTACH 'ducklake:{tmp_path}/meta.ducklake' AS lake (DATA_PATH '{tmp_path}/data')")
    m = merger(con, prefix="lake.main.")
    edits = [
        edit("note", '"dev"', 5, "d1"),
        edit("note", '"cen"', 9, "central"),
        edit("boot_count", "2", 1, "d1"),
    ]
    m.merge(pa.Table.from_pylist(edits[:1]))
    m.merge(pa.Table.from_pylist(edits))
    again = m.merge(pa.Table.from_pylist(edits))
    assert again.keys_changed == 0 and again.conflicts == 0
    assert state(con, "lake.main.state") == {
        "note": ('"cen"', 9, "central", "central", "lww"),
        "boot_count": ("2", 1, "d1", "device", "counter"),
    }
    assert len(conflicts(con, "lake.main.conflicts")) == 1


def test_merge_joins_an_open_transaction_of_the_caller() -> None:
    con = duckdb.connect()
    m = merger(con)
    con.execute("BEGIN TRANSACTION")
    m.merge(pa.Table.from_pylist([edit("note", '"x"', 1, "d1")]), own_transaction=False)
    con.execute("ROLLBACK")
    assert table_rows(con, "state") == []
    m.merge(pa.Table.from_pylist([edit("note", '"x"', 1, "d1")]))
    assert state(con)["note"][0] == '"x"'


PIN_RULES = {"pin": "prefer_central"}


@pytest.mark.parametrize(
    "rules",
    [
        # a max rule anywhere makes the merge order heads by the whole struct
        parse_rules({"version": 1, "namespaces": {"config": {"fields": {**PIN_RULES, "hi": "max"}}}}),
        # otherwise, with no HLC repeated in the batch, by (p, hlc) alone
        parse_rules({"version": 1, "namespaces": {"config": {"fields": PIN_RULES}}}),
    ],
    ids=["struct-order", "scalar-order"],
)
def test_a_nodes_latest_edit_wins_inside_one_batch(rules: RuleSet) -> None:
    edits = [
        edit("note", '"b"', 2, "d1"),
        edit("note", '"c"', 3, "d1"),
        edit("note", '"a"', 1, "d1"),
        edit("pin", '"d2"', 9, "d1"),
        edit("pin", '"c5"', 5, "central"),
        edit("pin", '"c7"', 7, "central"),
        edit("pin", '"c6"', 6, "central"),
    ]
    con, _, _ = run(edits, rules)
    assert state(con)["note"][:3] == ('"c"', 3, "d1")
    assert state(con)["pin"][:3] == ('"c7"', 7, "central")


@pytest.mark.parametrize("background_rows", [0, 10**9], ids=["counted-in-a-thread", "counted-inline"])
def test_a_shared_top_hlc_redoes_the_heads_pass_with_the_full_order(
    monkeypatch, background_rows: int
) -> None:
    """Big batches count their distinct edits beside the heads pass, which assumes no node has two
    different edits at one HLC; when one does, the pass is redone and the (hlc, value, origin)
    order decides, as in the reference."""
    import edge_sync.merge as merge_module

    monkeypatch.setattr(merge_module, "_BACKGROUND_ROWS", background_rows)
    passes = []
    stage_heads = StateMerger._stage_heads

    def counting(self, *args, **kwargs):
        passes.append(kwargs["unique_hlcs"])
        return stage_heads(self, *args, **kwargs)

    monkeypatch.setattr(StateMerger, "_stage_heads", counting)
    lww = parse_rules({"version": 1, "default": "lww"})  # no max/min: the first pass orders by HLC alone
    plain = [
        edit("note", f'"{v}"', h, n, key=f"k{i}")
        for i in range(50)
        for v, h, n in [("a", 1, "d1"), ("b", 2, "central")]
    ]
    con, _, stats = run([*plain, plain[0]], lww)
    assert (passes, stats.duplicates_dropped) == ([True], 1)

    passes.clear()
    # node d1 wrote "a" and "b" at the same HLC 5 for key t (a broken clock): "b" is the greater edit
    tied = [edit("note", v, 5, "d1", key="t") for v in ('"a"', '"b"')] + [
        edit("note", '"c"', 4, "central", key="t")
    ]
    edits = [*tied, *plain, tied[0]]
    con, _, stats = run(edits, lww)
    assert passes == [True, False]
    assert stats.duplicates_dropped == 2  # the copy, and "a": one edit per (key, node, HLC) counts
    ref = merge_reference(edits, lww)
    got = {tuple(r[:5]): r[5:10] for r in con.execute("SELECT * FROM state").fetchall()}
    assert got == {k: (v["value"], v["hlc"], v["node_id"], v["origin"], v["rule"]) for k, v in ref.items()}
    assert got[("t1", "d1", "config", "t", "note")][:3] == ('"b"', 5, "d1")
