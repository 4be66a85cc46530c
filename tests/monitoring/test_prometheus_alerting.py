"""The whole alerting chain on real servers: a real Prometheus scrapes the exporter (serving a
lakehouse the real ingest and rollout store filled), evaluates the committed rules, and a real
Alertmanager, with the committed routes and its receivers pointed at a loopback webhook, delivers
the alerts a tampered batch and a rollback raise. The dashboards' queries run on the same Prometheus."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from cli.metrics import registry_for, serve
from edgeplat.rollouts.events import Event, Kind, created_event
from edgeplat.rollouts.store import RolloutStore
from edgeplat.sync.ingest import ingest_objects
from tests.support.fleet import Fleet
from tests.support.prometheus import query, running_alertmanager, running_prometheus, webhook_sink
from tests.support.promql import dashboard_exprs
from tests.support.rollouts import small_spec
from tests.support.services import started

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "prometheus" / "edgeplat-rules.yml"
ALERTMANAGER = REPO / "monitoring" / "alerting" / "alertmanager.yml"
DASHBOARDS = REPO / "monitoring" / "grafana" / "dashboards"
WAIT = 90.0  # seconds: generous for a loaded machine; the chain takes a few seconds when idle


def alertmanager_config(webhook: str) -> dict:
    """The committed routes and inhibitions, every receiver delivering to ``webhook``, short waits."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    config["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": webhook, "send_resolved": True}]}
        for r in config["receivers"]
    ]
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    return config


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.5)


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[tuple[Fleet, str]]:
    """The exporter over a lakehouse with one accepted batch, reading on every scrape."""
    fleet = Fleet(tmp_path)
    good = fleet.upload(fleet.batch("acme", "d1", "telemetry", range(1, 21)))
    ingest_objects(fleet.env(), [good])
    store, now = RolloutStore(fleet.lake), datetime.now(UTC)
    store.append("r1-aaaa", [created_event(small_spec(), "r1-aaaa", now, "alice")])
    check = {"metric": "error_rate", "limit": "max_ratio", "threshold": 1.5, "verdict": "inconclusive"}
    check |= {"reason": "too few samples", "inputs": {"canary_rate": 0.02, "baseline_rate": 0.01}}
    gates = {"verdict": "inconclusive", "since": None, "checks": [check]}
    store.append(
        "r1-aaaa",
        [
            Event(Kind.DEPLOY_PHASE, "r1-aaaa", now, 0, reason="deploy", key="r1:deploy:0"),
            Event(
                Kind.RECORD_GATES, "r1-aaaa", now, 0, reason="gates", inputs={"gates": gates}, key="r1:g:0"
            ),
        ],
    )
    server, thread = serve(registry_for(fleet.lake, max_age=0, per_device=False, recent_hours=24), 0)
    try:
        yield fleet, f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.slow
@pytest.mark.services
def test_a_tampered_batch_and_a_rollback_reach_the_webhook_through_prometheus_and_alertmanager(
    exporter,
) -> None:
    fleet, target = exporter
    with (
        webhook_sink() as (hook, deliveries),
        started("Alertmanager", running_alertmanager(alertmanager_config(hook))) as am,
        started(
            "Prometheus",
            running_prometheus(targets=[target], rule_files=[RULES], alertmanager=am.split("//")[1]),
        ) as prom,
    ):
        series = 'edgeplat_quarantined_batches_total{tenant="acme",reason="bad_signature"}'
        # the counter is scraped at 0 before anything happens, so its rise is an increase
        wait_until(
            lambda: query(prom, f"count_over_time({series}[1m]) >= 2"),
            "two scrapes of the quarantine counter",
        )
        assert query(prom, 'ALERTS{alertname=~"EdgeplatTamperedBatch|EdgeplatRolloutRolledBack"}') == []
        assert [r["value"][1] for r in query(prom, "edgeplat_exporter_lakehouse_up")] == ["1"]

        bad = fleet.batch("acme", "d2", "telemetry", range(1, 11))
        key = fleet.upload(bad, data=bad.data[:-1] + bytes([bad.data[-1] ^ 1]))
        assert dict(ingest_objects(fleet.env(), [key]).quarantined) == {"bad_signature": 1}
        rollback = Event(Kind.ROLLBACK, "r1-aaaa", datetime.now(UTC), 0, reason="gates fail", key="r1:rb")
        RolloutStore(fleet.lake).append("r1-aaaa", [rollback])

        alert = deliveries.wait_for("EdgeplatTamperedBatch", WAIT)
        assert alert is not None, f"no alert delivered; Prometheus alerts: {query(prom, 'ALERTS')}"
        assert alert["labels"] == {
            "alertname": "EdgeplatTamperedBatch",
            "severity": "critical",
            "tenant": "acme",
            "reason": "bad_signature",
        }
        assert "bad_signature" in alert["annotations"]["summary"]
        rolled_back = deliveries.wait_for("EdgeplatRolloutRolledBack", WAIT)
        assert rolled_back is not None, (
            f"no rollback alert delivered; Prometheus alerts: {query(prom, 'ALERTS')}"
        )
        assert rolled_back["labels"] == {
            "alertname": "EdgeplatRolloutRolledBack",
            "severity": "critical",
            "rollout": "r1",
            "release": "3.0.0",
        }
        # the critical route pages and continues to the chat route: both receivers get it
        wait_until(
            lambda: {p["receiver"] for p in deliveries.payloads} == {"ops-pager", "ops-chat"},
            "delivery to both critical receivers (and no other)",
        )

        # every dashboard query is valid PromQL here (query() raises on an error), and every panel
        # shows data except those about what this lakehouse holds none of
        empty = {where for where, expr in dashboard_exprs_all() if not query(prom, expr)}
        assert empty == {
            "edgeplat-fleet-health.json: panel 'State conflicts by rule'",
            "edgeplat-fleet-health.json: panel 'Rows evicted on devices before upload'",
            "edgeplat-fleet-health.json: panel 'Notifications by outcome'",
        }


def dashboard_exprs_all() -> Iterator[tuple[str, str]]:
    """Dashboard queries with Grafana's variables replaced by what they match by default."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        for where, expr in dashboard_exprs(path):
            yield (
                where,
                expr.replace("$__rate_interval", "1m").replace("$tenant", ".*").replace("$rollout", ".*"),
            )
