"""Every metric the exporter serves: name, type, help and labels.

This list is the contract: the Grafana dashboards and the Prometheus rules in ``monitoring/``
may use only these names (a test checks it). Labels are bounded sets (tenants, platforms,
streams, quarantine reasons, conflict rules, rollouts still active or recently finished);
the per-device series exist only when the exporter is started with ``--per-device``.
Counters are named without ``_total``: ``prometheus_client`` appends it on exposition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PREFIX = "edgeplat_"


@dataclass(frozen=True)
class Metric:
    """One metric family: what it is called, counts or measures, and which labels it carries."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...]

    @property
    def exposed_names(self) -> tuple[str, ...]:
        """The sample names Prometheus stores for this family (a counter's carry ``_total``)."""
        return (self.name + "_total",) if self.kind == "counter" else (self.name,)


Labels = tuple[str, ...]


@dataclass
class Reading:
    """The samples of one metric read at one refresh: label values (in ``metric.labels`` order) to value."""

    metric: Metric
    samples: dict[Labels, float] = field(default_factory=dict)

    def add(self, labels: Labels, value: float) -> None:
        self.samples[labels] = self.samples.get(labels, 0.0) + float(value)

    def zero(self, labels: Labels) -> None:
        """Make the series exist at 0, so ``increase()`` sees its first rise (a counter born at 3 shows none)."""
        self.samples.setdefault(labels, 0.0)


def _g(name: str, help_: str, *labels: str) -> Metric:
    return Metric(PREFIX + name, "gauge", help_, labels)


def _c(name: str, help_: str, *labels: str) -> Metric:
    return Metric(PREFIX + name, "counter", help_, labels)


DEVICES = _g("devices", "Registered devices by connectivity status.", "tenant", "platform", "status")
SYNC_LAG = _g(
    "sync_lag_seconds",
    "Seconds since a device's last accepted batch: quantiles over the devices of a tenant and platform.",
    "tenant",
    "platform",
    "quantile",
)
DEVICE_SYNC_LAG = _g(
    "device_sync_lag_seconds",
    "Seconds since this device's last accepted batch (--per-device only).",
    "tenant",
    "platform",
    "device",
)
LAST_INGEST = _g(
    "last_ingest_timestamp_seconds", "Unix time of the tenant's most recently ingested batch.", "tenant"
)
ROWS = _c(
    "ingested_rows",
    "Rows ingested (new rows; duplicates of stored rows are not counted).",
    "tenant",
    "stream",
)
DUPLICATE_ROWS = _c("duplicate_rows", "Rows that arrived again and were already stored.", "tenant", "stream")
BATCHES = _c("ingested_batches", "Batch objects accepted into the lakehouse.", "tenant", "stream")
QUARANTINED = _c(
    "quarantined_batches",
    "Batch objects quarantined, by machine-readable reason (tenant 'unknown' when the claimed tenant is not a known one).",
    "tenant",
    "reason",
)
DEFERRED = _g(
    "deferred_batches", "Quarantined batches deferred (clock ahead) and not admitted yet.", "tenant"
)
CONFLICTS = _c(
    "state_conflicts", "State merge conflicts where a value lost, by conflict rule.", "tenant", "rule"
)
EVICTED = _c(
    "evicted_rows", "Rows devices evicted before upload (size bound or TTL).", "tenant", "stream", "reason"
)
ROLLOUT_STATUS = _g(
    "rollout_status",
    "1 for the rollout's current status (active rollouts and those finished recently).",
    "rollout",
    "release",
    "status",
)
ROLLOUT_PHASE = _g("rollout_phase", "Index of the rollout's current phase (0-based).", "rollout")
ROLLOUT_PERCENT = _g(
    "rollout_target_percent",
    "Cumulative share of the target the current phase covers, in percent.",
    "rollout",
)
ROLLOUT_DEVICES = _g(
    "rollout_devices",
    "Devices a rollout has sent an action to, by action (deploy, rollback).",
    "rollout",
    "action",
)
ROLLOUT_EVENTS = _c("rollout_events", "Rollout decisions recorded, by kind, over every rollout.", "kind")
GATE_VERDICTS = _c(
    "rollout_gate_verdicts",
    "Gate evaluations recorded in the rollout's log, by overall verdict.",
    "rollout",
    "verdict",
)
GATE_CHECK = _g(
    "rollout_gate_check",
    "1 for the verdict of each limit in the rollout's latest gate report.",
    "rollout",
    "metric",
    "limit",
    "verdict",
)
COHORT_HEALTH = _g(
    "rollout_cohort_health",
    "Health of the canary and baseline cohorts in the latest gate report (rate or mean of the gate's metric).",
    "rollout",
    "metric",
    "cohort",
)
NOTIFICATIONS = _c(
    "notifications", "Notifications recorded, by sink and delivery outcome.", "tenant", "sink", "outcome"
)
NOTIFICATION_ATTEMPTS = _c(
    "notification_attempts", "Delivery attempts made for notifications.", "tenant", "sink"
)
EXPORTER_UP = _g("exporter_lakehouse_up", "1 when the exporter's last lakehouse read succeeded.")
EXPORTER_REFRESH = _g(
    "exporter_last_refresh_timestamp_seconds", "Unix time the exporter last read the lakehouse successfully."
)
EXPORTER_REFRESH_SECONDS = _g(
    "exporter_refresh_duration_seconds", "How long the exporter's last lakehouse read took."
)
EXPORTER_ERRORS = _c("exporter_refresh_errors", "Lakehouse reads of the exporter that failed.")
NOTIFICATIONS_TABLE = _g(
    "exporter_notifications_table_present",
    "1 when the lakehouse has the notifications table the counts come from.",
)

METRICS: tuple[Metric, ...] = (
    DEVICES,
    SYNC_LAG,
    DEVICE_SYNC_LAG,
    LAST_INGEST,
    ROWS,
    DUPLICATE_ROWS,
    BATCHES,
    QUARANTINED,
    DEFERRED,
    CONFLICTS,
    EVICTED,
    ROLLOUT_STATUS,
    ROLLOUT_PHASE,
    ROLLOUT_PERCENT,
    ROLLOUT_DEVICES,
    ROLLOUT_EVENTS,
    GATE_VERDICTS,
    GATE_CHECK,
    COHORT_HEALTH,
    NOTIFICATIONS,
    NOTIFICATION_ATTEMPTS,
    EXPORTER_UP,
    EXPORTER_REFRESH,
    EXPORTER_REFRESH_SECONDS,
    EXPORTER_ERRORS,
    NOTIFICATIONS_TABLE,
)


def exposed_names() -> frozenset[str]:
    """Every sample name the exporter can expose (what PromQL in rules and dashboards may select)."""
    return frozenset(n for m in METRICS for n in m.exposed_names)
