"""The ``devices`` table as the inventory: fold claims in, list and show devices.

``fold_claims`` reads the current row of every claimed device (one query), resolves each
with ``claims.resolve`` and rewrites only the rows whose inventory fields changed (delete +
insert, the way the ingest updates ``devices``), keeping what the ingest keeps (reported
version, last batch) as it is.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from edgeplat.inventory.claims import DeviceClaim, resolve
from edgeplat.lake_files import conform, insert_rows
from edgeplat.lakehouse_schema import TABLES

INVENTORY_FIELDS = ("platform", "tags", "connectivity", "last_seen", "sources", "conflicts")


@dataclass
class FoldReport:
    """What one fold did: devices claimed, new rows, rows changed, devices with conflicts, claims by source."""

    claimed: int = 0
    new: int = 0
    changed: int = 0
    conflicted: list[str] = field(default_factory=list)
    by_source: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "new": self.new,
            "changed": self.changed,
            "conflicts": len(self.conflicted),
            "conflicted": self.conflicted[:50],
            "by_source": dict(sorted(self.by_source.items())),
        }


def latest_rows(con: duckdb.DuckDBPyConnection, keys: pa.Table | None = None) -> dict[tuple[str, str], dict]:
    """The latest ``devices`` row per (tenant, device), for ``keys`` (tenant_id, device_id) or all."""
    where = ""
    if keys is not None:
        con.register("_inv_keys", keys)
        where = "WHERE (tenant_id, device_id) IN (SELECT (tenant_id, device_id) FROM _inv_keys)"
    try:
        tbl = con.execute(
            f"""SELECT * FROM devices {where} QUALIFY row_number() OVER (
                    PARTITION BY tenant_id, device_id ORDER BY updated_at DESC NULLS LAST) = 1"""
        ).fetch_arrow_table()
    finally:
        if keys is not None:
            con.unregister("_inv_keys")
    return {(r["tenant_id"], r["device_id"]): r for r in tbl.to_pylist()}


def fold_claims(con: duckdb.DuckDBPyConnection, claims: Iterable[DeviceClaim], now: datetime) -> FoldReport:
    """Resolve ``claims`` against the stored rows and write the rows that changed (see module doc)."""
    by_key: dict[tuple[str, str], list[DeviceClaim]] = defaultdict(list)
    report = FoldReport()
    for c in claims:
        by_key[c.key].append(c)
        report.by_source[c.source] = report.by_source.get(c.source, 0) + 1
    report.claimed = len(by_key)
    if not by_key:
        return report
    keys = pa.table({"tenant_id": [k[0] for k in by_key], "device_id": [k[1] for k in by_key]})
    rows = latest_rows(con, keys)
    out = []
    for key, cs in by_key.items():
        row = rows.get(key)
        fields = resolve(row, cs).columns()
        if fields["conflicts"]:
            report.conflicted.append(f"{key[0]}/{key[1]}")
        if row is not None and all(_same(row.get(f), fields[f]) for f in INVENTORY_FIELDS):
            continue
        base = dict(row) if row is not None else {c: None for c, _ in TABLES["devices"].columns}
        if row is None:
            report.new += 1
            base.update(tenant_id=key[0], device_id=key[1], registered_at=now, status="unknown")
        else:
            report.changed += 1
        base.update(fields, updated_at=now)
        out.append(base)
    if out:
        _replace(con, out)
    return report


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, datetime) and isinstance(b, datetime):
        return a == b
    if isinstance(a, str) and isinstance(b, str) and a[:1] in "[{":
        try:
            return json.loads(a) == json.loads(b)
        except ValueError:
            return a == b
    return a == b


def _replace(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> None:
    table = TABLES["devices"]
    names = [c for c, _ in table.columns]
    tbl = conform(pa.Table.from_pylist([{n: r.get(n) for n in names} for r in rows]), table)
    con.register("_inv_rows", tbl)
    try:
        con.execute(
            "DELETE FROM devices WHERE (tenant_id, device_id) IN (SELECT (tenant_id, device_id) FROM _inv_rows)"
        )
    finally:
        con.unregister("_inv_rows")
    insert_rows(con, "devices", tbl)


def list_devices(
    con: duckdb.DuckDBPyConnection,
    *,
    tenant: str | None = None,
    platform: str | None = None,
    conflicts_only: bool = False,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Devices (latest row each), filtered; for ``edgeplat device list``."""
    where, params = ["TRUE"], []
    if tenant:
        where.append("tenant_id = ?")
        params.append(tenant)
    if platform:
        where.append("platform = ?")
        params.append(platform)
    if conflicts_only:
        where.append("conflicts IS NOT NULL")
    return (
        con.execute(
            f"""SELECT tenant_id, device_id, platform, tags, connectivity, last_seen, status, reported_version,
                       platform_version, platform_state, conflicts
                FROM devices WHERE {" AND ".join(where)}
                QUALIFY row_number() OVER (PARTITION BY tenant_id, device_id ORDER BY updated_at DESC NULLS LAST) = 1
                ORDER BY tenant_id, device_id LIMIT {int(limit)}""",
            params,
        )
        .fetch_arrow_table()
        .to_pylist()
    )


def show_device(con: duckdb.DuckDBPyConnection, tenant: str, device: str) -> dict[str, Any] | None:
    """Every column of one device's latest row, JSON fields decoded."""
    keys = pa.table({"tenant_id": [tenant], "device_id": [device]})
    row = latest_rows(con, keys).get((tenant, device))
    if row is None:
        return None
    for name in ("tags", "sources", "conflicts"):
        if row.get(name):
            row[name] = json.loads(row[name])
    return row
