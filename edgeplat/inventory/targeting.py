"""Why a rollout spec selects no device: the filter that emptied the target.

Rollouts target the ``devices`` table (``cohorts.target_filter``): tenants, then platforms,
then each tag. ``empty_target_reason`` applies them one at a time and names the first that
leaves nothing, with what the inventory holds instead, so an operator sees "platform
['greengrass'] matches none of the 120 devices of tenant acme (platforms there: iot_edge 80,
NULL 40)" rather than a rollout that silently never deploys.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

LATEST = """(SELECT * FROM devices QUALIFY row_number() OVER (
                PARTITION BY tenant_id, device_id ORDER BY updated_at DESC NULLS LAST) = 1)"""


def empty_target_reason(con: duckdb.DuckDBPyConnection, spec: Any) -> str | None:
    """None when the spec selects at least one device, else which filter emptied it and why."""
    tenants, platforms = list(spec.target.tenants), list(spec.platforms)
    where = ["tenant_id IN (SELECT unnest(?::VARCHAR[]))"]
    params: list[Any] = [tenants]
    if _count(con, where, params) == 0:
        known = con.execute(f"SELECT DISTINCT tenant_id FROM {LATEST} ORDER BY 1 LIMIT 20").fetchall()
        return (
            f"target.tenants {tenants} has no device in the inventory (tenants there: "
            f"{[t for (t,) in known] or 'none'}); import devices with the device_inventory asset or "
            "`edgeplat device register`"
        )
    before = _count(con, where, params)
    where.append("platform IN (SELECT unnest(?::VARCHAR[]))")
    params.append(platforms)
    if _count(con, where, params) == 0:
        seen = _spread(con, "coalesce(platform, 'NULL')", where[:1], params[:1])
        return (
            f"platforms {platforms} (the release's artifacts) match none of the {before} devices of tenants "
            f"{tenants} (platforms there: {seen}); devices with platform NULL need `edgeplat device register "
            "--platform` or a platform import"
        )
    for tag, value in sorted(spec.target.tags.items()):
        values = [value] if isinstance(value, str) else list(value)
        before = _count(con, where, params)
        where.append("json_extract_string(tags, ?) IN (SELECT unnest(?::VARCHAR[]))")
        params += ["$." + json.dumps(tag), values]
        if _count(con, where, params) == 0:
            seen = _spread(
                con, "coalesce(json_extract_string(tags, ?), 'unset')", where[:-1], params[:-2], tag
            )
            return f"tag {tag} in {values} matches none of the {before} devices left (values there: {seen})"
    return None


def _count(con: duckdb.DuckDBPyConnection, where: list[str], params: list[Any]) -> int:
    return con.execute(f"SELECT count(*) FROM {LATEST} d WHERE {' AND '.join(where)}", params).fetchone()[0]


def _spread(
    con: duckdb.DuckDBPyConnection, expr: str, where: list[str], params: list[Any], tag: str | None = None
) -> str:
    args = (["$." + json.dumps(tag)] if tag is not None else []) + params
    rows = con.execute(
        f"SELECT {expr} AS v, count(*) FROM {LATEST} d WHERE {' AND '.join(where)} GROUP BY 1 ORDER BY 2 DESC LIMIT 8",
        args,
    ).fetchall()
    return ", ".join(f"{v} {n}" for v, n in rows) or "none"
