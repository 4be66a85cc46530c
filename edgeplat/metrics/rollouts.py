"""Rollout figures from the rollout record: status, phase, devices acted on, gates and cohorts.

Per-rollout series exist for rollouts still running and for those that finished within
``recent`` (so a dashboard shows how the last ones ended, and the series set stays bounded);
event counts by kind cover every rollout without a rollout label. Gate verdicts and cohort
health come from the gate reports the controller recorded in the log (``inputs.gates``), the
same numbers the promotion decisions read, so the exporter computes no statistics itself.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import duckdb

from edgeplat.metrics import catalog as m
from edgeplat.metrics.catalog import Reading
from edgeplat.rollouts.events import TERMINAL, Kind

# the value a cohort's health is shown by, per kind of gate check (rate checks, mean checks)
_COHORT_INPUTS = (
    ("canary", ("canary_rate", "canary_mean")),
    ("baseline", ("baseline_rate", "baseline_mean")),
)


def read_rollouts(con: duckdb.DuckDBPyConnection, now_s: float, recent: timedelta) -> list[Reading]:
    """The rollout figures at Unix time ``now_s``."""
    status, phase, percent = Reading(m.ROLLOUT_STATUS), Reading(m.ROLLOUT_PHASE), Reading(m.ROLLOUT_PERCENT)
    shown = _shown(con, now_s - recent.total_seconds())
    for name, (_rid, release, spec, state, ph) in shown.items():
        status.add((name, release, state), 1)
        phase.add((name,), ph)
        pct = _phase_percent(spec, ph)
        if pct is not None:
            percent.add((name,), pct)
    by_id = {v[0]: name for name, v in shown.items()}
    return [status, phase, percent, _devices(con, by_id), _event_kinds(con), *_gates(con, by_id)]


def _shown(con: duckdb.DuckDBPyConnection, since_s: float) -> dict[str, tuple[str, str, str, str, int]]:
    """rollout name -> (id, release, spec JSON, status, phase); of two rollouts with one name, the later."""
    rows = con.execute(
        "SELECT rollout_id, any_value(name), any_value(release_version), any_value(spec), any_value(status), "
        "any_value(phase), max(epoch(updated_at)) AS updated FROM rollouts GROUP BY rollout_id "
        "HAVING NOT list_contains(?, any_value(status)) OR max(epoch(updated_at)) >= ? ORDER BY updated",
        [sorted(str(s) for s in TERMINAL), since_s],
    ).fetchall()
    return {
        name or rid: (rid, release or "", spec, status, phase or 0)
        for rid, name, release, spec, status, phase, _ in rows
    }


def _phase_percent(spec_json: str | None, phase: int) -> float | None:
    try:
        phases = json.loads(spec_json or "{}")["strategy"]["phases"]
        return float(phases[max(phase, 0)]["percent"]) if phase >= 0 else 0.0
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _devices(con: duckdb.DuckDBPyConnection, by_id: dict[str, str]) -> Reading:
    r = Reading(m.ROLLOUT_DEVICES)
    for name in by_id.values():
        r.zero((name, "deploy"))
    if by_id:
        for rid, action, n in con.execute(
            "SELECT rollout_id, action, count(DISTINCT (tenant_id, device_id)) FROM rollout_devices "
            "WHERE list_contains(?, rollout_id) GROUP BY ALL",
            [list(by_id)],
        ).fetchall():
            r.add((by_id[rid], action), n)
    return r


def _event_kinds(con: duckdb.DuckDBPyConnection) -> Reading:
    r = Reading(m.ROLLOUT_EVENTS)
    for kind in Kind:
        if kind != Kind.WAIT:  # never recorded
            r.zero((str(kind),))
    # one row per event and targeted tenant: count each event once
    for kind, n in con.execute(
        "SELECT kind, count(DISTINCT (rollout_id, event_id)) FROM rollout_events GROUP BY ALL"
    ).fetchall():
        r.add((kind,), n)
    return r


def _gates(con: duckdb.DuckDBPyConnection, by_id: dict[str, str]) -> list[Reading]:
    verdicts, checks, cohorts = Reading(m.GATE_VERDICTS), Reading(m.GATE_CHECK), Reading(m.COHORT_HEALTH)
    if not by_id:
        return [verdicts, checks, cohorts]
    rows = con.execute(
        "SELECT rollout_id, event_id, any_value(inputs), min(seq) AS seq FROM rollout_events "
        "WHERE list_contains(?, rollout_id) AND inputs LIKE '%\"gates\"%' GROUP BY rollout_id, event_id "
        "ORDER BY rollout_id, seq",
        [list(by_id)],
    ).fetchall()
    latest: dict[str, dict[str, Any]] = {}
    for rid, _event, inputs, _seq in rows:
        report = _report(inputs)
        if report is None:
            continue
        verdicts.add((by_id[rid], str(report.get("verdict", "unknown"))), 1)
        latest[rid] = report  # rows are in log order: the last one wins
    for rid, report in latest.items():
        name = by_id[rid]
        for c in report.get("checks") or ():
            checks.add((name, str(c.get("metric")), str(c.get("limit")), str(c.get("verdict"))), 1)
            values = c.get("inputs") or {}
            for cohort, keys in _COHORT_INPUTS:
                value = next((values[k] for k in keys if k in values), None)
                if value is not None:
                    cohorts.samples[(name, str(c.get("metric")), cohort)] = float(value)
    return [verdicts, checks, cohorts]


def _report(inputs: str | None) -> dict[str, Any] | None:
    try:
        gates = json.loads(inputs or "{}").get("gates")
    except (ValueError, AttributeError):
        return None
    return gates if isinstance(gates, dict) else None
