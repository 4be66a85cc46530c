"""The analysts' named SQL views in the lakehouse, created idempotently (``CREATE OR REPLACE``).

DuckLake stores views in its catalog, so every session that attaches the lakehouse (the
``edgeplat sql`` CLI, a plain ``duckdb`` shell with ``ATTACH 'ducklake:sqlite:<catalog>'``)
sees them. Views read the base tables at query time: they never go stale.

From a plain ``duckdb`` shell (local default; extensions from the pip packages, as
edge_sync.duck loads them, or ``INSTALL ducklake; INSTALL sqlite;`` where downloads are allowed)::

    ATTACH 'ducklake:sqlite:.edgeplat/lakehouse/catalog.sqlite' AS lake
        (DATA_PATH '.edgeplat/lakehouse/data/', READ_ONLY);
    USE lake;

Five useful queries::

    -- hourly averages of one metric across a tenant's fleet
    SELECT hour, avg(avg_value) FROM telemetry_hourly WHERE tenant_id = 't1' AND metric = 'cpu_pct'
    GROUP BY 1 ORDER BY 1;
    -- devices not heard from for 30 minutes
    SELECT * FROM device_last_seen WHERE last_batch_at < now() - INTERVAL 30 MINUTE;
    -- the streams furthest behind
    SELECT * FROM sync_lag ORDER BY lag_seconds DESC LIMIT 20;
    -- why batches were rejected, per tenant
    SELECT * FROM quarantine_summary ORDER BY objects DESC;
    -- state conflicts of the last day, by rule
    SELECT rule, count(*) FROM conflicts_recent WHERE detected_at > now() - INTERVAL 1 DAY GROUP BY 1;
"""

from __future__ import annotations

import duckdb

from edgeplat.lakehouse import retried

VIEWS: dict[str, str] = {
    # Telemetry per device, metric and hour.
    "telemetry_hourly": """
        SELECT tenant_id, device_id, metric, date_trunc('hour', ts) AS hour, count(*) AS samples,
               avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value
        FROM telemetry GROUP BY ALL""",
    # When each device was last heard from (central ingest time) and its newest row (device HLC time).
    "device_last_seen": """
        SELECT b.tenant_id, b.device_id, max(b.ingested_at) AS last_batch_at,
               make_timestamp(max(b.hlc_max) // 65536 * 1000) AS newest_row_at, count(*) AS batches,
               any_value(d.status) AS status, any_value(d.reported_version) AS reported_version
        FROM batches b LEFT JOIN devices d USING (tenant_id, device_id) GROUP BY ALL""",
    # How far behind each device's streams are: now minus the newest row's HLC time, and upload delay.
    "sync_lag": """
        SELECT tenant_id, device_id, stream, max(ingested_at) AS last_ingested_at,
               make_timestamp(max(hlc_max) // 65536 * 1000) AS newest_row_at,
               epoch(now()) - max(hlc_max) // 65536 / 1000.0 AS lag_seconds,
               max(last_seq) AS last_seq
        FROM batches WHERE hlc_max IS NOT NULL GROUP BY ALL""",
    # Rejected objects per tenant and reason; deferred ones still pending are counted apart.
    "quarantine_summary": """
        SELECT tenant_id, reason, count(*) AS objects, sum(object_size) AS bytes,
               count(*) FILTER (WHERE deferred AND resolved_at IS NULL) AS pending_deferred,
               min(quarantined_at) AS first_at, max(quarantined_at) AS last_at
        FROM quarantine GROUP BY ALL""",
    # State conflicts of the last 7 days, newest first.
    "conflicts_recent": """
        SELECT tenant_id, device_id, namespace, key, field, rule, winner_value, winner_origin,
               winner_node_id, loser_value, loser_origin, loser_node_id,
               make_timestamp(detected_ms * 1000) AS detected_at
        FROM state_conflicts
        WHERE detected_ms >= (epoch_ms(now()) - 7 * 86400 * 1000)
        ORDER BY detected_ms DESC""",
}


def create_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create or replace every view; returns their names. Idempotent."""

    def unit(c: duckdb.DuckDBPyConnection) -> list[str]:
        for name, sql in VIEWS.items():
            c.execute(f'CREATE OR REPLACE VIEW "{name}" AS {sql}')
        return list(VIEWS)

    return retried(con, unit, what="views")
