"""Fleet and sync figures from the lakehouse: devices, sync lag, ingest, quarantine, conflicts.

Every figure is an aggregate over a ledger table (``devices``, ``batches``, ``quarantine``,
``state_conflicts``, ``evictions``), grouped by bounded labels. The tenant of a quarantined
object is what its key claims, which a hostile uploader chooses: tenants not otherwise known
(from devices or accepted batches) are folded into ``unknown`` so a label cannot grow without
bound. Counter series for every known (tenant, reason) start at 0, so the first quarantine of a
tenant shows as a rise to ``increase()``.
"""

from __future__ import annotations

import duckdb

from edgeplat.metrics import catalog as m
from edgeplat.metrics.catalog import Reading
from edgeplat.sync.ingest import quarantine_reasons

UNKNOWN = "unknown"
DEVICE_STATUSES = ("online", "offline", UNKNOWN)
LAG_QUANTILES = (0.5, 0.9, 0.99)


def read_fleet(con: duckdb.DuckDBPyConnection, now_s: float, *, per_device: bool = False) -> list[Reading]:
    """The fleet figures at Unix time ``now_s``; ``per_device`` adds one sync-lag series per device."""
    tenants = {
        r[0]
        for r in con.execute(
            "SELECT DISTINCT tenant_id FROM devices UNION SELECT DISTINCT tenant_id FROM batches"
        ).fetchall()
        if r[0] is not None
    }
    out = [_devices(con), *_sync_lag(con, now_s, per_device), *_ingest(con)]
    out += [_quarantine(con, tenants), _deferred(con, tenants), _conflicts(con), _evictions(con)]
    return out


def _label(value: object) -> str:
    return UNKNOWN if value is None or value == "" else str(value)


def _devices(con: duckdb.DuckDBPyConnection) -> Reading:
    r = Reading(m.DEVICES)
    rows = con.execute("SELECT tenant_id, platform, status, count(*) FROM devices GROUP BY ALL").fetchall()
    for tenant, platform, status, n in rows:
        tenant, platform = _label(tenant), _label(platform)
        for s in DEVICE_STATUSES:  # every status of a (tenant, platform) exists, 0 or not
            r.zero((tenant, platform, s))
        r.add((tenant, platform, status if status in DEVICE_STATUSES else UNKNOWN), n)
    return r


def _sync_lag(con: duckdb.DuckDBPyConnection, now_s: float, per_device: bool) -> list[Reading]:
    lag = Reading(m.SYNC_LAG)
    lag_sql = "greatest(?::DOUBLE - epoch(last_batch_at), 0)"
    rows = con.execute(
        f"SELECT tenant_id, platform, quantile_cont({lag_sql}, {list(LAG_QUANTILES)}), max({lag_sql}) "
        "FROM devices WHERE last_batch_at IS NOT NULL GROUP BY ALL",
        [now_s, now_s],
    ).fetchall()
    for tenant, platform, quantiles, worst in rows:
        for q, v in zip((*LAG_QUANTILES, 1.0), (*quantiles, worst), strict=True):
            lag.add((_label(tenant), _label(platform), f"{q:g}"), v)
    out = [lag]
    if per_device:
        each = Reading(m.DEVICE_SYNC_LAG)
        for tenant, platform, device, v in con.execute(
            f"SELECT tenant_id, platform, device_id, {lag_sql} FROM devices WHERE last_batch_at IS NOT NULL",
            [now_s],
        ).fetchall():
            each.add((_label(tenant), _label(platform), _label(device)), v)
        out.append(each)
    return out


def _ingest(con: duckdb.DuckDBPyConnection) -> list[Reading]:
    rows_, dups, batches, last = (Reading(x) for x in (m.ROWS, m.DUPLICATE_ROWS, m.BATCHES, m.LAST_INGEST))
    for tenant, stream, new, dup, n, latest in con.execute(
        "SELECT tenant_id, stream, sum(coalesce(rows_new, row_count)), sum(coalesce(rows_duplicate, 0)), "
        "count(*), max(epoch(ingested_at)) FROM batches GROUP BY ALL"
    ).fetchall():
        labels = (_label(tenant), _label(stream))
        rows_.add(labels, new or 0)
        dups.add(labels, dup or 0)
        batches.add(labels, n)
        if latest is not None:
            last.samples[labels[:1]] = max(last.samples.get(labels[:1], 0.0), float(latest))
    return [rows_, dups, batches, last]


def _quarantine(con: duckdb.DuckDBPyConnection, tenants: set[str]) -> Reading:
    r = Reading(m.QUARANTINED)
    reasons = quarantine_reasons()
    for tenant in tenants:
        for reason in reasons:
            r.zero((tenant, reason))
    for tenant, reason, n in con.execute(
        "SELECT tenant_id, reason, count(*) FROM quarantine GROUP BY ALL"
    ).fetchall():
        # reasons are written by the ingest (a closed set); anything else is folded too
        r.add((tenant if tenant in tenants else UNKNOWN, reason if reason in reasons else UNKNOWN), n)
    return r


def _deferred(con: duckdb.DuckDBPyConnection, tenants: set[str]) -> Reading:
    r = Reading(m.DEFERRED)
    for tenant in tenants:
        r.zero((tenant,))
    for tenant, n in con.execute(
        "SELECT tenant_id, count(*) FROM quarantine WHERE deferred AND resolved_at IS NULL GROUP BY ALL"
    ).fetchall():
        r.add((tenant if tenant in tenants else UNKNOWN,), n)
    return r


def _conflicts(con: duckdb.DuckDBPyConnection) -> Reading:
    r = Reading(m.CONFLICTS)
    for tenant, rule, n in con.execute(
        "SELECT tenant_id, rule, count(*) FROM state_conflicts GROUP BY ALL"
    ).fetchall():
        r.add((_label(tenant), _label(rule)), n)
    return r


def _evictions(con: duckdb.DuckDBPyConnection) -> Reading:
    r = Reading(m.EVICTED)
    for tenant, stream, reason, n in con.execute(
        'SELECT tenant_id, stream, reason, sum("count") FROM evictions GROUP BY ALL'
    ).fetchall():
        r.add((_label(tenant), _label(stream), _label(reason)), n or 0)
    return r
