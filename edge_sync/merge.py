# Over 500 lines on purpose: one merge algorithm whose steps share invariants, read top to bottom.
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
- contributions: what the state and conflicts rows do not already hold. ``kind='increment'``:
  one row per distinct counter edit (so re-delivery never double counts). ``kind='head'``:
  a node's head (its best edit of the field under the rule's order; its latest one for
  ``set_union``/``custom``) that is needed later and stored nowhere else: every head of a
  ``set_union``/``custom`` field, and for picking rules only a losing head whose value equals
  the winning value (not a conflict). The winner's head of a picking rule IS the state row
  and every other losing head IS a conflict row, so the common field edited by one node
  stores nothing here. Rows of the older layout (a head row for every node, winner
  included; ``edge_sync.downlink`` still seeds one) are read like the others and rewritten
  in this layout the next time their field is merged.
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

How a merge runs (every step joins on the touched keys only, never re-reads whole tables
into memory): one GROUP BY (key, node) over the batch gives the row number of each node's
head (its edit is then taken from the batch in Arrow) and, in the same pass, counts values
the rule rejects; the stored heads of the touched keys (state, conflicts, contributions)
are read (not at all from a table with no rows); if there are any, both are folded per
(key, node); the winner of each field is picked from the heads in Arrow/numpy
(``edge_sync.merge_arrow``);
state, conflicts and contributions rows are then written as differences against what the
touched keys held (DELETE of rows no longer wanted, INSERT of new ones), so rows that stay
keep their clocks and a repeated merge writes nothing.

Input checks: a batch whose values do not fit their field's rule (``max``/``min``: finite
JSON number; ``counter``: JSON integer; ``set_union``: JSON array; ``custom``: valid JSON)
is rejected whole with an ``EditError`` naming the field, node and HLC; nothing is written.

Limits: values are compared as JSON text for conflicts (``1`` and ``1.0`` differ);
``max``/``min`` compare as DOUBLE; changing a field's rule applies from the next merge of
that field (heads chosen under the old rule stay until beaten).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edge_sync import resolvers
from edge_sync.merge_arrow import best_per_key, distinct_edits, key_codes, text_ranks
from edge_sync.rules import COUNTER, CUSTOM_PREFIX, RULES, SET_UNION, Rule, RuleSet, custom_name, rule_kind

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
# Batches of at least this many edits count their distinct edits in a second thread.
_BACKGROUND_ROWS = 50_000
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


def _cols(alias: str, cols: Iterable[str] = KEY_COLUMNS) -> str:
    return ", ".join(f'{alias}."{c}"' for c in cols)


def _on(a: str, b: str, cols: Iterable[str] = KEY_COLUMNS) -> str:
    return " AND ".join(f'{a}."{c}" = {b}."{c}"' for c in cols)


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_names(rules: Iterable[Rule]) -> str:
    """A SQL list of the rules' names, for ``rule IN (...)``."""
    return "(" + ", ".join(_sql_str(r.name) for r in rules) + ")"


# The rules' SQL and Arrow forms, built from their registry (``edge_sync.rules.RULES``).
_PICKING = _sql_names(r for r in RULES.values() if r.picks)
_PICKING_NAMES = pa.array([r.name for r in RULES.values() if r.picks], pa.string())
_NUMERIC = [r for r in RULES.values() if r.sign]
_COUNTER = _sql_str(COUNTER.name)
# Heads of these rules never lose: their state holds every value.
_LOSE_NOTHING = [r.name for r in RULES.values() if not r.sums and not r.conflicts]
_FOLDED = (
    f"rule IN {_sql_names(r for r in RULES.values() if r.folds)} "
    f"OR starts_with(rule, {_sql_str(CUSTOM_PREFIX)})"
)
_PREFERS = " ".join(
    f"WHEN {_sql_str(r.name)} THEN CAST(origin = {_sql_str(r.prefers)} AS INTEGER)"
    for r in RULES.values()
    if r.prefers
)
_NUMBERS = " ".join(
    f"WHEN {_sql_str(r.name)} THEN {'-' if r.sign < 0 else ''}TRY_CAST(value AS DOUBLE)" for r in _NUMERIC
)


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
    """SQL for the rules' total order, with only the parts the rule set needs (fewer columns is faster).

    A head is flat: ``p`` and ``n`` (when the rule set has them), ``hlc``, ``value``, ``origin``.
    Inside one field the rule is fixed, so ``p`` is constant for ``max``/``min`` fields and
    ``n`` for ``prefer_*`` ones: a node's head has the greatest ``p`` and ``n`` of its edits."""

    def __init__(self, used: set[str]) -> None:
        kinds = [rule_kind(u) for u in used]
        self.prefer = any(k.prefers for k in kinds)
        self.numeric = any(k.sign for k in kinds)

    def arg(self, rule: str, *, unique_hlcs: bool) -> str:
        """The key a node's best edit maximizes. When no two different edits of a node share
        an HLC in the batch (exact copies may), (p, hlc) alone orders a node's edits unless
        max/min compare values, and a scalar key is much cheaper than a struct."""
        if not unique_hlcs or self.numeric:
            parts = [f"{name} := {sql}" for name, sql in self.parts(rule)]
            parts += ["hlc := hlc", "value := value", "origin := origin"]
            return f"struct_pack({', '.join(parts)})"
        if not self.prefer:
            return "hlc"
        return f"CAST({self._p(rule)} AS HUGEINT) * 18446744073709551616 + hlc"

    @staticmethod
    def _p(rule: str) -> str:
        return f"CASE {rule} {_PREFERS} ELSE 0 END"

    def parts(self, rule: str) -> list[tuple[str, str]]:
        """(name, SQL) of the order columns before ``hlc`` for an edit or stored head."""
        parts = [("p", self._p(rule))] if self.prefer else []
        if self.numeric:
            parts.append(("n", f"CASE {rule} {_NUMBERS} ELSE 0.0 END"))
        return parts


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
    origin = table.column("origin")
    # Two comparisons are cheaper than hashing every origin; the values only when one is bad.
    known = sum(pc.sum(pc.equal(origin, o)).as_py() or 0 for o in ORIGINS)
    if known < table.num_rows:
        bad = set(pc.unique(origin).to_pylist()) - set(ORIGINS)
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


def custom_value(
    rule: str, values: Iterable[str], where: str = "custom", rules: RuleSet | None = None
) -> str:
    """The ``custom:<name>`` state: ``values`` folded with the resolver (``rules``' own, else the registry's)."""
    name = custom_name(rule)
    assert name is not None
    fn = rules.resolver(name) if rules is not None else None
    return resolvers.canonical_json(resolvers.resolve_all(name, [_decode(v, where) for v in values], fn))


def _checks(used: set[str], rule: str = "rule") -> dict[str, tuple[str, str]]:
    """Per path ('heads', 'counter'): a SQL condition true for an edit its rule rejects, and the need."""
    checks = {}
    if used & {r.name for r in _NUMERIC}:
        checks["heads"] = (
            f"{rule} IN {_sql_names(_NUMERIC)} AND NOT (regexp_full_match(value, '{JSON_NUMBER}') "
            "AND isfinite(TRY_CAST(value AS DOUBLE)))",
            "needs a finite JSON number",
        )
    if COUNTER.name in used:
        checks["counter"] = (
            f"{rule} = {_COUNTER} AND NOT regexp_full_match(value, '{JSON_INTEGER}')",
            "needs a JSON integer increment",
        )
    return checks


def _where(table: pa.Table, mask: pa.Array, columns: dict[str, pa.Array | pa.ChunkedArray]) -> pa.Table:
    """The key columns of ``table``, then ``columns`` (aligned with it), where ``mask`` holds."""
    return pa.table({**{c: table[c] for c in KEY_COLUMNS}, **columns}).filter(mask)


def _order_columns(heads: pa.Table) -> list[np.ndarray]:
    """The numeric part of the heads' order, most significant first: ``p``, ``n`` (when the
    rule set has them) and ``hlc``. A stored head whose value is no number under a rule
    changed to max/min has no ``n``: it ranks below every number."""
    names = heads.column_names
    out = [heads["p"].to_numpy()] if "p" in names else []
    if "n" in names:
        out.append(pc.fill_null(heads["n"], -math.inf).to_numpy())
    return [*out, heads["hlc"].to_numpy()]


_SCAN_BATCH = 16_384
STATE_ROW = pa.schema(
    [*(pa.field(c, pa.string()) for c in (*KEY_COLUMNS, "value")), pa.field("hlc", pa.int64())]
    + [pa.field(c, pa.string()) for c in ("node_id", "origin", "rule")]
)


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
        self._tables: dict[str, pa.Table] = {}
        self._views: list[str] = []
        con.execute(f"CREATE TABLE IF NOT EXISTS {state_table} ({STATE_DDL})")
        con.execute(f"CREATE TABLE IF NOT EXISTS {contributions_table} ({CONTRIBUTIONS_DDL})")
        con.execute(f"CREATE TABLE IF NOT EXISTS {conflicts_table} ({CONFLICTS_DDL})")

    # -- staging helpers -------------------------------------------------------------
    # Intermediate results are fetched to Arrow and registered as views: several times
    # cheaper than CREATE TEMP TABLE for these sizes, and nothing is written to any catalog.
    def _stage(self, name: str, sql: str) -> str:
        return self._register(name, self.con.execute(sql).to_arrow_table())

    def _keep(self, name: str, table: pa.Table) -> str:
        """Hold ``table`` under a view name without registering it (no SQL reads it)."""
        view = f"{self._tmp}_{name}"
        self._tables[view] = table
        return view

    def _register(self, name: str, table: pa.Table) -> str:
        view = f"{self._tmp}_{name}"
        # DuckDB hands each record batch of an Arrow table to one thread: a batch of a
        # million rows (a whole upload, or a query result) would be scanned on one core.
        table = pa.Table.from_batches(table.to_batches(max_chunksize=_SCAN_BATCH), table.schema)
        self.con.register(view, table)
        if view not in self._views:  # a pass redone (``_heads``) registers its view again
            self._views.append(view)
        self._tables[view] = table
        return view

    def _touched(self, name: str, table: str, sql: str) -> str:
        """Stage ``sql`` (rows of ``table`` for the touched keys); for an empty ``table``, an
        empty relation written inline (no query, no registration)."""
        if table in self._filled:
            return self._stage(name, sql)
        view = f"(SELECT * FROM {table} LIMIT 0)"
        self._tables[view] = pa.table({})
        return view

    def _n(self, view: str) -> int:
        return self._tables[view].num_rows

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
        self._tables, self._views = {}, []
        try:
            own = own_transaction
            if own:
                con.execute("BEGIN TRANSACTION")
            try:
                stats = self._merge(table, version)
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
            self._tables, self._views = {}, []

    def _merge(self, table: pa.Table, version: int) -> MergeStats:
        used = rules_used(self.rules)
        self._order = _Order(used)
        # Counted beside the heads pass, which assumes the usual case (no HLC shared by two
        # different edits of a node) and is redone if that was wrong (see _heads).
        counting = _count_distinct(table, (*KEY_COLUMNS, "node_id"))
        # A row number lets the heads pass return which edit won rather than copy its columns.
        inp = self._register("in", table.append_column("_row", pa.array(np.arange(table.num_rows))))
        ruled = f"(SELECT *, {rule_sql(self.rules)} AS rule FROM {inp})"
        checks = _checks(used)
        # A table with no rows at all (a new cache or lake) skips its semi-join: the
        # probe costs far less than hashing every touched key for nothing.
        tables = (self.state, self.conflicts, self.contributions)
        probe = ", ".join(f"EXISTS (SELECT 1 FROM {t})" for t in tables)
        self._filled = {
            t for t, full in zip(tables, self.con.execute(f"SELECT {probe}").fetchone(), strict=True) if full
        }
        # Everything is read and checked before the first write: a rejected batch writes nothing.
        h = self._heads(table, inp, used, counting) if used - {COUNTER.name} else None
        distinct, _ = counting.result()
        ci = self._stage_increments(ruled, checks.get("counter")) if COUNTER.name in used else None
        for view, path in ((h, "heads"), (ci, "counter")):
            if view and path in checks and pc.sum(self._tables[view]["bad"]).as_py():
                self._reject(ruled, checks[path])
        h = h if h and self._n(h) else None
        ci = ci if ci and self._n(ci) else None
        keys = " UNION ALL ".join(f"SELECT {_K} FROM {v}" for v in (h, ci) if v)
        s = self._touched(
            "s",
            self.state,
            f"SELECT s.* FROM {self.state} s WHERE EXISTS (SELECT 1 FROM ({keys}) k WHERE {_on('k', 's')})",
        )
        rows: list[pa.Table] = []
        if h:
            heads, x, stored = self._all_heads(h, s)
            state_rows, cf, kept = self._winners(ruled, heads, s)
            rows.append(state_rows)
        if ci:
            rows.append(self.con.execute(self._counters(ci)).to_arrow_table().cast(STATE_ROW))
        now_ms = time.time_ns() // 1_000_000
        keys_changed, _, _ = self._sync(self.state, s, pa.concat_tables(rows), [version, now_ms])
        added: dict[str, int] = {}
        cleared = 0
        if h:
            _, cleared, add = self._sync(self.conflicts, x, cf, [version, now_ms])
            counts = self._tables[add]["rule"].value_counts()
            added = dict(
                sorted(
                    zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
                )
            )
            self._sync(self.contributions, stored, kept, [])
        return MergeStats(
            edits_in=table.num_rows,
            duplicates_dropped=table.num_rows - distinct,
            keys_changed=keys_changed,
            conflicts=sum(added.values()),
            conflicts_by_rule=added,
            conflicts_cleared=cleared,
            rules_version=version,
        )

    def _sync(self, target: str, have: str, want: pa.Table, extra: list) -> tuple[int, int, str]:
        """Make ``target``'s rows in ``have`` (the slice of it this merge touches) equal ``want``.

        Deletes what is no longer wanted and inserts what is new (``want``'s columns, then the
        ``extra`` values), so rows that stay keep their clocks (``updated_ms``/``detected_ms``).
        Returns (rows inserted, rows deleted, the view of inserted rows).
        """
        ident = want.column_names
        add = self._register(f"want{len(self._tables)}", want)
        gone = 0
        if self._n(have):
            same = _on("a", "b", ident)
            w = add
            add = self._stage(
                f"add{len(self._tables)}",
                f"SELECT * FROM {w} a WHERE NOT EXISTS (SELECT 1 FROM {have} b WHERE {same})",
            )
            old = self._stage(
                f"gone{len(self._tables)}",
                f"SELECT {_cols('a', ident)} FROM {have} a WHERE NOT EXISTS (SELECT 1 FROM {w} b WHERE {same})",
            )
            if self._n(old):
                gone = self._rows(f"DELETE FROM {target} b WHERE EXISTS (SELECT 1 FROM {old} a WHERE {same})")
        cols = _cols("a", ident) + ", ?" * len(extra)
        # Read through a materialized CTE, DuckDB appends in one sequential INSERT: about half
        # the work of its parallel batch insert, which buffers each scan batch and then copies
        # the small ones together again.
        insert = f"INSERT INTO {target} WITH a AS MATERIALIZED (SELECT * FROM {add}) SELECT {cols} FROM a"
        added = self._rows(insert, extra) if self._n(add) else 0
        return added, gone, add

    def _reject(self, ruled: str, check: tuple[str, str]) -> None:
        where, need = check
        bad = self.con.execute(
            f"SELECT namespace, field, rule, node_id, hlc, value FROM {ruled} WHERE {where} LIMIT 3"
        ).fetchall()
        shown = "; ".join(f"{b[0]}.{b[1]} ({b[2]}) node {b[3]} hlc {b[4]}: {b[5]!r}" for b in bad)
        raise EditError(
            f"state edits rejected, rule {bad[0][2]} {need}: {shown}. "
            "Fix the sender or change the field's rule in the rules file"
        )

    def _heads(self, table: pa.Table, inp: str, used: set[str], counting: cf.Future) -> str:
        """:meth:`_stage_heads`, run while ``counting`` (:func:`distinct_edits`) tells whether
        the scalar HLC key is exact; in the rare batch where it is not, run again with the full key."""
        h = self._stage_heads(table, inp, used, unique_hlcs=True)
        if counting.result()[1] or self._order.numeric:  # numeric: the first pass used the full key
            return h
        return self._stage_heads(table, inp, used, unique_hlcs=False)

    def _stage_heads(self, table: pa.Table, inp: str, used: set[str], *, unique_hlcs: bool) -> str:
        """Every rule but counter: each node's best edit in the batch (validated in the same pass).

        Grouped by key and node only: the rule is a function of the key, so it is computed
        per group rather than carried as one more group column. The pass returns the row
        number of each head and its edit is taken from the batch in Arrow: much cheaper
        than carrying the strings through DuckDB's aggregate states and back."""
        rule = rule_sql(self.rules)
        arg = self._order.arg(rule, unique_hlcs=unique_hlcs)
        check = _checks(used, rule).get("heads")
        extra = [f"max({sql}) AS {name}" for name, sql in self._order.parts(rule)]
        extra += [f"count_if({check[0]}) AS bad"] if check else []
        found = self.con.execute(
            f"SELECT {', '.join([f'arg_max(_row, {arg}) AS _row', f'{rule} AS rule', *extra])} "
            f"FROM {inp} WHERE {rule} <> {_COUNTER} GROUP BY {_K}, node_id"
        ).to_arrow_table()
        # Taking rows in batch order reads the batch's columns front to back (several times faster).
        found = found.take(pa.array(np.argsort(found["_row"].to_numpy())))
        edit = table.take(found["_row"])
        heads = {c: edit[c] for c in (*KEY_COLUMNS, "node_id")}
        heads |= {c: found[c] for c in ("rule", *(name for name, _ in self._order.parts(rule)))}
        heads |= {c: edit[c] for c in ("hlc", "value", "origin")}
        heads = pa.table(heads | ({"bad": found["bad"]} if check else {}))
        # Only the semi-joins against stored rows read the heads in SQL.
        return self._register("h", heads) if self._filled else self._keep("h", heads)

    def _all_heads(self, h: str, s: str) -> tuple[str, str, str]:
        """Every node's head of the touched fields, the batch's merged with the stored ones.

        A stored head is where the last merge left it: the state row (picking rules: the
        winner's head), a conflict's loser, or a contributions ``head`` row (a loser with the
        winning value; every head of set_union/custom fields; any head of an older layout).
        Returns (heads, the touched conflicts, the touched contributions heads).
        """
        x = self._touched(
            "x",
            self.conflicts,
            f"SELECT x.* FROM {self.conflicts} x WHERE EXISTS (SELECT 1 FROM {h} k WHERE {_on('k', 'x')})",
        )
        c = self._touched(
            "ch",
            self.contributions,
            f"SELECT c.* FROM {self.contributions} c WHERE c.kind = 'head' "
            f"AND EXISTS (SELECT 1 FROM {h} k WHERE {_on('k', 'c')})",
        )
        if not (self._n(x) or self._n(c) or self._n(s)):
            return h, x, c
        stored = (
            f"SELECT {_K}, node_id, hlc, value, origin FROM {c} UNION ALL "
            f"SELECT {_K}, loser_node_id, loser_hlc, loser_value, loser_origin FROM {x} UNION ALL "
            f"SELECT {_K}, node_id, hlc, value, origin FROM {s} WHERE rule IN {_PICKING}"
        )
        # Stored heads are ordered under the field's current rule, like the batch's.
        ruled = f"SELECT *, {rule_sql(self.rules)} AS rule FROM ({stored})"
        parts = "".join(f", {sql} AS {name}" for name, sql in self._order.parts("rule"))
        batch = self._tables[h].drop_columns([c for c in ("bad",) if c in self._tables[h].column_names])
        old = self.con.execute(
            f"SELECT {_K}, node_id, rule{parts}, hlc, value, origin FROM ({ruled}) WHERE rule <> {_COUNTER}"
        ).to_arrow_table()
        both = pa.concat_tables([batch, old.cast(batch.schema)])
        # Each node's greatest head under the order (p, n, hlc, value, origin).
        order = [*_order_columns(both), text_ranks(both["value"]), text_ranks(both["origin"])]
        best = best_per_key(key_codes(both, (*KEY_COLUMNS, "node_id")), order)
        return self._register("heads", both.filter(pa.array(best == np.arange(both.num_rows)))), x, c

    def _winners(self, ruled: str, heads: str, s: str) -> tuple[pa.Table, pa.Table, pa.Table]:
        """From every node's head of the touched fields (counters aside): the new state rows,
        the conflicts, and the heads the contributions table keeps.

        Each head is put beside its field's winner (the greatest head under the rule's order;
        for set_union/custom the value is the union/fold of all values, stamped with the
        latest head), then the three results are vectorized filters: the winner's own row is
        the state row; a head whose value differs from the state value lost (a conflict,
        never for set_union); a picking loser with the winning value, and every
        set_union/custom head, is kept in contributions (conflicts and state hold the rest).
        """
        t = self._tables[heads]
        cols = {c: t[c] for c in (*KEY_COLUMNS, "node_id", "rule", "hlc", "value", "origin")}
        # The rule's order (p, n, hlc, node_id); the node is unique among a field's heads.
        order = _order_columns(t)
        cols |= {f"_order{i}": column for i, column in enumerate(order)}
        hw = pa.table(cols)
        used = rules_used(self.rules)
        if any(rule_kind(u).folds for u in used):
            combined = self._combined(ruled, s).rename_columns([*KEY_COLUMNS, "_combined"])
            hw = hw.join(combined, keys=list(KEY_COLUMNS), join_type="left outer")
        nodes = hw["node_id"]
        # Node ranks only break HLC ties, so they are computed for the tied heads alone.
        w = best_per_key(
            key_codes(hw, KEY_COLUMNS),
            [
                *(hw[f"_order{i}"].to_numpy() for i in range(len(order))),
                lambda rows: text_ranks(nodes.take(pa.array(rows))),
            ],
        )
        win = pa.array(w == np.arange(hw.num_rows))
        w_value = hw["value"].take(pa.array(w))
        # Without set_union/custom fields every head is under a picking rule.
        picking = None
        if "_combined" in hw.column_names:
            picking = pc.is_in(hw["rule"], value_set=_PICKING_NAMES)
            w_value = pc.if_else(picking, w_value, hw["_combined"])
        same = pc.equal(hw["value"], w_value)
        state = _where(
            hw, win, {"value": w_value, **{c: hw[c] for c in ("hlc", "node_id", "origin", "rule")}}
        )
        lost = pc.fill_null(pc.invert(same), False)
        if used.intersection(_LOSE_NOTHING):
            lost = pc.and_(
                lost, pc.invert(pc.is_in(hw["rule"], value_set=pa.array(_LOSE_NOTHING, pa.string())))
            )
        loser = {f"loser_{c}": hw[c] for c in ("value", "hlc", "node_id", "origin")}
        conflicts = _where(hw, lost, {"rule": hw["rule"], **loser, "winner_value": w_value})
        # The winner's stamp is only needed on the (few) conflict rows.
        lost_winners = pa.array(w[lost.to_numpy(zero_copy_only=False)])
        for c in ("hlc", "node_id", "origin"):
            conflicts = conflicts.append_column(f"winner_{c}", hw[c].take(lost_winners))
        keep = pc.and_(pc.invert(win), same)
        if picking is not None:
            keep = pc.or_(pc.invert(picking), keep)
        kept = _where(hw, keep, {c: hw[c] for c in ("node_id", "hlc", "value", "origin")})
        kept = kept.append_column("kind", pa.array(["head"] * kept.num_rows, pa.string()))
        kept = kept.append_column("rule", hw["rule"].filter(keep))
        return state.cast(STATE_ROW), conflicts, kept

    def _combined(self, ruled: str, s: str) -> pa.Table:
        """set_union and custom values: union/fold of the state value and the incoming values, in Python."""
        v = self._stage(
            "v",
            f"SELECT {_K}, rule, list(DISTINCT value) AS vals FROM {ruled} WHERE {_FOLDED} GROUP BY ALL",
        )
        rows = self.con.execute(
            f"SELECT v.*, s.value FROM {v} v LEFT JOIN {s} s ON {_on('v', 's')} AND s.rule = v.rule"
        ).fetchall()
        out: dict[str, list] = {c: [] for c in (*KEY_COLUMNS, "value")}
        for row in rows:
            *key, rule, vals, existing = row
            values = [*vals, *([existing] if existing is not None else [])]
            where = f"{key[2]}.{key[4]} key {key[3]!r} ({rule})"
            value = (
                set_union_value(values, where)
                if rule == SET_UNION.name
                else custom_value(rule, values, where, self.rules)
            )
            for col, x in zip(KEY_COLUMNS, key, strict=True):
                out[col].append(x)
            out["value"].append(value)
        return pa.table({k: pa.array(x, pa.string()) for k, x in out.items()})

    def _stage_increments(self, ruled: str, check: tuple[str, str] | None) -> str:
        """Counter: the batch's distinct increments (validated in the same pass)."""
        bad = f", count_if({check[0]}) AS bad" if check else ""
        return self._stage(
            "c",
            f"SELECT {_K}, node_id, hlc, max(struct_pack(value := value, origin := origin)) AS vo{bad} "
            f"FROM {ruled} WHERE rule = {_COUNTER} GROUP BY ALL",
        )

    def _counters(self, ci: str) -> str:
        """Counter: upsert distinct increments; returns the query summing them per field."""
        c = self.contributions
        ident = (*KEY_COLUMNS, "node_id", "hlc")
        self._rows(
            f"DELETE FROM {c} c WHERE c.kind = 'increment' AND EXISTS (SELECT 1 FROM {ci} x "
            f"WHERE {_on('x', 'c', ident)} AND x.vo > struct_pack(value := c.value, origin := c.origin))"
        )
        self._rows(
            f"INSERT INTO {c} SELECT {_K}, node_id, hlc, vo.value, vo.origin, 'increment', {_COUNTER} FROM {ci} x "
            f"WHERE NOT EXISTS (SELECT 1 FROM {c} c WHERE c.kind = 'increment' AND {_on('x', 'c', ident)})"
        )
        latest = "max(struct_pack(hlc := hlc, node_id := node_id, value := value, origin := origin))"
        return (
            f"SELECT {_K}, CAST(sum(CAST(value AS HUGEINT)) AS VARCHAR) AS value, {latest}.hlc AS hlc, "
            f"{latest}.node_id AS node_id, {latest}.origin AS origin, {_COUNTER} AS rule FROM {c} c WHERE c.kind = 'increment' "
            f"AND EXISTS (SELECT 1 FROM {ci} x WHERE {_on('x', 'c')}) GROUP BY ALL"
        )


def _count_distinct(table: pa.Table, key: tuple[str, ...]) -> cf.Future:
    """:func:`distinct_edits` of a batch, for big batches in a thread of its own: numpy's sort and
    DuckDB's heads pass both release the GIL, so they overlap. Small batches count here: a
    thread would cost more than it saves."""
    if table.num_rows < _BACKGROUND_ROWS:
        done: cf.Future = cf.Future()
        done.set_result(distinct_edits(table, key))
        return done
    pool = cf.ThreadPoolExecutor(1, thread_name_prefix="merge-count")
    try:
        return pool.submit(distinct_edits, table, key)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one task
