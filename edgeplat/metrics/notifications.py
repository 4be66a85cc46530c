"""Notification delivery counts from the lakehouse's ``notifications`` table.

The table belongs to the alerting side (``edgeplat/alerts/engine.py`` writes one row per
delivery); the exporter only counts its rows by tenant, sink and outcome. A lakehouse whose
schema predates the table exports no notification series and says so in
``edgeplat_exporter_notifications_table_present``.
"""

from __future__ import annotations

import duckdb

from edgeplat.lakehouse import LAKE
from edgeplat.metrics import catalog as m
from edgeplat.metrics.catalog import Reading

TABLE = "notifications"


def read_notifications(con: duckdb.DuckDBPyConnection) -> list[Reading]:
    present = Reading(m.NOTIFICATIONS_TABLE)
    sent, attempts = Reading(m.NOTIFICATIONS), Reading(m.NOTIFICATION_ATTEMPTS)
    columns = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND table_name = ?",
            [LAKE, TABLE],
        ).fetchall()
    }
    present.add((), 1 if columns else 0)
    if not {"tenant_id", "sink", "outcome", "attempts"} <= columns:
        return [present, sent, attempts]
    for t, sink, outcome, n, tries in con.execute(
        f'SELECT tenant_id, sink, outcome, count(*), sum(coalesce(attempts, 0)) FROM "{TABLE}" GROUP BY ALL'
    ).fetchall():
        sent.add((str(t), str(sink), str(outcome)), n)
        attempts.add((str(t), str(sink)), tries or 0)
    return [present, sent, attempts]
