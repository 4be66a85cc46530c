"""The conditions alert rules test, each a query on the lakehouse that yields what holds now.

A platform condition (rollout rolled back or awaiting approval, quarantine rate, sync lag,
devices offline, ingest failures) returns one :class:`Finding` per subject for which it
holds at this moment; the engine fires the new ones and resolves the ones that stopped
holding. Device alerts are events rather than states: :func:`device_alert_findings` turns
alert rows (live or landed) into findings, and a row with severity ``ok``/``resolved``/
``clear`` resolves its device's alert of the same code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb

from edgeplat.alerts.rules import RESOLVING_SEVERITIES, Rule


@dataclass(frozen=True)
class Finding:
    """A condition holding for one subject (or, for device alerts, one alert row)."""

    rule: str
    tenant_id: str
    fingerprint: str
    severity: str
    summary: str
    resolves: bool = False  # a device's "ok" row: closes the fingerprint rather than firing it
    device_id: str | None = None
    stream: str | None = None
    seq: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def subject(self) -> dict[str, Any]:
        out = {"fingerprint": self.fingerprint, "summary": self.summary, **self.details}
        if self.device_id is not None:
            out.update(device_id=self.device_id, stream=self.stream, seq=self.seq)
        return out


def fingerprint(rule: Rule, tenant_id: str, *parts: object) -> str:
    return "/".join([rule.name, tenant_id, *(str(p) for p in parts)])


@dataclass(frozen=True)
class AlertRow:
    """One row of the device ``alerts`` stream, from ``live_rows`` or the ``alerts`` table."""

    tenant_id: str
    device_id: str
    seq: int
    severity: str | None
    code: str | None
    message: str | None


def device_alert_findings(rules: Iterable[Rule], rows: Iterable[AlertRow]) -> list[Finding]:
    out = []
    rows = list(rows)
    for rule in rules:
        for r in rows:
            if not rule.applies_to(r.tenant_id) or (rule.codes is not None and r.code not in rule.codes):
                continue
            severity = (r.severity or "").lower()
            resolves = severity in RESOLVING_SEVERITIES
            if not resolves and severity not in rule.severities:
                continue
            out.append(
                Finding(
                    rule=rule.name,
                    tenant_id=r.tenant_id,
                    fingerprint=fingerprint(rule, r.tenant_id, r.device_id, r.code),
                    severity=rule.severity if resolves else severity,
                    summary=f"{r.device_id}: {r.code or 'alert'} {severity}: {r.message or ''}".strip(),
                    resolves=resolves,
                    device_id=r.device_id,
                    stream="alerts",
                    seq=r.seq,
                    details={"code": r.code, "severity": severity},
                )
            )
    return out


def alert_rows_from_live(payloads: Iterable[tuple[str, str, int, str]]) -> list[AlertRow]:
    """(tenant, device, seq, payload JSON) of live ``alerts`` messages -> alert rows."""
    out = []
    for tenant, device, seq, payload in payloads:
        row = json.loads(payload) if isinstance(payload, str) else payload
        out.append(AlertRow(tenant, device, seq, row.get("severity"), row.get("code"), row.get("message")))
    return out


def _window(rule: Rule) -> str:
    return f"now() - INTERVAL {float(rule.window_minutes) * 60:.0f} SECOND"


def rollout_findings(con: duckdb.DuckDBPyConnection, rule: Rule, status: str) -> list[Finding]:
    """Rollouts whose latest status is ``status`` (rolled back: only within the rule's window)."""
    recent = f"AND updated_at > {_window(rule)}" if status == "rolled_back" else ""
    rows = con.execute(
        f"""SELECT tenant_id, rollout_id, name, release_version, status FROM (
                SELECT tenant_id, rollout_id, arg_max(name, updated_at) AS name,
                       arg_max(release_version, updated_at) AS release_version,
                       arg_max(status, updated_at) AS status, max(updated_at) AS updated_at
                FROM rollouts GROUP BY tenant_id, rollout_id)
            WHERE status = ? {recent}""",
        [status],
    ).fetchall()
    what = "rolled back" if status == "rolled_back" else "waits for approval"
    return [
        Finding(
            rule.name,
            t,
            fingerprint(rule, t, rid),
            rule.severity,
            f"rollout {name or rid} ({ver}) {what}",
            details={"rollout_id": rid},
        )
        for t, rid, name, ver, _ in rows
        if rule.applies_to(t)
    ]


def quarantine_rate_findings(con: duckdb.DuckDBPyConnection, rule: Rule) -> list[Finding]:
    rows = con.execute(
        f"""WITH q AS (SELECT tenant_id, count(*) AS n FROM quarantine
                      WHERE quarantined_at > {_window(rule)} AND NOT coalesce(deferred, false) GROUP BY 1),
                 b AS (SELECT tenant_id, count(*) AS n FROM batches WHERE ingested_at > {_window(rule)} GROUP BY 1)
            SELECT coalesce(q.tenant_id, b.tenant_id), coalesce(q.n, 0), coalesce(b.n, 0)
            FROM q FULL JOIN b USING (tenant_id)"""
    ).fetchall()
    out = []
    for t, quarantined, accepted in rows:
        total = quarantined + accepted
        if t and rule.applies_to(t) and total >= rule.min_batches and quarantined / total >= rule.threshold:
            out.append(
                Finding(
                    rule.name,
                    t,
                    fingerprint(rule, t),
                    rule.severity,
                    f"{quarantined} of {total} batches quarantined in {rule.window_minutes:g} min "
                    f"({quarantined / total:.0%} >= {rule.threshold:.0%})",
                    details={"quarantined": quarantined, "batches": total},
                )
            )
    return out


def ingest_failures_findings(con: duckdb.DuckDBPyConnection, rule: Rule) -> list[Finding]:
    rows = con.execute(
        f"""SELECT tenant_id, count(*), string_agg(DISTINCT reason, ', ') FROM quarantine
            WHERE quarantined_at > {_window(rule)} AND NOT coalesce(deferred, false) GROUP BY 1"""
    ).fetchall()
    return [
        Finding(
            rule.name,
            t,
            fingerprint(rule, t),
            rule.severity,
            f"{n} batches failed ingest in {rule.window_minutes:g} min ({reasons})",
            details={"failed": n},
        )
        for t, n, reasons in rows
        if t and rule.applies_to(t) and n >= max(rule.threshold, 1)
    ]


def sync_lag_findings(con: duckdb.DuckDBPyConnection, rule: Rule) -> list[Finding]:
    """Devices whose newest ingested row (HLC time) is older than ``threshold_seconds``, per tenant."""
    rows = con.execute(
        """SELECT tenant_id, count(*), max(lag) FROM (
               SELECT tenant_id, device_id, epoch(now()) - max(hlc_max) // 65536 / 1000.0 AS lag
               FROM batches WHERE hlc_max IS NOT NULL GROUP BY ALL)
           WHERE lag > ? GROUP BY 1""",
        [rule.threshold_seconds],
    ).fetchall()
    return [
        Finding(
            rule.name,
            t,
            fingerprint(rule, t),
            rule.severity,
            f"{n} devices more than {rule.threshold_seconds:g}s behind (worst {lag:.0f}s)",
            details={"devices": n, "worst_lag_s": round(lag, 1)},
        )
        for t, n, lag in rows
        if rule.applies_to(t)
    ]


def devices_offline_findings(con: duckdb.DuckDBPyConnection, rule: Rule) -> list[Finding]:
    rows = con.execute(
        "SELECT tenant_id, count(*) FILTER (WHERE status = 'offline'), count(*) FROM devices GROUP BY 1"
    ).fetchall()
    return [
        Finding(
            rule.name,
            t,
            fingerprint(rule, t),
            rule.severity,
            f"{off} of {total} devices offline",
            details={"offline": off, "devices": total},
        )
        for t, off, total in rows
        if rule.applies_to(t) and off > 0 and off >= rule.threshold
    ]


def platform_findings(con: duckdb.DuckDBPyConnection, rule: Rule) -> list[Finding]:
    """What ``rule`` (a platform condition) finds now; device alerts and run failures are events."""
    match rule.kind:
        case "rollout_rolled_back":
            return rollout_findings(con, rule, "rolled_back")
        case "rollout_awaiting_approval":
            return rollout_findings(con, rule, "awaiting_approval")
        case "quarantine_rate":
            return quarantine_rate_findings(con, rule)
        case "ingest_failures":
            return ingest_failures_findings(con, rule)
        case "sync_lag":
            return sync_lag_findings(con, rule)
        case "devices_offline":
            return devices_offline_findings(con, rule)
    raise ValueError(f"{rule.kind} is not a platform condition")


PLATFORM_KINDS = (
    "rollout_rolled_back",
    "rollout_awaiting_approval",
    "quarantine_rate",
    "ingest_failures",
    "sync_lag",
    "devices_offline",
)
