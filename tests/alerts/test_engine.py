"""The alert engine on a real lakehouse with loopback sinks: dedupe, grouping, resolve, retry
after a 500, per-tenant separation, platform conditions and the notifications rows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edge_sync.live_message import LiveMessage
from edgeplat.alerts.engine import AlertEngine
from edgeplat.alerts.rules import parse_rules
from tests.support.sink_servers import http_sink

pytestmark = pytest.mark.slow


def rules(url: str, extra: str = "", tenants: tuple[str, ...] = ("tenant-a",)) -> str:
    sinks = "".join(f'  {t}:\n    - {{name: hook-{t}, kind: webhook, url: "{url}/{t}"}}\n' for t in tenants)
    return (
        "rules:\n  - {name: dev, kind: device_alert, severities: [critical, error]}\n"
        + extra
        + "sinks:\n"
        + sinks
        + "delivery: {attempts: 3, backoff_s: 0.01, timeout_s: 2}\n"
    )


def alert(tenant: str, device: str, seq: int, severity: str, code: str) -> LiveMessage:
    row = {"severity": severity, "code": code, "message": f"{code} on {device}"}
    return LiveMessage(tenant, device, "alerts", seq, seq << 16, 0, row, "k")


def test_duplicates_are_deduplicated_grouped_and_resolved(lake_fleet) -> None:
    with http_sink() as (url, hook):
        engine = AlertEngine(lake_fleet.lake, parse_rules(rules(url)))
        first = engine.on_live_rows(
            [alert("tenant-a", "d1", 1, "critical", "hot"), alert("tenant-a", "d2", 1, "error", "hot")]
        )
        assert first.fired == 2 and len(hook.bodies()) == 1  # grouped: one notification, two alerts
        assert {a["device_id"] for a in hook.bodies()[0]["alerts"]} == {"d1", "d2"}
        again = engine.on_live_rows([alert("tenant-a", "d1", 2, "critical", "hot")])
        assert (again.fired, again.deduplicated, len(hook.bodies())) == (0, 1, 1)  # still firing: no page
        replay = engine.on_live_rows([alert("tenant-a", "d1", 1, "critical", "hot")])
        assert (replay.fired, replay.deduplicated) == (0, 0)  # the same row: marked once, ignored
        cleared = engine.on_live_rows([alert("tenant-a", "d1", 3, "ok", "hot")])
        assert cleared.resolved == 1
        resolved = hook.bodies()[-1]
        assert resolved["state"] == "resolved" and [a["device_id"] for a in resolved["alerts"]] == ["d1"]
        refire = engine.on_live_rows([alert("tenant-a", "d1", 4, "critical", "hot")])
        assert refire.fired == 1 and len(hook.bodies()) == 3
    states = lake_fleet.count("SELECT state, count(*) FROM notifications GROUP BY 1 ORDER BY 1")
    assert states == [("firing", 2), ("resolved", 1)]


def test_retry_after_a_500_is_recorded_with_its_attempts(lake_fleet) -> None:
    with http_sink(fail_first=1) as (url, hook):
        engine = AlertEngine(lake_fleet.lake, parse_rules(rules(url)))
        report = engine.on_live_rows([alert("tenant-a", "d1", 1, "critical", "hot")])
        assert report.notifications[0][1][0][1].outcome == "delivered"
        assert hook.attempts == 2 and len(hook.bodies()) == 1
    with http_sink(fail_first=10) as (url, hook):
        engine = AlertEngine(lake_fleet.lake, parse_rules(rules(url)))
        engine.on_live_rows([alert("tenant-a", "d9", 1, "critical", "cold")])
    rows = lake_fleet.count("SELECT outcome, attempts, error IS NULL FROM notifications ORDER BY created_at")
    assert rows == [("delivered", 2, True), ("failed", 3, False)]


def test_each_tenant_gets_only_its_own_alerts(lake_fleet) -> None:
    with http_sink() as (url, hook):
        engine = AlertEngine(lake_fleet.lake, parse_rules(rules(url, tenants=("tenant-a", "tenant-b"))))
        engine.on_live_rows(
            [
                alert("tenant-a", "d1", 1, "critical", "hot"),
                alert("tenant-b", "d1", 1, "critical", "hot"),
                alert("tenant-b", "d2", 1, "error", "leak"),
                alert("tenant-c", "d1", 1, "critical", "hot"),  # no sinks: recorded, sent nowhere
            ]
        )
        for tenant, devices in (("tenant-a", ["d1"]), ("tenant-b", ["d1", "d2"])):
            bodies = hook.bodies(f"/{tenant}")
            assert {b["tenant_id"] for b in bodies} == {tenant}
            assert sorted(a["device_id"] for b in bodies for a in b["alerts"]) == devices
        assert len(hook.requests) == 2
    assert lake_fleet.count("SELECT sink, outcome FROM notifications WHERE tenant_id = 'tenant-c'") == [
        ("(none)", "no_sink")
    ]


def test_platform_conditions_fire_and_resolve_from_the_lakehouse(lake_fleet) -> None:
    extra = (
        "  - {name: offline, kind: devices_offline, threshold: 2}\n"
        "  - {name: approval, kind: rollout_awaiting_approval, severity: warning}\n"
    )
    now = datetime.now(UTC)

    def devices(status: str) -> None:
        lake_fleet.lake.write(
            lambda con: (
                con.execute("DELETE FROM devices"),
                con.executemany(
                    "INSERT INTO devices (tenant_id, device_id, status, updated_at) VALUES (?, ?, ?, ?)",
                    [("tenant-a", f"d{i}", status, now) for i in range(3)],
                ),
            )
        )

    with http_sink() as (url, hook):
        engine = AlertEngine(lake_fleet.lake, parse_rules(rules(url, extra)))
        devices("offline")
        lake_fleet.lake.write(
            lambda con: con.execute(
                "INSERT INTO rollouts (tenant_id, rollout_id, name, release_version, status, updated_at) "
                "VALUES ('tenant-a', 'r1', 'canary', '2.0', 'awaiting_approval', ?)",
                [now],
            )
        )
        first = engine.evaluate()
        assert first.fired == 2 and {b["rule"] for b in hook.bodies()} == {"offline", "approval"}
        assert engine.evaluate().fired == 0  # still holding: no new notification
        devices("online")
        cleared = engine.evaluate()
        assert cleared.resolved == 1
        last = hook.bodies()[-1]
        assert (last["rule"], last["state"]) == ("offline", "resolved")
