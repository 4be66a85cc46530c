"""Merge keyed state edits into a state table, per-field conflict rules, with DuckDB set operations.

Used in two places with the same code: the device applies central edits from the downlink
to its cache, and the central merge asset merges device uploads into the lakehouse. The
tables are plain (VARCHAR/BIGINT, no keys or constraints, DELETE + INSERT only) so they
work in a DuckDB file and in DuckLake alike.

The merged state is a function of the SET of distinct edits seen, never of their arrival
order, batching or repetition (invariant 3). Every rule is a join-semilattice:

- picking rules (``lww``, ``max``, ``min``, ``prefer_*``) take the greatest edit under a total
  order ``(p, n, hlc, node_id, value, origin)`` where ``p`` is 1 for the preferred origin of
  a ``prefer_*`` rule (else 0) and ``n`` the number for ``max`` (its negation for ``min``,
  else 0). ``value``/``origin`` only break ties between malformed edits that share
  ``(node_id, hlc)``.
- ``counter`` sums integer increments over distinct edits ``(node_id, hlc)``; if two edits
  share an id, the greater ``(value, origin)`` counts.
- ``set_union`` unions JSON arrays; ``custom:<name>`` folds every value with the resolver.
  Their state row is stamped with the latest edit ``(hlc, node_id, value, origin)``.

Tables (names chosen by the caller):

- state: one row per (tenant_id, device_id, namespace, key, field): the merged ``value``
  (JSON text) and the ``hlc``/``node_id``/``origin`` of the winning (or stamping) edit,
  ``rule``, ``rules_version`` and ``updated_ms`` (wall clock of the merge that wrote it).
- contributions: what each node contributes to a field. ``kind='increment'``: one row per
  distinct counter edit (so re-delivery never double counts). ``kind='head'``: for every
  other rule, each node's best edit for the field under the rule's order (its latest one
  for ``set_union``/``custom``).
- conflicts: the current conflicts of every field. **What counts as a conflict**: a node
  whose head (its best edit of the field) lost to the state's winning value, i.e. the
  head's value differs from the state value and, for picking rules, the head is from
  another node than the winner. ``custom`` rules: any node head whose value is not the
  resolved value. ``counter`` and ``set_union`` never conflict (they lose nothing).
  A node's own superseded edits are updates, not conflicts. Each merge recomputes the
  conflicts of the fields it touches from the heads, so the table is a function of the
  edit set: the set of losers AND the winner each is paired with are independent of
  arrival order, and re-running a merge leaves the table unchanged (``detected_ms`` keeps
  the time a conflict row first appeared). Conflicts that a later edit resolves disappear;
  history lives in the lakehouse's snapshots (DuckLake time travel). For ``custom`` rules the
  winner columns are the state row (resolved value, stamped by the latest edit).

Input checks: a batch whose values do not fit their field's rule (``max``/``min``: finite
JSON number; ``counter``: JSON integer; ``set_union``: JSON array; ``custom``: valid JSON)
is rejected whole with an ``EditError`` naming the field, node and HLC; nothing is written.

Limits: values are compared as JSON text for conflicts (``1`` and ``1.0`` differ);
``max``/``min`` compare as DOUBLE; changing a field's rule applies from the next merge of
that field (heads chosen under the old rule stay until beaten).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from edge_sync import resolvers
from edge_sync.rules import PICKING_RULES, RuleSet, custom_name

KEY_COLUMNS: tuple[str, ...] = ("tenant_id", "device_id", "namespace", "key", "field")
EDIT_SCHEMA = pa.schema(
    [
        *(pa.field(c, pa.string()) for c in KEY_COLUMNS),
        pa.field("value", pa.string()),
        pa.field("hlc", pa.int64()),
        pa.field("node_id", pa.string()),
        pa.field("origin", pa.string()),
    ]
)
ORIGINS = ("device", "central")

_K = ", ".join(f'"{c}"' for c in KEY_COLUMNS)
_KEY_DDL = ", ".join(f'"{c}" VARCHAR' for c in KEY_COLUMNS)
STATE_DDL = (
    f'{_KEY_DDL}, "value" VARCHAR, hlc BIGINT, node_id VARCHAR, origin VARCHAR, '
    "rule VARCHAR, rules_version BIGINT, updated_ms BIGINT"
)
CONTRIBUTIONS_DDL = (
    f'{_KEY_DDL}, node_id VARCHAR, hlc BIGINT, "value" VARCHAR, origin VARCHAR, kind VARCHAR, rule VARCHAR'
)
_CONFLICT_ID = (
    "rule",
    "loser_value",
    "loser_hlc",
    "loser_node_id",
    "loser_origin",
    "winner_value",
    "winner_hlc",
    "winner_node_id",
    "winner_origin",
)
CONFLICTS_DDL = (
    f"{_KEY_DDL}, rule VARCHAR, loser_value VARCHAR, loser_hlc BIGINT, loser_node_id VARCHAR, "
    "loser_origin VARCHAR, winner_value VARCHAR, winner_hlc BIGINT, winner_node_id VARCHAR, "
    "winner_origin VARCHAR, rules_version BIGINT, detected_ms BIGINT"
)

JSON_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
JSON_INTEGER = r"-?(0|[1-9][0-9]{0,17})"  # fits int64 so sums stay exact
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")


@dataclass(frozen=True)
class MergeStats:
    """What one ``merge`` call did."""

    edits_in: int
    duplicates_dropped: int
    keys_changed: int
    conflicts: int  # conflict rows added
    conflicts_by_rule: dict[str, int] = field(default_factory=dict)
    conflicts_cleared: int = 0  # conflict rows removed because a later edit settled them
    rules_version: int = 0


class EditError(ValueError):
    """An edit batch that cannot be merged: the message names the column or edit and the fix."""


def _cols(alias: str) -> str:
    return ", ".join(f'{alias}."{c}"' for c in KEY_COLUMNS)


def _on(a: str, b: str, cols: Iterable[str] = KEY_COLUMNS) -> str:
    return " AND ".join(f'{a}."{c}" = {b}."{c}"' for c in cols)


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def rule_sql(rules: RuleSet, namespace: str = "namespace", field: str = "field") -> str:
    """A SQL expression giving ``rules.rule_for(namespace, field)`` (no join, no pass over the data)."""
    arms = []
    for ns_name, ns in rules.namespaces.items():
        for f, rule in ns.fields.items():
            arms.append(
                f"WHEN {namespace} = {_sql_str(ns_name)} AND {field} = {_sql_str(f)} THEN {_sql_str(rule)}"
            )
        if ns.default and ns.default != rules.default:
            arms.append(f"WHEN {namespace} = {_sql_str(ns_name)} THEN {_sql_str(ns.default)}")
    if not arms:
        return _sql_str(rules.default)
    return f"(CASE {' '.join(arms)} ELSE {_sql_str(rules.default)} END)"


def rules_used(rules: RuleSet) -> set[str]:
    used = {rules.default}
    for ns in rules.namespaces.values():
        used.update(ns.fields.values())
        if ns.default:
            used.add(ns.default)
    return used


class _Order:
    """SQL for the rules' total order, with only the parts the rule set needs (fewer struct fields is faster)."""

    def __init__(self, used: set[str]) -> None:
        self.prefer = bool(used & {"prefer_device", "prefer_central"})
        self.numeric = bool(used & {"max", "min"})

    def best_head(self, rule: str, value: str, hlc: str, origin: str, *, unique_hlcs: bool) -> str:
        """Aggregate: a node's best edit. With no repeated HLC in the batch, (p, hlc) alone
        orders a node's edits unless max/min compare values, and ``arg_max`` on that scalar
        is much cheaper than ``max`` over the whole struct."""
        head = self.head(rule, value, hlc, origin)
        if not unique_hlcs or self.numeric:
            return f"max({head})"
        if not self.prefer:
            return f"arg_max({head}, {hlc})"
        p = self._p(rule, origin)
        return f"arg_max({head}, CAST({p} AS HUGEINT) * 18446744073709551616 + {hlc})"

    @staticmethod
    def _p(rule: str, origin: str) -> str:
        return (
            f"CASE {rule} WHEN 'prefer_device' THEN CAST({origin} = 'device' AS INTEGER) "
            f"WHEN 'prefer_central' THEN CAST({origin} = 'central' AS INTEGER) ELSE 0 END"
        )

    def head(self, rule: str, value: str, hlc: str, origin: str) -> str:
        """A node's candidate under the rule's order (the node id is constant inside its group)."""
        parts = []
        if self.prefer:
            parts.append(f"p := {self._p(rule, origin)}")
        if self.numeric:
            parts.append(
                f"n := CASE {rule} WHEN 'max' THEN TRY_CAST({value} AS DOUBLE) "
                f"WHEN 'min' THEN -TRY_CAST({value} AS DOUBLE) ELSE 0.0 END"
            )
        parts.append(f"hlc := {hlc}")
        parts += [f"value := {value}", f"origin := {origin}"]
        return f"struct_pack({', '.join(parts)})"

    def across_nodes(self, head: str, node: str) -> str:
        """A node's head (built by ``head``) as a candidate among all nodes' heads."""
        parts = [f"p := {head}.p"] if self.prefer else []
        if self.numeric:
            parts.append(f"n := {head}.n")
        parts += [
            f"hlc := {head}.hlc",
            f"node_id := {node}",
            f"value := {head}.value",
            f"origin := {head}.origin",
        ]
        return f"struct_pack({', '.join(parts)})"


def check_edits(edits: pa.Table) -> pa.Table:
    """The edit columns of ``edits`` cast to ``EDIT_SCHEMA``; extra columns (a stream envelope) are dropped."""
    missing = [c for c in EDIT_SCHEMA.names if c not in edits.column_names]
    if missing:
        raise EditError(f"state edits lack column(s) {missing}; an edit table needs {EDIT_SCHEMA.names}")
    try:
        table = edits.select(EDIT_SCHEMA.names).cast(EDIT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise EditError(f"state edits do not cast to the edit schema {EDIT_SCHEMA}: {exc}") from None
    nulls = [c for c in EDIT_SCHEMA.names if table.column(c).null_count]
    if nulls:
        raise EditError(f"state edits have nulls in {nulls}; send JSON 'null' text for a null value")
    bad = set(pc.unique(table.column("origin")).to_pylist()) - set(ORIGINS)
    if bad:
        raise EditError(f"state edits have origin(s) {sorted(bad)}; origin must be one of {ORIGINS}")
    return table


def _decode(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise EditError(f"{where}: value {text!r} is not valid JSON") from None


def set_union_value(values: Iterable[str], where: str = "set_union") -> str:
    """Union of JSON arrays as a sorted canonical JSON array (the ``set_union`` state)."""
    items: set[str] = set()
    for text in values:
        decoded = _decode(text, where)
        if not isinstance(decoded, list):
            raise EditError(f'{where}: set_union needs a JSON array, got {text!r}; send e.g. ["a"]')
        items.update(resolvers.canonical_json(v) for v in decoded)
    return "[" + ",".join(sorted(items)) + "]"


def custom_value(rule: str, values: Iterable[str], where: str = "custom") -> str:
    name = custom_name(rule)
    assert name is not None
    return resolvers.canonical_json(resolvers.resolve_all(name, [_decode(v, where) for v in values]))


class StateMerger:
    """Merges edit batches into caller-named state, conflicts and contributions tables.

    ``con`` may be a plain DuckDB connection (device cache) or one with a DuckLake catalog
    attached (central); qualified names such as ``lake.main.device_state`` work. Each merge
    is one transaction (or the caller's: ``own_transaction=False``): the three tables change together or
    not at all. One merger per connection at a time; concurrent writers to the same tables
    are not coordinated here (run the central merge as a single asset).
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        rules: RuleSet,
        *,
        state_table: str,
        conflicts_table: str,
        contributions_table: str,
    ) -> None:
        for name in (state_table, conflicts_table, contributions_table):
            if not _IDENT.match(name):
                raise ValueError(
                    f"table name {name!r} must be [catalog.][schema.]name of letters, digits and _"
                )
        rules.check_resolvers()
        self.con = con
        self.rules = rules
        self.state = state_table
        self.conflicts = conflicts_table
        self.contributions = contributions_table
        self._tmp = f"_sm{id(self):x}"
        self._views: list[str] = []
        con.execute(f"CREATE TABLE IF NOT EXISTS {state_table} ({STATE_DDL})")
        con.execute(f"CREATE TABLE IF NOT EXISTS {contributions_table} ({CONTRIBUTIONS_DDL})")
        con.execute(f"CREATE TABLE IF NOT EXISTS {conflicts_table} ({CONFLICTS_DDL})")

    # -- staging helpers -------------------------------------------------------------
    # Intermediate results are fetched to Arrow and registered as views: several times
    # cheaper than CREATE TEMP TABLE for these sizes, and nothing is written to any catalog.
    def _stage(self, name: str, sql: str) -> str:
        return self._register(name, self.con.execute(sql).to_arrow_table())

    def _register(self, name: str, table: pa.Table) -> str:
        view = f"{self._tmp}_{name}"
        self.con.register(view, table)
        self._views.append(view)
        return view

    def _rows(self, sql: str, params: list | None = None) -> int:
        """Run a write and return how many rows it touched."""
        row = self.con.execute(sql, params or []).fetchone()
        return int(row[0]) if row else 0

    def merge(self, edits: pa.Table, *, own_transaction: bool = True) -> MergeStats:
        """Merge one batch of edits; safe to repeat, in any order, with any batching.

        ``own_transaction=False`` when the caller has already opened a transaction on ``con``
        (to commit the merge together with its own writes, e.g. an ingest ledger row).
        """
        table = check_edits(edits)
        version = self.rules.version
        if table.num_rows == 0:
            return MergeStats(0, 0, 0, 0, {}, 0, version)
        con = self.con
        self._views = []
        view = self._register("in", table)
        try:
            own = own_transaction
            if own:
                con.execute("BEGIN TRANSACTION")
            try:
                stats = self._merge(view, table.num_rows, version)
                if own:
                    con.execute("COMMIT")
            except BaseException:
                if own:
                    con.execute("ROLLBACK")
                raise
            return stats
        finally:
            for v in self._views:
                con.unregister(v)
            self._views = []

    def _merge(self, inp: str, edits_in: int, version: int) -> MergeStats:
        con = self.con
        used = rules_used(self.rules)
        self._order = _Order(used)
        ruled = f"(SELECT *, {rule_sql(self.rules)} AS rule FROM {inp})"
        self._validate(ruled, used)
        # Only a statistic. Edits of one node never share an HLC, so when no HLC repeats there
        # is no duplicate and the exact count (a costlier pass) is skipped.
        n, distinct = con.execute(f"SELECT count(*), count(DISTINCT hlc) FROM {inp}").fetchone()
        self._unique_hlcs = distinct == n
        if distinct != n:
            distinct = con.execute(
                f"SELECT count(*) FROM (SELECT DISTINCT {_K}, node_id, hlc FROM {inp})"
            ).fetchone()[0]

        new_parts: list[str] = []
        heads = self._heads(ruled, used, new_parts) if used - {"counter"} else None
        if "counter" in used:
            self._counters(ruled, new_parts)
        new = self._stage("new", " UNION ALL ".join(new_parts))

        s = self.state
        same = "n.value = s.value AND n.hlc = s.hlc AND n.node_id = s.node_id AND n.origin = s.origin AND n.rule = s.rule"
        self._rows(
            f"DELETE FROM {s} s WHERE EXISTS (SELECT 1 FROM {new} n WHERE {_on('n', 's')} AND NOT ({same}))"
        )
        now_ms = time.time_ns() // 1_000_000
        keys_changed = self._rows(
            f'INSERT INTO {s} SELECT {_K}, "value", hlc, node_id, origin, rule, ?, ? FROM {new} n '
            f"WHERE NOT EXISTS (SELECT 1 FROM {s} s WHERE {_on('n', 's')})",
            [version, now_ms],
        )
        added: dict[str, int] = {}
        cleared = 0
        if heads is not None:
            added, cleared = self._conflicts(heads, new, version, now_ms)
        return MergeStats(
            edits_in=edits_in,
            duplicates_dropped=edits_in - distinct,
            keys_changed=keys_changed,
            conflicts=sum(added.values()),
            conflicts_by_rule=added,
            conflicts_cleared=cleared,
            rules_version=version,
        )

    def _validate(self, ruled: str, used: set[str]) -> None:
        checks = []
        if used & {"max", "min"}:
            checks.append(
                (
                    f"rule IN ('max', 'min') AND NOT (regexp_full_match(value, '{JSON_NUMBER}') "
                    "AND isfinite(TRY_CAST(value AS DOUBLE)))",
                    "needs a finite JSON number",
                )
            )
        if "counter" in used:
            checks.append(
                (
                    f"rule = 'counter' AND NOT regexp_full_match(value, '{JSON_INTEGER}')",
                    "needs a JSON integer increment",
                )
            )
        for where, need in checks:
            bad = self.con.execute(
                f"SELECT namespace, field, rule, node_id, hlc, value FROM {ruled} WHERE {where} LIMIT 3"
            ).fetchall()
            if bad:
                shown = "; ".join(f"{b[0]}.{b[1]} ({b[2]}) node {b[3]} hlc {b[4]}: {b[5]!r}" for b in bad)
                raise EditError(
                    f"state edits rejected, rule {bad[0][2]} {need}: {shown}. "
                    "Fix the sender or change the field's rule in the rules file"
                )

    def _heads(self, ruled: str, used: set[str], new_parts: list[str]) -> str:
        """Every rule but counter: upsert each node's best edit, then pick the winner per field."""
        c = self.contributions
        h = self._stage(
            "h",
            f"SELECT {_K}, node_id, rule, {self._order.best_head('rule', 'value', 'hlc', 'origin', unique_hlcs=self._unique_hlcs)} AS h "
            f"FROM {ruled} WHERE rule <> 'counter' GROUP BY ALL",
        )
        crule = rule_sql(self.rules, "c.namespace", "c.field")
        # Other nodes' heads of the touched fields, read before this merge writes any.
        eh = self._stage(
            "eh",
            f"SELECT {_cols('c')}, c.node_id, {crule} AS rule, "
            f"{self._order.head(crule, 'c.value', 'c.hlc', 'c.origin')} AS h FROM {c} c "
            f"WHERE c.kind = 'head' AND EXISTS (SELECT 1 FROM {h} x WHERE {_on('x', 'c')})",
        )
        node = "x.node_id = c.node_id"
        self._rows(
            f"DELETE FROM {c} c WHERE c.kind = 'head' AND EXISTS (SELECT 1 FROM {h} x "
            f"WHERE {_on('x', 'c')} AND {node} AND x.h > {self._order.head('x.rule', 'c.value', 'c.hlc', 'c.origin')})"
        )
        # What is left of an existing head is at least as good as the incoming one.
        self._rows(
            f"INSERT INTO {c} SELECT {_K}, node_id, h.hlc, h.value, h.origin, 'head', rule FROM {h} x "
            f"WHERE NOT EXISTS (SELECT 1 FROM {c} c WHERE c.kind = 'head' AND {_on('x', 'c')} AND {node})"
        )
        vr = self._combined(ruled) if any(u == "set_union" or custom_name(u) for u in used) else None
        picking = "', '".join(sorted(PICKING_RULES))
        value = f"CASE WHEN w.rule IN ('{picking}') THEN w.w.value ELSE v.value END" if vr else "w.w.value"
        join_v = f"LEFT JOIN {vr} v ON {_on('w', 'v')}" if vr else ""
        new_parts.append(
            f"SELECT {_cols('w')}, {value} AS value, w.w.hlc AS hlc, w.w.node_id AS node_id, "
            f"w.w.origin AS origin, w.rule AS rule FROM ("
            f"SELECT {_K}, rule, max({self._order.across_nodes('h', 'node_id')}) AS w "
            f"FROM (SELECT * FROM {h} UNION ALL SELECT * FROM {eh}) GROUP BY ALL) w {join_v}"
        )
        return h

    def _combined(self, ruled: str) -> str:
        """set_union and custom values: union/fold of the state value and the incoming values, in Python."""
        v = self._stage(
            "v",
            f"SELECT {_K}, rule, list(DISTINCT value) AS vals FROM {ruled} "
            "WHERE rule = 'set_union' OR starts_with(rule, 'custom:') GROUP BY ALL",
        )
        rows = self.con.execute(
            f"SELECT v.*, s.value FROM {v} v LEFT JOIN {self.state} s ON {_on('v', 's')} AND s.rule = v.rule"
        ).fetchall()
        out: dict[str, list] = {c: [] for c in (*KEY_COLUMNS, "value")}
        for row in rows:
            *key, rule, vals, existing = row
            values = [*vals, *([existing] if existing is not None else [])]
            where = f"{key[2]}.{key[4]} key {key[3]!r} ({rule})"
            value = (
                set_union_value(values, where) if rule == "set_union" else custom_value(rule, values, where)
            )
            for col, x in zip(KEY_COLUMNS, key, strict=True):
                out[col].append(x)
            out["value"].append(value)
        return self._register("vr", pa.table({k: pa.array(x, pa.string()) for k, x in out.items()}))

    def _counters(self, ruled: str, new_parts: list[str]) -> None:
        """Counter: upsert distinct increments, then sum them per field."""
        c = self.contributions
        ident = (*KEY_COLUMNS, "node_id", "hlc")
        ci = self._stage(
            "c",
            f"SELECT {_K}, node_id, hlc, max(struct_pack(value := value, origin := origin)) AS vo "
            f"FROM {ruled} WHERE rule = 'counter' GROUP BY ALL",
        )
        self._rows(
            f"DELETE FROM {c} c WHERE c.kind = 'increment' AND EXISTS (SELECT 1 FROM {ci} x "
            f"WHERE {_on('x', 'c', ident)} AND x.vo > struct_pack(value := c.value, origin := c.origin))"
        )
        self._rows(
            f"INSERT INTO {c} SELECT {_K}, node_id, hlc, vo.value, vo.origin, 'increment', 'counter' FROM {ci} x "
            f"WHERE NOT EXISTS (SELECT 1 FROM {c} c WHERE c.kind = 'increment' AND {_on('x', 'c', ident)})"
        )
        latest = "max(struct_pack(hlc := hlc, node_id := node_id, value := value, origin := origin))"
        new_parts.append(
            f"SELECT {_K}, CAST(sum(CAST(value AS HUGEINT)) AS VARCHAR) AS value, {latest}.hlc, "
            f"{latest}.node_id, {latest}.origin, 'counter' AS rule FROM {c} c WHERE c.kind = 'increment' "
            f"AND EXISTS (SELECT 1 FROM {ci} x WHERE {_on('x', 'c')}) GROUP BY ALL"
        )

    def _conflicts(self, h: str, new: str, version: int, now_ms: int) -> tuple[dict[str, int], int]:
        """Recompute the conflicts of the touched fields from the heads; write only the difference."""
        c = self.contributions
        cf = self._stage(
            "cf",
            f"SELECT {_cols('c')}, n.rule, c.value AS loser_value, c.hlc AS loser_hlc, "
            "c.node_id AS loser_node_id, c.origin AS loser_origin, n.value AS winner_value, n.hlc AS winner_hlc, "
            "n.node_id AS winner_node_id, n.origin AS winner_origin "
            f"FROM {c} c JOIN {new} n ON {_on('c', 'n')} "
            "WHERE c.kind = 'head' AND n.rule <> 'set_union' AND c.value <> n.value "
            "AND (starts_with(n.rule, 'custom:') OR c.node_id <> n.node_id)",
        )
        ident = (*KEY_COLUMNS, *_CONFLICT_ID)
        x = self.conflicts
        cleared = self._rows(
            f"DELETE FROM {x} x WHERE EXISTS (SELECT 1 FROM {h} k WHERE {_on('k', 'x')}) "
            f"AND NOT EXISTS (SELECT 1 FROM {cf} a WHERE {_on('a', 'x', ident)})"
        )
        add = self._stage(
            "cfadd",
            f"SELECT a.* FROM {cf} a WHERE NOT EXISTS (SELECT 1 FROM {x} x WHERE {_on('a', 'x', ident)})",
        )
        cols = ", ".join(f'"{col}"' for col in ident)
        self._rows(f"INSERT INTO {x} SELECT {cols}, ?, ? FROM {add}", [version, now_ms])
        by_rule = dict(
            self.con.execute(f"SELECT rule, count(*) FROM {add} GROUP BY rule ORDER BY rule").fetchall()
        )
        return by_rule, cleared


# -- the reference: small, obviously correct, used by the tests as the oracle ------------


def _num(value: str) -> float:
    if not re.fullmatch(JSON_NUMBER, value) or not math.isfinite(float(value)):
        raise EditError(f"value {value!r} is not a finite JSON number")
    return float(value)


def _order(rule: str, e: dict) -> tuple:
    p = (
        int(e["origin"] == "device")
        if rule == "prefer_device"
        else int(e["origin"] == "central")
        if rule == "prefer_central"
        else 0
    )
    n = _num(e["value"]) if rule == "max" else -_num(e["value"]) if rule == "min" else 0.0
    return (p, n, e["hlc"], e["node_id"], e["value"], e["origin"])


def _latest(e: dict) -> tuple:
    return (e["hlc"], e["node_id"], e["value"], e["origin"])


def _key(e: dict) -> tuple[str, ...]:
    return tuple(e[c] for c in KEY_COLUMNS)


def _picks_order(rule: str):
    return (lambda e: _order(rule, e)) if rule in PICKING_RULES else _latest


def merge_reference(edits: list[dict], rules: RuleSet) -> dict[tuple[str, ...], dict]:
    """The merged state of ``edits`` computed directly: key -> {value, hlc, node_id, origin, rule}."""
    groups: dict[tuple[str, ...], list[dict]] = defaultdict(list)
    for e in edits:
        groups[_key(e)].append(e)
    state = {}
    for key, es in groups.items():
        rule = rules.rule_for(key[2], key[4])
        if rule in PICKING_RULES:
            win = max(es, key=lambda e, r=rule: _order(r, e))
            value = win["value"]
        elif rule == "counter":
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
            value = set_union_value(vals) if rule == "set_union" else custom_value(rule, vals)
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
        if rule in ("counter", "set_union"):
            continue
        head = max(es, key=_picks_order(rule))
        win = state[key]
        if head["value"] != win["value"] and (custom_name(rule) or node != win["node_id"]):
            out.add((*key, node, head["hlc"], head["value"], win["node_id"]))
    return out
