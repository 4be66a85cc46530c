"""Fleet status from the lakehouse tables: plain SQL, no Dagster.

Used by the ``fleet_status`` asset, ``edgeplat fleet status`` and the demo summary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import duckdb


@dataclass
class FleetStatus:
    """A snapshot of the fleet: how many devices, where, on what, how far behind."""

    devices: int = 0
    tenants: int = 0
    online: int = 0
    offline: int = 0
    unknown: int = 0
    by_platform: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    max_sync_lag_s: float | None = None
    queue_depth: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def fleet_status(con: duckdb.DuckDBPyConnection, tenant_id: str | None = None) -> FleetStatus:
    where = "WHERE tenant_id = $tenant" if tenant_id else ""
    params = {"tenant": tenant_id} if tenant_id else {}
    row = con.execute(
        f"""
        SELECT count(*), count(DISTINCT tenant_id),
               count(*) FILTER (WHERE status = 'online'),
               count(*) FILTER (WHERE status = 'offline'),
               count(*) FILTER (WHERE status IS NULL OR status NOT IN ('online', 'offline')),
               max(epoch(now() - last_batch_at))
        FROM devices {where}
        """,
        params,
    ).fetchone()
    status = FleetStatus(
        devices=row[0], tenants=row[1], online=row[2], offline=row[3], unknown=row[4], max_sync_lag_s=row[5]
    )
    status.by_platform = dict(
        con.execute(
            f"SELECT coalesce(platform, 'unknown'), count(*) FROM devices {where} GROUP BY 1 ORDER BY 1",
            params,
        ).fetchall()
    )
    status.versions = dict(
        con.execute(
            f"SELECT coalesce(reported_version, 'unknown'), count(*) FROM devices {where} GROUP BY 1 ORDER BY 2 DESC, 1",
            params,
        ).fetchall()
    )
    depth = con.execute(
        f"""
        SELECT sum(queue_depth) FROM (
            SELECT arg_max(queue_depth, hlc) AS queue_depth FROM health {where} GROUP BY tenant_id, device_id
        )
        """,
        params,
    ).fetchone()[0]
    status.queue_depth = int(depth or 0)
    return status
