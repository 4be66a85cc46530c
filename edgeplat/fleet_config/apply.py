"""Apply a commit's ``fleet/`` tree: the changed desired values become central state edits.

The tree is parsed and checked first (``layers``, ``resolve``); a tree with any error
changes nothing and is recorded as ``invalid`` in ``fleet_config_commits`` with every error.
A valid tree is resolved against the devices inventory (tags from ``devices.tags``) and
compared with ``device_state_sources`` (what git set before):

* a value that is new or changed becomes a :class:`~edgeplat.sync.central_edits.CentralEdit`;
* a value git no longer sets (key deleted, layer removed, the device's tags no longer match)
  is withdrawn with a JSON ``null`` edit, merged by the field's rule like any edit;
* an unchanged value sends nothing (it stays traced to the commit that set it; if it now
  comes from another layer file, to the commit that made that layer its source).

The edits go through ``apply_central_edits``: the one central merge (HLC-stamped after
everything central has seen, origin ``central`` for the rules, so ``prefer_central`` and
``prefer_device`` fields behave as for any operator edit) and the desired-state downlink.
Which commit set each value is recorded beside it in ``device_state_sources`` (its
``gitops:<commit>`` origin, the layer file, the author, the edit's HLC).

Replaying a commit compares against what it already recorded and sends nothing (a crash
between the merge and that record re-sends the same values once: the merged state is the
same); a commit
older than the last applied one (a run that queued behind a newer commit's run) is skipped
as ``superseded`` so git history never moves backwards on the devices.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from edge_sync.rules import RuleSet
from edgeplat.fleet_config.layers import FleetError, parse_tree
from edgeplat.fleet_config.resolve import Source, check
from edgeplat.fleet_config.source import Commit, commit_info, is_ancestor, tree_at
from edgeplat.inventory.store import latest_rows
from edgeplat.lake_files import conform, insert_rows
from edgeplat.lakehouse import Lakehouse
from edgeplat.lakehouse_schema import TABLES
from edgeplat.rollouts.gitops import GitOpsWatcher
from edgeplat.sync.central_edits import CentralEdit, Publish, apply_central_edits
from edgeplat.sync.env import wall_ms

log = logging.getLogger(__name__)
SOURCES = "device_state_sources"
COMMITS = "fleet_config_commits"
WITHDRAWN = "null"  # the tombstone value: a field git no longer sets
RowKey = tuple[str, str, str, str, str]  # tenant, device, namespace, key, field


@dataclass
class FleetApplyResult:
    """What applying one commit did (``status``: applied, invalid or superseded)."""

    commit: str
    status: str
    errors: list[FleetError] = field(default_factory=list)
    edits: int = 0
    withdrawn: int = 0
    devices: list[str] = field(default_factory=list)
    conflicts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "status": self.status,
            "errors": [e.as_dict() for e in self.errors],
            "edits": self.edits,
            "withdrawn": self.withdrawn,
            "devices": self.devices,
            "conflicts": self.conflicts,
        }


def load_inventory(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, dict[str, Any]]]:
    """tenant -> device -> tags (``devices.tags``, a JSON object) of every device in the inventory."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (tenant, device), row in latest_rows(con).items():
        try:
            tags = json.loads(row.get("tags") or "{}")
        except ValueError:
            tags = {}
        out.setdefault(tenant, {})[device] = tags if isinstance(tags, dict) else {}
    return out


def inventory_fingerprint(inventory: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """A digest of every device's tags: it changes when a device's tags (or the devices) change,
    which re-resolves the tag layers."""
    return hashlib.sha256(json.dumps(inventory, sort_keys=True).encode()).hexdigest()


def recorded_sources(con: duckdb.DuckDBPyConnection) -> dict[RowKey, dict[str, Any]]:
    rows = con.execute(f'SELECT * FROM "{SOURCES}"').fetch_arrow_table().to_pylist()
    return {(r["tenant_id"], r["device_id"], r["namespace"], r["key"], r["field"]): r for r in rows}


def last_applied(con: duckdb.DuckDBPyConnection) -> str | None:
    row = con.execute(
        f'SELECT "commit" FROM "{COMMITS}" WHERE status = \'applied\' ORDER BY applied_at DESC LIMIT 1'
    ).fetchone()
    return row[0] if row else None


def apply_fleet_tree(
    lake: Lakehouse,
    files: Mapping[str, str],
    commit: Commit,
    rules: RuleSet,
    *,
    publish: Publish | None = None,
    is_older: Callable[[str, str], bool] | None = None,
    wall: Callable[[], int] = wall_ms,
) -> FleetApplyResult:
    """Apply the tree ``files`` (path -> text under ``fleet/``) of ``commit`` (see module doc).

    ``is_older(a, b)`` says whether commit ``a`` is an ancestor of ``b`` (git); without it
    every commit applies.
    """
    with lake.session(read_only=True) as con:
        inventory = load_inventory(con)
        previous = recorded_sources(con)
        last = last_applied(con)
    if last and last != commit.sha and is_older is not None and is_older(commit.sha, last):
        log.info("fleet-config: %s is older than the applied %s: skipped", commit.sha[:12], last[:12])
        return FleetApplyResult(commit.sha, "superseded")
    tree = parse_tree(dict(files))
    resolved = check(tree, inventory, rules)
    now = datetime.fromtimestamp(wall() / 1000, UTC)
    if tree.errors:
        result = FleetApplyResult(commit.sha, "invalid", errors=list(tree.errors))
        tenants = tree.tenants or sorted(
            {e.path.split("/")[1] for e in tree.errors if e.path.count("/") >= 2}
        )
        lake.write(
            lambda c: _record_commit(c, result, commit, tenants or [""], now), what="fleet-config commit"
        )
        for err in tree.errors:
            log.error("fleet-config %s: %s", commit.sha[:12], err)
        return result

    desired: dict[RowKey, Source] = {
        (tenant, device, *fk): src
        for tenant, devices in resolved.items()
        for device, resolution in devices.items()
        for fk, src in resolution.items()
    }
    edits: list[tuple[RowKey, str]] = []
    rows: dict[RowKey, dict[str, Any]] = {}  # sources rows to write (changed or newly attributed)
    for key, src in sorted(desired.items()):
        prev = previous.get(key)
        if prev is not None and prev["value"] == src.value:
            if (prev["path"], prev["layer_kind"]) != (src.path, src.kind.label):
                # same value from another layer now: nothing to send, the new layer's commit answers for it
                rows[key] = {
                    **_row(key, src.value, src.path, src.kind.label, commit, now),
                    "hlc": prev["hlc"],
                }
            continue
        edits.append((key, src.value))
        rows[key] = _row(key, src.value, src.path, src.kind.label, commit, now)
    gone = sorted(set(previous) - set(desired))
    edits += [(key, WITHDRAWN) for key in gone]

    central = [CentralEdit(*key, value) for key, value in edits]
    merged = apply_central_edits(lake, central, rules, publish=publish, wall=wall)
    for (key, _), hlc in zip(edits, merged.hlcs, strict=True):
        if key in rows:
            rows[key]["hlc"] = hlc
    result = FleetApplyResult(
        commit.sha,
        "applied",
        edits=len(edits) - len(gone),
        withdrawn=len(gone),
        devices=sorted({f"{k[0]}/{k[1]}" for k, _ in edits}),
        conflicts=merged.conflicts,
    )
    tenants = sorted(set(resolved) | {k[0] for k in previous}) or [""]

    def unit(con: duckdb.DuckDBPyConnection) -> None:
        _replace_sources(con, [*rows, *gone], list(rows.values()))
        _record_commit(con, result, commit, tenants, now)

    lake.write(unit, what="fleet-config sources")
    log.info("fleet-config %s: %s", commit.sha[:12], json.dumps(result.as_dict()))
    return result


def _row(key: RowKey, value: str, path: str, kind: str, commit: Commit, now: datetime) -> dict[str, Any]:
    tenant, device, ns, k, f = key
    return {
        "tenant_id": tenant,
        "device_id": device,
        "namespace": ns,
        "key": k,
        "field": f,
        "value": value,
        "hlc": None,
        "commit": commit.sha,
        "path": path,
        "layer_kind": kind,
        "author": commit.author,
        "committed_at": datetime.fromisoformat(commit.committed_at),
        "applied_at": now,
    }


def _replace_sources(con: duckdb.DuckDBPyConnection, keys: list[RowKey], rows: list[dict[str, Any]]) -> None:
    if keys:
        names = ("tenant_id", "device_id", "namespace", "key", "field")
        con.register("_fleet_keys", pa.table({n: [k[i] for k in keys] for i, n in enumerate(names)}))
        try:
            cols = ", ".join(f'"{n}"' for n in names)
            con.execute(f'DELETE FROM "{SOURCES}" WHERE ({cols}) IN (SELECT ({cols}) FROM _fleet_keys)')
        finally:
            con.unregister("_fleet_keys")
    if rows:
        insert_rows(con, SOURCES, conform(pa.Table.from_pylist(rows), TABLES[SOURCES]))


def _record_commit(
    con: duckdb.DuckDBPyConnection,
    result: FleetApplyResult,
    commit: Commit,
    tenants: list[str],
    now: datetime,
) -> None:
    rows = [
        {
            "tenant_id": tenant,
            "commit": commit.sha,
            "status": result.status,
            "edits": result.edits,
            "withdrawn": result.withdrawn,
            "devices": len(result.devices),
            "errors": json.dumps([e.as_dict() for e in result.errors]),
            "author": commit.author,
            "committed_at": datetime.fromisoformat(commit.committed_at),
            "applied_at": now,
        }
        for tenant in tenants
    ]
    insert_rows(con, COMMITS, conform(pa.Table.from_pylist(rows), TABLES[COMMITS]))


def apply_commit(
    watcher: GitOpsWatcher,
    lake: Lakehouse,
    sha: str,
    rules: RuleSet,
    *,
    publish: Publish | None = None,
    wall: Callable[[], int] = wall_ms,
) -> FleetApplyResult:
    """Fetch the GitOps clone and apply the ``fleet/`` tree of commit ``sha`` (see ``apply_fleet_tree``)."""
    watcher.fetch()
    return apply_fleet_tree(
        lake,
        tree_at(watcher, sha),
        commit_info(watcher, sha),
        rules,
        publish=publish,
        is_older=lambda a, b: is_ancestor(watcher, a, b),
        wall=wall,
    )
