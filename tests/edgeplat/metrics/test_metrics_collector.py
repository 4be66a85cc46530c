"""The exporter's figures, read from a real lakehouse filled by the real ingest and rollout store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.metrics.catalog import METRICS, exposed_names
from edgeplat.metrics.collector import LakehouseCollector
from edgeplat.rollouts.events import Event, Kind, created_event
from edgeplat.rollouts.store import RolloutStore
from edgeplat.sync.ingest import ingest_objects
from tests.support.fleet import Fleet
from tests.support.rollouts import small_spec

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def scrape(collector: LakehouseCollector) -> Samples:
    """Every sample, as Prometheus would parse the exposition."""
    registry = CollectorRegistry()
    registry.register(collector)
    out: Samples = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    fleet = Fleet(tmp_path)
    up = fleet.upload
    keys = [
        up(fleet.batch("acme", "d1", "telemetry", range(1, 21))),
        up(fleet.batch("acme", "d2", "logs", range(1, 6))),
        up(fleet.batch("globex", "g1", "telemetry", range(1, 4))),
    ]
    bad = fleet.batch("acme", "d3", "telemetry", range(1, 11))
    keys.append(up(bad, data=bad.data[:-1] + bytes([bad.data[-1] ^ 1])))
    # an upload claiming a tenant nobody registered: its label folds into "unknown"
    stranger = fleet.batch("nobody-knows", "x1", "telemetry", range(1, 3))
    fleet.registry.revoke("nobody-knows", "x1", fleet.device("nobody-knows", "x1").key_id)
    keys.append(up(stranger))
    report = ingest_objects(fleet.env(), keys)
    assert dict(report.quarantined) == {"bad_signature": 1, "unknown_device": 1}
    return fleet


def test_fleet_figures_match_the_lakehouse(fleet: Fleet) -> None:
    now = fleet.clock.ms / 1000 + 120
    got = scrape(LakehouseCollector(fleet.lake, clock=Clock(now)))

    assert value(got, "edgeplat_ingested_rows_total", tenant="acme", stream="telemetry") == 20
    assert value(got, "edgeplat_ingested_rows_total", tenant="acme", stream="logs") == 5
    assert value(got, "edgeplat_ingested_batches_total", tenant="globex", stream="telemetry") == 1
    quarantined = {
        dict(k)["tenant"] + "/" + dict(k)["reason"]: v
        for k, v in named(got, "edgeplat_quarantined_batches_total").items()
        if v
    }
    assert quarantined == {"acme/bad_signature": 1, "unknown/unknown_device": 1}
    # every reason of every known tenant exists, at 0 until it happens; no series for the stranger's claim
    assert value(got, "edgeplat_quarantined_batches_total", tenant="globex", reason="bad_signature") == 0
    assert not any(
        dict(k)["tenant"] == "nobody-knows" for k in named(got, "edgeplat_quarantined_batches_total")
    )
    online = sum(v for k, v in named(got, "edgeplat_devices").items() if dict(k)["status"] == "online")
    with fleet.lake.session(read_only=True) as con:
        assert (
            online == con.execute("SELECT count(*) FROM devices WHERE status = 'online'").fetchone()[0] == 3
        )
        lag_max = con.execute(
            "SELECT max(? - epoch(last_batch_at)) FROM devices WHERE tenant_id = 'acme'", [now]
        ).fetchone()[0]
    lag = {
        dict(k)["quantile"]: v
        for k, v in named(got, "edgeplat_sync_lag_seconds").items()
        if dict(k)["tenant"] == "acme"
    }
    assert set(lag) == {"0.5", "0.9", "0.99", "1"} and lag["1"] == pytest.approx(lag_max)
    assert value(got, "edgeplat_exporter_lakehouse_up") == 1
    # no per-device series unless asked for
    assert named(got, "edgeplat_device_sync_lag_seconds") == {}
    per_device = scrape(LakehouseCollector(fleet.lake, clock=Clock(now), per_device=True))
    assert {dict(k)["device"] for k in named(per_device, "edgeplat_device_sync_lag_seconds")} == {
        "d1",
        "d2",
        "g1",
    }


def test_every_exposed_name_is_in_the_catalog(fleet: Fleet) -> None:
    got = scrape(LakehouseCollector(fleet.lake))
    assert {name for name, _ in got} <= exposed_names()
    families = {m.name for m in METRICS}
    assert len(families) == len(METRICS)


def test_rollout_figures_come_from_the_log(fleet: Fleet) -> None:
    store, now = RolloutStore(fleet.lake), datetime.now(UTC)
    store.append("r1-aaaa", [created_event(small_spec(), "r1-aaaa", now, "alice")])
    check = {
        "metric": "error_rate",
        "limit": "max_ratio",
        "threshold": 1.5,
        "verdict": "fail",
        "reason": "canary worse",
        "inputs": {"canary_rate": 0.2, "baseline_rate": 0.01},
    }
    inconclusive = {
        "verdict": "inconclusive",
        "since": None,
        "checks": [{**check, "verdict": "inconclusive"}],
    }
    failed = {"verdict": "fail", "since": None, "checks": [check]}
    store.append(
        "r1-aaaa",
        [
            Event(Kind.DEPLOY_PHASE, "r1-aaaa", now, 0, reason="deploy", key="r1:deploy:0"),
            Event(
                Kind.RECORD_GATES,
                "r1-aaaa",
                now,
                0,
                reason="gates",
                inputs={"gates": inconclusive},
                key="r1:g:0",
            ),
            Event(
                Kind.ROLLBACK, "r1-aaaa", now, 0, reason="gates fail", inputs={"gates": failed}, key="r1:rb"
            ),
        ],
    )
    got = scrape(LakehouseCollector(fleet.lake, clock=Clock(now.timestamp())))
    assert named(got, "edgeplat_rollout_status") == {
        (("release", "3.0.0"), ("rollout", "r1"), ("status", "rolling_back")): 1
    }
    assert value(got, "edgeplat_rollout_target_percent", rollout="r1") == 10
    # one event per kind, counted once although stored once per targeted tenant (two)
    assert value(got, "edgeplat_rollout_events_total", kind="rollback") == 1
    assert value(got, "edgeplat_rollout_events_total", kind="promote") == 0
    assert value(got, "edgeplat_rollout_gate_verdicts_total", rollout="r1", verdict="fail") == 1
    assert value(got, "edgeplat_rollout_gate_verdicts_total", rollout="r1", verdict="inconclusive") == 1
    # the latest report decides the checks and cohorts shown
    assert named(got, "edgeplat_rollout_gate_check") == {
        (("limit", "max_ratio"), ("metric", "error_rate"), ("rollout", "r1"), ("verdict", "fail")): 1
    }
    assert (
        value(got, "edgeplat_rollout_cohort_health", rollout="r1", metric="error_rate", cohort="canary")
        == 0.2
    )
    assert (
        value(got, "edgeplat_rollout_cohort_health", rollout="r1", metric="error_rate", cohort="baseline")
        == 0.01
    )

    # a finished rollout's series end after the recent window; its events stay counted
    later = scrape(
        LakehouseCollector(
            fleet.lake, clock=Clock((now + timedelta(days=2)).timestamp()), recent=timedelta(hours=1)
        )
    )
    assert named(later, "edgeplat_rollout_status") != {}  # rolling_back is not finished
    store.append("r1-aaaa", [Event(Kind.ROLLBACK_DONE, "r1-aaaa", now, 0, reason="done", key="r1:rbd")])
    later = scrape(
        LakehouseCollector(
            fleet.lake, clock=Clock((now + timedelta(days=2)).timestamp()), recent=timedelta(hours=1)
        )
    )
    assert named(later, "edgeplat_rollout_status") == {}
    assert value(later, "edgeplat_rollout_events_total", kind="rollback") == 1


def test_notification_deliveries_are_counted_by_tenant_sink_and_outcome(fleet: Fleet) -> None:
    got = scrape(LakehouseCollector(fleet.lake))
    assert value(got, "edgeplat_exporter_notifications_table_present") == 1
    assert named(got, "edgeplat_notifications_total") == {}
    # rows as the alert engine writes them, one per delivery
    fleet.lake.write(
        lambda con: con.execute(
            "INSERT INTO notifications (notification_id, tenant_id, rule, sink, sink_kind, state, outcome, "
            "attempts, created_at) VALUES "
            "('n1', 'acme', 'r', 'ops-slack', 'slack', 'firing', 'delivered', 1, now()),"
            "('n2', 'acme', 'r', 'ops-slack', 'slack', 'resolved', 'delivered', 3, now()),"
            "('n3', 'acme', 'r', 'pager', 'pagerduty', 'firing', 'failed', 5, now())"
        )
    )
    got = scrape(LakehouseCollector(fleet.lake))
    assert (
        value(got, "edgeplat_notifications_total", tenant="acme", sink="ops-slack", outcome="delivered") == 2
    )
    assert value(got, "edgeplat_notifications_total", tenant="acme", sink="pager", outcome="failed") == 1
    assert value(got, "edgeplat_notification_attempts_total", tenant="acme", sink="ops-slack") == 4


def test_reads_are_cached_for_max_age_and_a_failing_lakehouse_is_reported(
    fleet: Fleet, tmp_path: Path
) -> None:
    clock = Clock(1_000.0)
    collector = LakehouseCollector(fleet.lake, max_age=15, clock=clock)
    first = scrape(collector)
    fleet.upload(fleet.batch("acme", "d1", "telemetry", range(21, 31)))
    ingest_objects(fleet.env(), [fleet.batch("acme", "d1", "telemetry", range(21, 31)).key])
    clock.t += 10  # within max_age: the same figures, no read
    assert scrape(collector) == first
    clock.t += 10
    assert value(scrape(collector), "edgeplat_ingested_rows_total", tenant="acme", stream="telemetry") == 30

    # a lakehouse that cannot be read: the last figures stay, up drops to 0, the error is counted
    collector.lake = Lakehouse(
        LakehouseConfig(f"sqlite:{tmp_path}/missing/nothing.sqlite", f"{tmp_path}/none/")
    )
    clock.t += 20
    broken = scrape(collector)
    assert value(broken, "edgeplat_exporter_lakehouse_up") == 0
    assert value(broken, "edgeplat_exporter_refresh_errors_total") == 1
    assert value(broken, "edgeplat_ingested_rows_total", tenant="acme", stream="telemetry") == 30
    assert value(broken, "edgeplat_exporter_last_refresh_timestamp_seconds") == 1_020.0
