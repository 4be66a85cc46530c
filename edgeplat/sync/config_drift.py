"""Configuration drift: per state field, the value central wants on a device against what it reports.

*Desired* is the central side's head of a field: the best edit of a non-device origin
(``central`` from the ``edit_device_state`` job, ``gitops:<commit>`` from the repository),
read from where the merge keeps heads (the state row when it won, a conflict's loser, or
a contributions head). *Reported* is what the device itself says: its own latest edit of
the field (``state_edits``, as ingested) and the desired-state revision it reports having
applied (``health.desired_revision``). A central value reaches the device only inside its
signed desired-state document, so the document revision that carries it (``desired_records``)
is what the device must report before it holds the value.

Per field (picking rules only: ``lww``, ``max``, ``min``, ``prefer_*``; counters, unions and
custom resolvers combine values, so no single value is "desired"):

- ``accepted``: the device's own edit wins under the field's rule (``prefer_device``, or a
  newer device edit under ``lww``) and differs from the desired value. Not an error: the
  rule says the device's value stands.
- ``pending``: central's value wins and the device has not yet reported applying a document
  revision that carries it (or no document carries it yet). Since: the central edit's time.
- ``drifted``: central's value wins and the device applied it, but then edited the field
  locally (its edit is newer than its acknowledgement) and that edit lost under the rule:
  the device runs a value the platform does not accept. Since: first seen.
- converged fields have no row: drift is cleared when the device reports the desired value
  (having applied it, or by its own edit made after it last applied a document).

``reported_value`` is the device's own latest edit when that is what it holds (made after it
last applied a document), else NULL: what a merge on the device produced is not reported.

``since`` is kept across refreshes (same field, same desired edit, same status); ``age_s`` is
measured at the refresh. The revision that first carried an edit is taken as the revision
of the device's document when a refresh first saw the edit there (kept in the row): a
refresh that runs between two publications sees the exact revision; otherwise the device
must reach a later one, so a value is reported pending longer, never converged too early.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from edge_sync.rules import RULES
from edgeplat.lakehouse import Lakehouse

TABLE = "device_config_drift"
ACCEPTED, PENDING, DRIFTED = "accepted", "pending", "drifted"
STATUSES = (PENDING, DRIFTED, ACCEPTED)
DEVICE_ORIGIN = "device"

_PICKING = ", ".join(f"'{r.name}'" for r in RULES.values() if r.picks)
_KEY = "tenant_id, device_id, namespace, key, field"
_K = ("tenant_id", "device_id", "namespace", "key", "field")

COLUMNS = [
    "tenant_id",
    "device_id",
    "namespace",
    "key",
    "field",
    "rule",
    "status",
    "desired_value",
    "desired_hlc",
    "desired_origin",
    "reported_value",
    "reported_hlc",
    "desired_revision",
    "reported_revision",
    "since",
    "age_s",
    "computed_at",
]

# Each step reads only small aggregates: heads per field, one row per device's desired record,
# health reduced to (device, revision) before it meets the fields.
_DRIFT_SQL = f"""
WITH st AS (SELECT * FROM device_state WHERE rule IN ({_PICKING})),
heads AS (
    SELECT {_KEY}, value, hlc, origin FROM st WHERE origin <> '{DEVICE_ORIGIN}'
    UNION ALL
    SELECT {_KEY}, loser_value, loser_hlc, loser_origin FROM state_conflicts
    WHERE loser_origin <> '{DEVICE_ORIGIN}'
    UNION ALL
    SELECT {_KEY}, value, hlc, origin FROM state_contributions
    WHERE kind = 'head' AND origin <> '{DEVICE_ORIGIN}'),
desired AS (
    SELECT {_KEY}, arg_max(value, hlc) AS value, max(hlc) AS hlc, arg_max(origin, hlc) AS origin
    FROM heads GROUP BY ALL),
own AS (
    SELECT {_KEY}, arg_max(value, hlc) AS value, max(hlc) AS hlc
    FROM state_edits WHERE origin = '{DEVICE_ORIGIN}' GROUP BY ALL),
docs AS (
    SELECT tenant_id, device_id, max(revision) AS revision,
           arg_max(document, revision) AS document
    FROM desired_records GROUP BY ALL),
carried AS (
    SELECT tenant_id, device_id, revision, e.namespace, e.key, e.field, e.hlc
    FROM (SELECT tenant_id, device_id, revision,
                 unnest(from_json(json_extract(document, '$.document.state_edits'),
                        '[{{"namespace": "VARCHAR", "key": "VARCHAR", "field": "VARCHAR", "hlc": "BIGINT"}}]'))
                 AS e
          FROM docs)),
acks AS (
    -- per device and revision it reported: the first HLC at which it reported that revision or a later one
    SELECT tenant_id, device_id, revision,
           min(hlc) OVER (PARTITION BY tenant_id, device_id ORDER BY revision DESC
                          ROWS UNBOUNDED PRECEDING) AS hlc,
           max(revision) OVER (PARTITION BY tenant_id, device_id) AS latest
    FROM (SELECT tenant_id, device_id, desired_revision AS revision, min(hlc) AS hlc
          FROM health WHERE desired_revision IS NOT NULL GROUP BY ALL)),
latest AS (SELECT tenant_id, device_id, revision AS latest, hlc AS latest_hlc FROM acks WHERE revision = latest),
fields AS (
    SELECT s.tenant_id, s.device_id, s.namespace, s.key, s.field, s.rule,
           s.value AS merged_value, s.origin AS merged_origin,
           d.value AS desired_value, d.hlc AS desired_hlc, d.origin AS desired_origin,
           o.value AS own_value, o.hlc AS own_hlc,
           CASE WHEN p.desired_hlc = d.hlc AND p.desired_revision IS NOT NULL
                THEN least(p.desired_revision, c.revision) ELSE c.revision END AS desired_revision
    FROM st s
    JOIN desired d USING ({_KEY})
    LEFT JOIN own o USING ({_KEY})
    LEFT JOIN carried c ON c.tenant_id = s.tenant_id AND c.device_id = s.device_id
         AND c.namespace = s.namespace AND c.key = s.key AND c.field = s.field AND c.hlc = d.hlc
    LEFT JOIN _previous p USING ({_KEY})),
acked AS (
    SELECT f.*, a.hlc AS ack_hlc, l.latest AS reported_revision,
           -- the device's own edit is what it holds when made after it last applied a document
           coalesce(f.own_hlc > coalesce(l.latest_hlc, -1), false) AS holds_own
    FROM fields f
    LEFT JOIN latest l ON l.tenant_id = f.tenant_id AND l.device_id = f.device_id
    ASOF LEFT JOIN acks a ON a.tenant_id = f.tenant_id AND a.device_id = f.device_id
         AND a.revision >= f.desired_revision),
judged AS (
    SELECT *,
        CASE
            WHEN merged_origin = '{DEVICE_ORIGIN}' THEN
                CASE WHEN merged_value IS DISTINCT FROM desired_value THEN '{ACCEPTED}' END
            WHEN holds_own AND own_value = desired_value THEN NULL
            WHEN ack_hlc IS NULL THEN '{PENDING}'
            WHEN own_hlc > ack_hlc AND own_value IS DISTINCT FROM desired_value THEN '{DRIFTED}'
        END AS status
    FROM acked)
SELECT j.tenant_id, j.device_id, j.namespace, j.key, j.field, j.rule, j.status,
       j.desired_value, j.desired_hlc, j.desired_origin,
       CASE WHEN j.status = '{ACCEPTED}' THEN j.merged_value WHEN j.holds_own THEN j.own_value END
           AS reported_value,
       CASE WHEN j.status = '{ACCEPTED}' OR j.holds_own THEN j.own_hlc END AS reported_hlc,
       j.desired_revision, j.reported_revision,
       CASE
           WHEN p.status = j.status AND p.desired_hlc = j.desired_hlc THEN p.since
           WHEN j.status = '{PENDING}' THEN least(CAST($now AS TIMESTAMPTZ),
                make_timestamp((j.desired_hlc >> 16) * 1000))
           ELSE CAST($now AS TIMESTAMPTZ)
       END AS since
FROM judged j LEFT JOIN _previous p USING ({_KEY})
WHERE j.status IS NOT NULL
ORDER BY since, {_KEY}
"""


def compute(con: duckdb.DuckDBPyConnection, previous: pa.Table, now: datetime) -> pa.Table:
    """The drifting fields (``COLUMNS``) on the lakehouse connection ``con``; ``previous`` is the
    last refresh's table (``since`` and the first revision that carried an edit carry over)."""
    con.register("_previous", previous)
    try:
        rows = con.execute(_DRIFT_SQL, {"now": now}).to_arrow_table()
    finally:
        con.unregister("_previous")
    ages = [max(0.0, (now - s).total_seconds()) for s in rows["since"].to_pylist()]
    rows = rows.append_column("age_s", pa.array(ages, pa.float64()))
    return rows.append_column("computed_at", pa.array([now] * rows.num_rows, pa.timestamp("us", tz="UTC")))


def refresh(lake: Lakehouse, now: datetime | None = None) -> pa.Table:
    """Recompute ``device_config_drift`` whole, in one retried write; returns its new rows."""
    now = now or datetime.now(UTC)

    def unit(con: duckdb.DuckDBPyConnection) -> pa.Table:
        previous = con.execute(f"SELECT * FROM {TABLE}").to_arrow_table()
        rows = compute(con, previous, now)
        con.execute(f"DELETE FROM {TABLE}")
        if rows.num_rows:
            con.register("_drift_rows", rows)
            try:
                con.execute(
                    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM _drift_rows"
                )
            finally:
                con.unregister("_drift_rows")
        return rows

    return lake.write(unit, what="device config drift")


def counts(rows: pa.Table) -> dict[str, int]:
    """Drifting fields per status (every status present, zero when none)."""
    seen = Counter(rows["status"].to_pylist())
    return {s: seen.get(s, 0) for s in STATUSES}


def older_than(
    con: duckdb.DuckDBPyConnection, threshold_s: float, now: datetime, limit: int = 20
) -> tuple[int, list[dict]]:
    """How many fields have been ``pending`` or ``drifted`` (``accepted`` is by rule) for longer than
    ``threshold_s`` at ``now``, and the oldest ``limit`` of them."""
    where = (
        f"FROM {TABLE} WHERE status IN ('{PENDING}', '{DRIFTED}') "
        "AND since <= CAST($now AS TIMESTAMPTZ) - to_seconds($threshold)"
    )
    params = {"now": now, "threshold": float(threshold_s)}
    (total,) = con.execute(f"SELECT count(*) {where}", params).fetchone()
    cur = con.execute(
        f"SELECT {_KEY}, status, desired_value, reported_value, strftime(since, '%Y-%m-%dT%H:%M:%S%z') AS since, "
        f"round(epoch(CAST($now AS TIMESTAMPTZ)) - epoch(since), 1) AS age_s {where} "
        f"ORDER BY since, {_KEY} LIMIT {int(limit)}",
        params,
    )
    names = [d[0] for d in cur.description]
    return int(total), [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def summary(rows: pa.Table, limit: int = 200) -> dict[str, Any]:
    """A drift summary for people (the GitOps write-back): counts per status and tenant, and the
    oldest fields. Holds no refresh time or age, so it changes only when the drift does."""
    per_tenant: dict[str, Counter] = {}
    for t, s in zip(rows["tenant_id"].to_pylist(), rows["status"].to_pylist(), strict=True):
        per_tenant.setdefault(t, Counter())[s] += 1
    fields = sorted(
        rows.select(
            [*_K, "status", "rule", "desired_value", "reported_value", "desired_origin", "since"]
        ).to_pylist(),
        key=lambda r: (r["since"], *(r[k] for k in _K)),
    )
    return {
        "format": 1,
        "counts": counts(rows),
        "tenants": {t: {s: c.get(s, 0) for s in STATUSES} for t, c in sorted(per_tenant.items())},
        "fields": [{**r, "since": r["since"].isoformat()} for r in fields[:limit]],
        "fields_left_out": max(0, len(fields) - limit),
    }
