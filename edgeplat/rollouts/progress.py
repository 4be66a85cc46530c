"""How far a rollout has gone over time: devices sent the release and devices running it.

Both counts are cumulative facts about devices, not activity in a reporting window. A device is
*sent* the release from the rollout's first deploy to it (``rollout_devices``) until the
rollout sends it a rollback; it is *on the release* from its first health report on the release
after that deploy until it reports another version after a rollback. A device that goes quiet
for an hour is still on the release, so the line rises phase after phase and falls only when
the rollout rolls back. The ``rollout_health`` asset and the chart (``plots``) read this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb

from edgeplat.rollouts.events import Kind, RolloutState


@dataclass(frozen=True)
class ProgressPoint:
    """The rollout's reach at one moment (a step: it holds until the next point)."""

    at: datetime
    phase: int  # highest phase deployed by then (-1: none yet)
    sent: int  # devices told to run the release and not told to roll back
    on_release: int  # devices that have reported the release and not left it after a rollback


@dataclass(frozen=True)
class ErrorRates:
    """Canary (on the release) and baseline (not yet updated) error rate in one time bucket."""

    at: datetime
    canary: float | None
    baseline: float | None


def device_facts(con: duckdb.DuckDBPyConnection, rollout_id: str, state: RolloutState) -> list[tuple]:
    """Per device the rollout deployed to: (tenant_id, device_id, phase, deployed_at, rollback_at,
    on_release_at, left_at); the last three are None when that has not happened."""
    return con.execute(
        """
        WITH s AS (
            SELECT tenant_id, device_id,
                   min(phase) FILTER (WHERE action = 'deploy') AS phase,
                   min("at") FILTER (WHERE action = 'deploy') AS deployed_at,
                   min("at") FILTER (WHERE action = 'rollback') AS rollback_at
            FROM rollout_devices WHERE rollout_id = ? GROUP BY ALL),
        first_on AS (  -- one pass over the deployed devices' reports since the launch
            SELECT h.tenant_id, h.device_id, min(h.ts) AS on_release_at
            FROM health h JOIN s USING (tenant_id, device_id)
            WHERE h.tenant_id IN (SELECT unnest(?::VARCHAR[])) AND h.ts >= ?
              AND h.version = ? AND h.ts >= s.deployed_at
            GROUP BY ALL),
        gone AS (  -- and one over the reports of devices sent a rollback, after it
            SELECT h.tenant_id, h.device_id, min(h.ts) AS left_at
            FROM health h JOIN s USING (tenant_id, device_id) JOIN first_on f USING (tenant_id, device_id)
            WHERE h.tenant_id IN (SELECT unnest(?::VARCHAR[])) AND h.ts >= ? AND s.rollback_at IS NOT NULL
              AND h.version IS DISTINCT FROM ? AND h.ts >= s.rollback_at AND h.ts >= f.on_release_at
            GROUP BY ALL)
        SELECT s.tenant_id, s.device_id, s.phase, s.deployed_at, s.rollback_at, f.on_release_at, g.left_at
        FROM s LEFT JOIN first_on f USING (tenant_id, device_id) LEFT JOIN gone g USING (tenant_id, device_id)
        WHERE s.deployed_at IS NOT NULL
        ORDER BY s.tenant_id, s.device_id""",
        [rollout_id, *[list(state.spec.target.tenants), state.created_at, state.spec.release.version] * 2],
    ).fetchall()


def progress_series(facts: Sequence[tuple], state: RolloutState, until: datetime) -> list[ProgressPoint]:
    """The step series of ``device_facts``: a point at the launch, at every change, and at ``until``."""
    steps: list[tuple[datetime, int, int]] = []  # (at, change in sent, change in on_release)
    for _t, _d, _phase, deployed_at, rollback_at, on_release_at, left_at in facts:
        steps.append((deployed_at, 1, 0))
        if rollback_at is not None:
            steps.append((rollback_at, -1, 0))
        if on_release_at is not None:
            steps.append((on_release_at, 0, 1))
            if left_at is not None:
                steps.append((left_at, 0, -1))
    deploys = sorted(
        (e.at, e.phase) for e in state.events if e.kind == Kind.DEPLOY_PHASE and e.phase is not None
    )
    for at, _phase in deploys:
        steps.append((at, 0, 0))  # a point at each deploy, even before any device moved
    steps.sort(key=lambda s: s[0])

    def phase_at(t: datetime) -> int:
        return max((p for at, p in deploys if at <= t), default=-1)

    points = [ProgressPoint(state.created_at, -1, 0, 0)]
    sent = on = 0
    for i, (at, d_sent, d_on) in enumerate(steps):
        sent, on = sent + d_sent, on + d_on
        if i + 1 < len(steps) and steps[i + 1][0] == at:
            continue  # one point per moment, after all of its changes
        if at <= points[-1].at:
            points[-1] = ProgressPoint(points[-1].at, phase_at(at), sent, on)
        else:
            points.append(ProgressPoint(at, phase_at(at), sent, on))
    last = points[-1]
    if until > last.at:
        points.append(ProgressPoint(until, phase_at(until), last.sent, last.on_release))
    return points


def release_progress(
    con: duckdb.DuckDBPyConnection, rollout_id: str, state: RolloutState, until: datetime
) -> list[ProgressPoint]:
    """``progress_series`` of the rollout as the lakehouse records it now."""
    return progress_series(device_facts(con, rollout_id, state), state, until)


def error_rates(
    con: duckdb.DuckDBPyConnection, rollout_id: str, state: RolloutState, *, bucket_minutes: int = 10
) -> list[ErrorRates]:
    """Per time bucket since the launch: the error rate of reports on the release (canary) and of
    reports on other versions from devices not yet sent it (baseline)."""
    version = state.spec.release.version
    rows = con.execute(
        f"""
        WITH sent AS (SELECT tenant_id, device_id, min("at") AS sent_at FROM rollout_devices
                      WHERE rollout_id = ? AND action = 'deploy' GROUP BY ALL)
        SELECT time_bucket(INTERVAL '{int(bucket_minutes)} minutes', h.ts) AS t,
               sum(h.errors) FILTER (WHERE h.version = ?) / nullif(sum(h.requests) FILTER (WHERE h.version = ?), 0),
               sum(h.errors) FILTER (WHERE h.version <> ? AND coalesce(h.ts < s.sent_at, true))
                   / nullif(sum(h.requests) FILTER (WHERE h.version <> ? AND coalesce(h.ts < s.sent_at, true)), 0)
        FROM health h LEFT JOIN sent s USING (tenant_id, device_id)
        WHERE h.tenant_id IN (SELECT unnest(?::VARCHAR[])) AND h.ts >= ?
        GROUP BY 1 ORDER BY 1""",
        [rollout_id, *[version] * 4, list(state.spec.target.tenants), state.created_at],
    ).fetchall()
    return [ErrorRates(t, canary, base) for t, canary, base in rows]
