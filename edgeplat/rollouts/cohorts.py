"""SQL over the lakehouse for a rollout: its target devices, who still owes an acknowledgement,
and the per-device health aggregates of the canary and baseline cohorts the gates compare.

Cohorts:

* canary: devices this rollout deployed to, counting only their health rows *on the new
  release* inside the gate window (rows from before the update are not canary evidence);
* baseline: target devices the rollout has not deployed to, restricted to the
  (tenant, platform) strata the canary occupies, counting their rows on any other release
  in the *same* window, so fleet-wide swings (a busy hour, a network incident) hit both sides.
  At most ``BASELINE_MAX`` baseline devices are used, picked by a stable hash: beyond a few
  thousand devices the baseline rate is known far better than the canary's, and the
  promotion tick stays cheap on large fleets.

The promotion tick aggregates every active rollout's cohorts in one scan (``samples_many``);
the ``rollout_health`` asset uses the same code for one rollout (``cohort_samples``).

Health rows are raw per-report counts (``requests``/``errors``/``crash_count``/``heartbeat``
since the previous report), so per device we sum counts and average the continuous metrics.
Device-hours are ``samples * sample_seconds / 3600`` (devices report on a fixed cadence;
gaps are the heartbeat gate's business, not exposure), and each report expects one heartbeat.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa

from edgeplat.rollouts.events import RolloutState
from edgeplat.rollouts.selection import buckets
from edgeplat.rollouts.spec import RolloutSpec

DEFAULT_SAMPLE_SECONDS = 60.0
BASELINE_MAX = 5_000


def target_filter(spec: RolloutSpec, alias: str = "d") -> tuple[str, list]:
    """A WHERE clause (and its parameters) selecting the spec's target devices from ``devices``."""
    where = [
        f"{alias}.tenant_id IN (SELECT unnest(?::VARCHAR[]))",
        f"{alias}.platform IN (SELECT unnest(?::VARCHAR[]))",
    ]
    params: list = [list(spec.target.tenants), list(spec.platforms)]
    for tag, value in sorted(spec.target.tags.items()):
        values = [value] if isinstance(value, str) else list(value)
        where.append(f"json_extract_string({alias}.tags, ?) IN (SELECT unnest(?::VARCHAR[]))")
        params += ["$." + json.dumps(tag), values]
    return " AND ".join(where), params


def target_devices(con: duckdb.DuckDBPyConnection, spec: RolloutSpec) -> pa.Table:
    """tenant_id, device_id, platform, tags (JSON text), reported_version, status of every target
    device, in a stable order (the order never changes assignments: those hash ids)."""
    where, params = target_filter(spec)
    return con.execute(
        f"""SELECT d.tenant_id, d.device_id, d.platform, d.tags, d.reported_version, d.status
            FROM (SELECT * FROM devices QUALIFY row_number() OVER (
                      PARTITION BY tenant_id, device_id ORDER BY updated_at DESC NULLS LAST) = 1) d
            WHERE {where} ORDER BY d.tenant_id, d.device_id""",
        params,
    ).fetch_arrow_table()


def reported_versions(
    con: duckdb.DuckDBPyConnection, tenants: Sequence[str]
) -> dict[tuple[str, str], str | None]:
    """(tenant, device) -> the version the device last reported (from ``devices``)."""
    rows = con.execute(
        """SELECT tenant_id, device_id, arg_max(reported_version, updated_at) FROM devices
           WHERE tenant_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL""",
        [list(tenants)],
    ).fetchall()
    return {(t, d): v for t, d, v in rows}


@dataclass(frozen=True)
class CohortQuery:
    """One rollout's cohorts (``members``: tenant_id, device_id, is_canary) and gate window."""

    rollout_id: str
    members: pa.Table
    since: datetime
    until: datetime
    version: str


def cohort_members(
    rollout_id: str,
    tenants: Sequence[str],
    devices: Sequence[str],
    platforms: Sequence[str | None],
    sent_phase: Mapping[str, int | None],
    *,
    max_phase: int | None = None,
    baseline_max: int = BASELINE_MAX,
) -> pa.Table:
    """Canary: devices sent the release (in phases <= ``max_phase``). Baseline: target devices not
    sent it, in the canary's (tenant, platform) strata, at most ``baseline_max`` of them chosen by a
    stable hash (a few thousand devices measure a baseline rate as well as the whole fleet, and the
    tick stays cheap on big fleets). ``sent_phase`` maps ``tenant/device`` to its phase."""
    canary = {k for k, p in sent_phase.items() if max_phase is None or p is None or p <= max_phase}
    strata = set()
    rows_t, rows_d, rows_c = [], [], []
    for k in canary:
        t, d = k.split("/", 1)
        rows_t.append(t)
        rows_d.append(d)
        rows_c.append(True)
    platform_of = {}
    for t, d, p in zip(tenants, devices, platforms, strict=True):
        platform_of[(t, d)] = p
    for k in canary:
        t, d = k.split("/", 1)
        strata.add((t, platform_of.get((t, d))))
    base = [
        (t, d)
        for t, d, p in zip(tenants, devices, platforms, strict=True)
        if (t, p) in strata and f"{t}/{d}" not in sent_phase
    ]
    if len(base) > baseline_max:
        b = buckets(f"baseline:{rollout_id}", [f"{t}/{d}" for t, d in base])
        keep = np.argsort(b, kind="stable")[:baseline_max]
        base = [base[i] for i in sorted(keep)]
    rows_t += [t for t, _ in base]
    rows_d += [d for _, d in base]
    rows_c += [False] * len(base)
    return pa.table(
        {
            "tenant_id": pa.array(rows_t, pa.string()),
            "device_id": pa.array(rows_d, pa.string()),
            "is_canary": pa.array(rows_c, pa.bool_()),
        }
    )


def samples_many(
    con: duckdb.DuckDBPyConnection,
    queries: Sequence[CohortQuery],
    *,
    sample_seconds: float = DEFAULT_SAMPLE_SECONDS,
) -> dict[str, pa.Table]:
    """Per-device aggregates (the columns ``evaluate_gates`` reads) of every query's cohorts over its
    window, in one scan of ``health``. ``device_id`` is ``tenant/device`` (ids are unique per tenant)."""
    if not queries:
        return {}
    members = pa.concat_tables(
        [
            q.members.append_column("rollout_id", pa.array([q.rollout_id] * q.members.num_rows, pa.string()))
            .append_column("since", pa.array([q.since] * q.members.num_rows, pa.timestamp("us", tz="UTC")))
            .append_column("until", pa.array([q.until] * q.members.num_rows, pa.timestamp("us", tz="UTC")))
            .append_column("version", pa.array([q.version] * q.members.num_rows, pa.string()))
            for q in queries
        ]
    )
    tenants = sorted(set(members.column("tenant_id").to_pylist()))
    con.register("_cohorts", members)
    try:
        out = con.execute(
            """
            WITH h AS MATERIALIZED (  -- the union of the windows first: files outside it are pruned
                SELECT tenant_id, device_id, ts, version, requests, errors, crash_count, heartbeat, cpu_pct,
                       mem_mb, queue_depth, error_rate
                FROM health
                WHERE tenant_id IN (SELECT unnest(?::VARCHAR[])) AND ts >= ? AND ts < ?)
            SELECT c.rollout_id,
                   h.tenant_id || '/' || h.device_id AS device_id,
                   CASE WHEN c.is_canary THEN 'canary' ELSE 'baseline' END AS cohort,
                   count(*) AS samples,
                   count(*) * ? / 3600.0 AS hours,
                   coalesce(sum(h.requests), 0) AS requests,
                   coalesce(sum(h.errors), 0) AS errors,
                   coalesce(sum(h.crash_count), 0) AS crash_count,
                   coalesce(sum(h.heartbeat), 0) AS heartbeats,
                   count(*) AS expected_heartbeats,
                   avg(h.cpu_pct) AS cpu_pct,
                   avg(h.mem_mb) AS mem_mb,
                   avg(h.queue_depth)::DOUBLE AS queue_depth,
                   avg(h.error_rate) AS error_rate
            FROM h JOIN _cohorts c ON h.tenant_id = c.tenant_id AND h.device_id = c.device_id
            WHERE h.ts >= c.since AND h.ts < c.until
              AND (h.version IS NOT DISTINCT FROM c.version) = c.is_canary
            GROUP BY c.rollout_id, h.tenant_id, h.device_id, c.is_canary
            ORDER BY 1, 2""",
            [tenants, min(q.since for q in queries), max(q.until for q in queries), sample_seconds],
        ).fetch_arrow_table()
    finally:
        con.unregister("_cohorts")
    ids = out.column("rollout_id").to_pylist()
    result = {}
    for q in queries:
        mask = pa.array([i == q.rollout_id for i in ids], pa.bool_())
        result[q.rollout_id] = out.filter(mask).drop_columns(["rollout_id"])
    return result


def cohort_samples(
    con: duckdb.DuckDBPyConnection,
    rollout_id: str,
    spec: RolloutSpec,
    since: datetime,
    until: datetime,
    *,
    sample_seconds: float = DEFAULT_SAMPLE_SECONDS,
    max_phase: int | None = None,
) -> pa.Table:
    """One rollout's cohort aggregates over ``[since, until)``, exactly as the promotion tick builds
    them; ``max_phase``: cohorts as they were in that phase (devices sent later are baseline then)."""
    targets = target_devices(con, spec)
    sent = con.execute(
        "SELECT tenant_id || '/' || device_id, min(phase) FROM rollout_devices "
        "WHERE rollout_id = ? AND action = 'deploy' GROUP BY ALL",
        [rollout_id],
    ).fetchall()
    members = cohort_members(
        rollout_id,
        targets.column("tenant_id").to_pylist(),
        targets.column("device_id").to_pylist(),
        targets.column("platform").to_pylist(),
        dict(sent),
        max_phase=max_phase,
    )
    q = CohortQuery(rollout_id, members, since, until, spec.release.version)
    return samples_many(con, [q], sample_seconds=sample_seconds)[rollout_id]


def phase_status(
    con: duckdb.DuckDBPyConnection,
    rollout_id: str,
    state: RolloutState,
    assignments: pa.Table,
    until: datetime,
) -> pa.Table:
    """Per phase: targeted, acknowledged, updated, healthy, failed, unreachable device counts.

    ``assignments``: tenant_id, device_id, phase (from the selection). A device is
    *acknowledged* once it reported health after it was sent the deploy, *updated* when it
    reports the release, *failed* when it acknowledged but runs something else (unless its
    agent's installer says the release is still downloading or installed: under way, not
    failed; ``edgeplat.rollouts.agent_updates``), *healthy* when
    updated and, if the rollout-level gates set an absolute ``max`` on ``error_rate``, its
    error rate in the current gate window is within it. *Unreachable*: marked so by the rollout.
    """
    spec = state.spec
    since = state.gate_window_start
    error_rate_limit = next(
        (g.max for g in spec.gates if g.metric == "error_rate" and g.max is not None), None
    )
    con.register("_assign", assignments)
    con.register("_unreach", pa.table({"dev": pa.array(sorted(state.unreachable), pa.string())}))
    try:
        return con.execute(
            """
            WITH sent AS (
                SELECT tenant_id, device_id, min("at") AS sent_at FROM rollout_devices
                WHERE rollout_id = ? AND action = 'deploy' GROUP BY ALL),
            dev AS (
                SELECT tenant_id, device_id, arg_max(reported_version, updated_at) AS reported_version
                FROM devices WHERE tenant_id IN (SELECT DISTINCT tenant_id FROM _assign) GROUP BY ALL),
            hl AS (
                SELECT h.tenant_id, h.device_id, max(h.ts) AS last_ts,
                       sum(h.errors) FILTER (WHERE h.version = ?) / nullif(sum(h.requests) FILTER (WHERE h.version = ?), 0)
                           AS err,
                       arg_max(h.update_state, h.hlc) FILTER (WHERE h.update_version = ?) AS upd
                FROM health h SEMI JOIN sent USING (tenant_id, device_id)
                WHERE h.ts >= coalesce(?::TIMESTAMPTZ, '-infinity'::TIMESTAMPTZ) AND h.ts < ?
                GROUP BY ALL),
            per AS (
                SELECT a.phase, s.sent_at IS NOT NULL AS sent,
                       s.sent_at IS NOT NULL AND hl.last_ts >= s.sent_at AS acked,
                       d.reported_version = ? AS updated,
                       (a.tenant_id || '/' || a.device_id) IN (SELECT dev FROM _unreach) AS unreachable,
                       hl.err, coalesce(hl.upd IN ('downloading', 'installed'), false) AS installing
                FROM _assign a
                LEFT JOIN sent s USING (tenant_id, device_id)
                LEFT JOIN dev d USING (tenant_id, device_id)
                LEFT JOIN hl USING (tenant_id, device_id)
                WHERE a.phase >= 0)
            SELECT phase,
                   count(*) AS targeted,
                   count(*) FILTER (WHERE sent) AS sent,
                   count(*) FILTER (WHERE acked OR (sent AND updated)) AS acknowledged,
                   count(*) FILTER (WHERE sent AND updated) AS updated,
                   count(*) FILTER (WHERE sent AND updated AND (? IS NULL OR coalesce(err, 0) <= ?)) AS healthy,
                   count(*) FILTER (WHERE acked AND NOT coalesce(updated, false) AND NOT installing) AS failed,
                   count(*) FILTER (WHERE unreachable) AS unreachable
            FROM per GROUP BY phase ORDER BY phase""",
            [
                rollout_id,
                spec.release.version,
                spec.release.version,
                spec.release.version,
                since,
                until,
                spec.release.version,
                error_rate_limit,
                error_rate_limit,
            ],
        ).fetch_arrow_table()
    finally:
        con.unregister("_assign")
        con.unregister("_unreach")


def drift(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Desired versus reported version per device, from the rollouts' latest sends.

    The desired version of a device is the release of the latest rollout that deployed to it,
    unless that rollout then rolled it back (desired: what it ran before, unknown here: NULL
    and ``rolled_back``)."""
    return con.execute(
        """
        WITH latest AS (
            SELECT rd.tenant_id, rd.device_id, rd.rollout_id, rd.action, rd."at"
            FROM rollout_devices rd
            QUALIFY row_number() OVER (PARTITION BY rd.tenant_id, rd.device_id ORDER BY rd."at" DESC,
                                       rd.action = 'rollback' DESC) = 1),
        rel AS (SELECT DISTINCT rollout_id, release_version, name FROM rollouts),
        dev AS (
            SELECT tenant_id, device_id, arg_max(reported_version, updated_at) AS reported_version,
                   arg_max(status, updated_at) AS status
            FROM devices GROUP BY ALL)
        SELECT d.tenant_id, d.device_id, l.rollout_id, r.name AS rollout,
               CASE WHEN l.action = 'deploy' THEN r.release_version END AS desired_version,
               d.reported_version, d.status, coalesce(l.action = 'rollback', false) AS rolled_back,
               l.action = 'deploy' AND d.reported_version IS DISTINCT FROM r.release_version AS drifted
        FROM dev d LEFT JOIN latest l USING (tenant_id, device_id) LEFT JOIN rel r USING (rollout_id)
        ORDER BY d.tenant_id, d.device_id"""
    ).fetch_arrow_table()
