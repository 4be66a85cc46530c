"""The alert engine: findings -> state changes -> grouped notifications -> sinks -> the lakehouse.

Two callers: the live subscriber hands it verified live alert rows within a second of
their arrival, and the Dagster schedule calls :meth:`AlertEngine.evaluate` every minute,
which tests every platform condition and picks up device alerts the live path missed
(broker down, device offline: their batch lands later). State lives in ``alert_events``:

- a device alert row is marked once per rule (tenant, device, stream, seq), so the same row
  from MQTT and later from its batch notifies once;
- a fingerprint (rule + tenant + subject) fires once and stays firing, and further rows or
  findings for it are deduplicated ("seen") until it resolves: a platform condition that no
  longer holds, or a device row with severity ok/resolved/clear for the same code;
- the state changes of one pass are grouped per (tenant, rule, state) into one
  notification, sent only to that tenant's sinks (:meth:`AlertConfig.sinks_for`).

Every delivery outcome is a ``notifications`` row. The schedule leaves device alerts
younger than ``device_alert_grace_s`` to the live path, so the two do not race on one row.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from edge_sync.live_message import LiveMessage
from edgeplat.alerts.conditions import (
    PLATFORM_KINDS,
    AlertRow,
    Finding,
    device_alert_findings,
    platform_findings,
)
from edgeplat.alerts.rules import PLATFORM_TENANT, AlertConfig, Rule
from edgeplat.alerts.sinks import Notification, Outcome, deliver
from edgeplat.lakehouse import Lakehouse, sql_list

SEVERITY_ORDER = {"critical": 0, "error": 1, "warning": 2, "info": 3}
DEVICE_ALERT_LOOKBACK_DAYS = 7


@dataclass
class Transition:
    finding: Finding
    state: str  # firing | resolved | seen


@dataclass
class EvaluationReport:
    """What one pass did: notifications sent (with outcomes) and state changes recorded."""

    notifications: list[tuple[Notification, list[tuple[str, Outcome]]]] = field(default_factory=list)
    fired: int = 0
    resolved: int = 0
    deduplicated: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "fired": self.fired,
            "resolved": self.resolved,
            "deduplicated": self.deduplicated,
            "notifications": [
                {
                    "tenant_id": n.tenant_id,
                    "rule": n.rule,
                    "state": n.state,
                    "alerts": len(n.alerts),
                    "deliveries": {sink: o.outcome for sink, o in outcomes},
                }
                for n, outcomes in self.notifications
            ],
        }


class AlertEngine:
    """Evaluates the rules of one :class:`AlertConfig` against one lakehouse and notifies."""

    def __init__(
        self,
        lake: Lakehouse,
        config: AlertConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.lake = lake
        self.config = config
        self._sleep = sleep
        self._now = now
        self._lock = threading.Lock()  # one pass at a time in this process
        self._rules = {r.name: r for r in config.rules}

    # -- entry points ------------------------------------------------------------------
    def on_live_rows(self, messages: Iterable[LiveMessage]) -> EvaluationReport:
        """Device alerts among freshly verified live messages."""
        rows = [
            AlertRow(
                m.tenant_id,
                m.device_id,
                m.seq,
                m.row.get("severity"),
                m.row.get("code"),
                m.row.get("message"),
            )
            for m in messages
            if m.stream == "alerts"
        ]
        findings = device_alert_findings(self.config.rules_of("device_alert"), rows)
        return self._run(events=findings)

    def evaluate(self) -> EvaluationReport:
        """The scheduled pass: platform conditions, plus device alerts the live path has not marked."""
        with self.lake.session(read_only=True) as con:
            rows = self._unmarked_device_alerts(con) if self.config.rules_of("device_alert") else []
            states = {
                rule.name: platform_findings(con, rule)
                for rule in self.config.rules
                if rule.kind in PLATFORM_KINDS
            }
        events = device_alert_findings(self.config.rules_of("device_alert"), rows)
        return self._run(events=events, states=states)

    def notify_run_failure(self, job_name: str, run_id: str, message: str) -> EvaluationReport:
        """A run of the platform's own jobs failed: one event per run, to the platform sinks."""
        findings = [
            Finding(
                rule.name,
                PLATFORM_TENANT,
                f"{rule.name}/{job_name}/{run_id}",
                rule.severity,
                f"job {job_name} run {run_id[:8]} failed: {message[:300]}",
                details={"job": job_name, "run_id": run_id},
            )
            for rule in self.config.rules_of("run_failure")
            if rule.jobs is None or job_name in rule.jobs
        ]
        return self._run(events=findings)

    # -- state ---------------------------------------------------------------------------
    def _unmarked_device_alerts(self, con: duckdb.DuckDBPyConnection) -> list[AlertRow]:
        grace = f"now() - INTERVAL {float(self.config.device_alert_grace_s):.0f} SECOND"
        lookback = f"now() - INTERVAL {DEVICE_ALERT_LOOKBACK_DAYS} DAY"
        rows = con.execute(
            f"""WITH cand AS (
                    SELECT tenant_id, device_id, seq, severity, code, message FROM alerts
                    WHERE ingested_at < {grace} AND ingested_at > {lookback}
                    UNION
                    SELECT tenant_id, device_id, seq, payload->>'severity', payload->>'code', payload->>'message'
                    FROM live_rows WHERE stream = 'alerts' AND received_at < {grace} AND received_at > {lookback}),
                marked AS (SELECT DISTINCT tenant_id, device_id, seq FROM alert_events
                           WHERE stream = 'alerts' AND "at" > {lookback} - INTERVAL 1 DAY)
                SELECT c.* FROM cand c ANTI JOIN marked m USING (tenant_id, device_id, seq)
                ORDER BY tenant_id, device_id, seq"""
        ).fetchall()
        return [AlertRow(*r) for r in rows]

    def _marked(self, con: duckdb.DuckDBPyConnection, events: list[Finding]) -> set[tuple]:
        device_events = [f for f in events if f.seq is not None]
        if not device_events:
            return set()
        rows = con.execute(
            f"""SELECT rule, tenant_id, device_id, seq FROM alert_events
                WHERE stream = 'alerts' AND tenant_id IN ({sql_list(f.tenant_id for f in device_events)})
                  AND device_id IN ({sql_list(f.device_id for f in device_events)})
                  AND seq BETWEEN ? AND ?""",
            [min(f.seq for f in device_events), max(f.seq for f in device_events)],
        ).fetchall()
        return set(rows)

    def _latest(self, con: duckdb.DuckDBPyConnection, rules: Iterable[str]) -> dict[str, tuple[str, Finding]]:
        """Latest firing/resolved state per fingerprint of ``rules``, with what it fired as."""
        rows = con.execute(
            f"""SELECT fingerprint, arg_max(state, "at"), arg_max(rule, "at"), arg_max(tenant_id, "at"),
                       arg_max(severity, "at"), arg_max(summary, "at"), arg_max(device_id, "at")
                FROM alert_events WHERE state IN ('firing', 'resolved') AND rule IN ({sql_list(rules)})
                GROUP BY fingerprint"""
        ).fetchall()
        return {
            fp: (state, Finding(rule, tenant, fp, sev, summary, device_id=dev))
            for fp, state, rule, tenant, sev, summary, dev in rows
        }

    def _transitions(
        self, con: duckdb.DuckDBPyConnection, events: list[Finding], states: dict[str, list[Finding]]
    ) -> list[Transition]:
        latest = self._latest(con, {f.rule for f in events} | set(states))
        marked = self._marked(con, events)
        current = {fp: state for fp, (state, _) in latest.items()}
        out: list[Transition] = []
        for f in sorted(events, key=lambda f: (f.tenant_id, f.device_id or "", f.seq or 0)):
            if f.seq is not None:
                key = (f.rule, f.tenant_id, f.device_id, f.seq)
                if key in marked:
                    continue  # the same row again (its batch after its live message)
                marked.add(key)
            firing = current.get(f.fingerprint) == "firing"
            if f.resolves:
                state = "resolved" if firing else "seen"
            else:
                state = "seen" if firing else "firing"
            if state != "seen":
                current[f.fingerprint] = state
            out.append(Transition(f, state))
        for rule, findings in states.items():
            now = {f.fingerprint: f for f in findings}
            for f in findings:
                if current.get(f.fingerprint) != "firing":
                    current[f.fingerprint] = "firing"
                    out.append(Transition(f, "firing"))
            for fp, (_state, was) in latest.items():
                if was.rule == rule and current.get(fp) == "firing" and fp not in now:
                    current[fp] = "resolved"
                    out.append(Transition(was, "resolved"))
        return out

    # -- one pass ----------------------------------------------------------------------
    def _run(
        self, *, events: list[Finding], states: dict[str, list[Finding]] | None = None
    ) -> EvaluationReport:
        states = states or {}
        report = EvaluationReport()
        if not events and not states:
            return report
        with self._lock:
            with self.lake.session(read_only=True) as con:
                transitions = self._transitions(con, events, states)
            groups: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
            for t in transitions:
                if t.state == "seen":
                    report.deduplicated += 1
                    continue
                groups[(t.finding.tenant_id, t.finding.rule, t.state)].append(t.finding)
                report.fired += t.state == "firing"
                report.resolved += t.state == "resolved"
            ids: dict[tuple[str, str, str], str] = {}
            for (tenant, rule, state), findings in groups.items():
                n = Notification(
                    notification_id=uuid.uuid4().hex,
                    tenant_id=tenant,
                    rule=rule,
                    state=state,
                    severity=min((f.severity for f in findings), key=lambda s: SEVERITY_ORDER.get(s, 9)),
                    alerts=[f.subject() for f in findings],
                    created_at=self._now(),
                )
                ids[(tenant, rule, state)] = n.notification_id
                report.notifications.append((n, self._send(n, self._rules.get(rule))))
            if transitions:
                self._record(transitions, ids, report)
        return report

    def _send(self, n: Notification, rule: Rule | None) -> list[tuple[str, Outcome]]:
        sinks = self.config.sinks_for(n.tenant_id, rule)
        if not sinks:
            return [("(none)", Outcome("no_sink", 0, f"no sink configured for {n.tenant_id}"))]
        with ThreadPoolExecutor(max_workers=min(8, len(sinks))) as pool:
            outcomes = list(
                pool.map(
                    lambda s: deliver(s, n, self.config.delivery, sleep=self._sleep, now=self._now), sinks
                )
            )
        return [(s.name, o) for s, o in zip(sinks, outcomes, strict=True)]

    def _record(
        self, transitions: list[Transition], ids: dict[tuple[str, str, str], str], report: EvaluationReport
    ) -> None:
        at = self._now()
        events = [
            (
                t.finding.tenant_id,
                t.finding.rule,
                t.finding.fingerprint,
                t.state,
                t.finding.device_id,
                t.finding.stream,
                t.finding.seq,
                t.finding.severity,
                t.finding.summary[:500],
                ids.get((t.finding.tenant_id, t.finding.rule, t.state)),
                at,
            )
            for t in transitions
        ]
        sinks = {s.name: s.kind for group in self.config.sinks.values() for s in group}
        sinks.update({s.name: s.kind for s in self.config.platform_sinks})
        deliveries = [
            (
                n.notification_id,
                n.tenant_id,
                n.rule,
                sink,
                sinks.get(sink),
                n.state,
                o.outcome,
                o.attempts,
                len(n.alerts),
                n.summary[:500],
                o.error,
                n.created_at,
                o.delivered_at,
            )
            for n, outcomes in report.notifications
            for sink, o in outcomes
        ]

        def unit(con: duckdb.DuckDBPyConnection) -> None:
            con.executemany(
                "INSERT INTO alert_events (tenant_id, rule, fingerprint, state, device_id, stream, seq, "
                'severity, summary, notification_id, "at") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                events,
            )
            if deliveries:
                con.executemany(
                    "INSERT INTO notifications (notification_id, tenant_id, rule, sink, sink_kind, state, "
                    "outcome, attempts, alerts, summary, error, created_at, delivered_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    deliveries,
                )

        self.lake.write(unit, what="alert events")
