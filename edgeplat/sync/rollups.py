"""Fleet tables derived from ingested rows: the hourly ``device_health`` rollup.

``devices`` itself is maintained by the ingest (last batch, reported version/slot, online)
and by reconciliation (offline); this module rolls health rows up per device and hour.
The rollup recomputes whole hours, so re-running it gives the same table.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb

from edgeplat.lakehouse import retried

ROLLUP_SQL = """
SELECT tenant_id, device_id, date_trunc('hour', ts) AS hour, arg_max(version, hlc) AS version,
       count(*) AS samples, avg(error_rate) AS error_rate, max(crash_count) AS crash_count,
       avg(cpu_pct) AS cpu_pct, avg(mem_mb) AS mem_mb, count(heartbeat) AS heartbeats
FROM health h
WHERE EXISTS (SELECT 1 FROM _hours x WHERE x.tenant_id = h.tenant_id AND x.device_id = h.device_id
              AND x.hour = date_trunc('hour', h.ts))
GROUP BY ALL
"""


def roll_up_health(
    con: duckdb.DuckDBPyConnection, *, since: datetime | None = None, now: datetime | None = None
) -> int:
    """Recompute ``device_health`` for every (device, hour) with health rows ingested since ``since``
    (default: the last 24 hours; pass ``datetime.min`` for everything). Returns hours rewritten."""
    now = now or datetime.now(UTC)
    since = since or now - timedelta(days=1)

    def unit(c: duckdb.DuckDBPyConnection) -> int:
        hours = c.execute(
            "SELECT DISTINCT tenant_id, device_id, date_trunc('hour', ts) AS hour FROM health "
            "WHERE ingested_at >= ?",
            [since],
        ).to_arrow_table()
        if hours.num_rows == 0:
            return 0
        c.register("_hours", hours)
        try:
            fresh = c.execute(ROLLUP_SQL).to_arrow_table()
            c.execute(
                "DELETE FROM device_health d WHERE EXISTS (SELECT 1 FROM _hours x WHERE x.tenant_id = d.tenant_id "
                "AND x.device_id = d.device_id AND x.hour = d.hour)"
            )
            c.register("_fresh", fresh)
            cols = ", ".join(fresh.column_names)
            c.execute(f"INSERT INTO device_health ({cols}) SELECT {cols} FROM _fresh")
            c.unregister("_fresh")
        finally:
            c.unregister("_hours")
        return hours.num_rows

    return retried(con, unit, what="device_health rollup")
