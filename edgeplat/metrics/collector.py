"""The exporter's ``prometheus_client`` collector: lakehouse figures, read at most once per ``max_age``.

Prometheus may scrape often, and several Prometheus servers may scrape one exporter; each
read scans ledger tables, so a scrape within ``max_age`` of the last read is served from it,
and concurrent scrapes wait for one read rather than start their own. When a read fails, the
last good figures stay served and ``edgeplat_exporter_lakehouse_up`` drops to 0 (an alert
rule watches it); the next read is tried after ``max_age`` again, so a broken lakehouse costs
no more than a working one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeplat.lakehouse import Lakehouse
from edgeplat.metrics import catalog as m
from edgeplat.metrics.catalog import Reading
from edgeplat.metrics.fleet import read_fleet
from edgeplat.metrics.notifications import read_notifications
from edgeplat.metrics.rollouts import read_rollouts

log = logging.getLogger(__name__)


def family(metric: m.Metric, samples: dict[m.Labels, float] | None = None) -> Metric:
    """The ``prometheus_client`` family of ``metric`` with ``samples``."""
    cls = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
    fam = cls(metric.name, metric.help, labels=list(metric.labels))
    for labels, value in sorted((samples or {}).items()):
        fam.add_metric(list(labels), value)
    return fam


def read_all(lake: Lakehouse, now_s: float, *, per_device: bool, recent: timedelta) -> list[Reading]:
    """Every figure, from one read-only session (one consistent snapshot per statement)."""
    with lake.session(read_only=True) as con:
        return [
            *read_fleet(con, now_s, per_device=per_device),
            *read_rollouts(con, now_s, recent),
            *read_notifications(con),
        ]


class LakehouseCollector(Collector):
    """Serves the catalog's metrics from the lakehouse, refreshed at most once per ``max_age`` seconds."""

    def __init__(
        self,
        lake: Lakehouse,
        *,
        max_age: float = 15.0,
        per_device: bool = False,
        recent: timedelta = timedelta(hours=24),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lake, self.max_age, self.per_device, self.recent, self.clock = (
            lake,
            max_age,
            per_device,
            recent,
            clock,
        )
        self._lock = threading.Lock()
        self._readings: list[Reading] = []
        self._tried_at: float | None = None
        self._ok_at: float | None = None
        self._duration = 0.0
        self._errors = 0
        self._up = False

    def describe(self) -> Iterable[Metric]:
        """Every family, empty: lets a registry check names without reading the lakehouse."""
        return [family(x) for x in m.METRICS]

    def refresh(self) -> None:
        """Read the lakehouse now (the collector's clock gives "now")."""
        start = time.perf_counter()
        now = self.clock()
        self._tried_at = now
        try:
            self._readings = read_all(self.lake, now, per_device=self.per_device, recent=self.recent)
        except Exception:  # any failure of the read: keep serving, count it, alert on up == 0
            log.exception("reading the lakehouse for metrics failed")
            self._errors += 1
            self._up = False
        else:
            self._ok_at, self._up = now, True
        self._duration = time.perf_counter() - start

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._tried_at is None or self.clock() - self._tried_at >= self.max_age:
                self.refresh()
            readings = {r.metric.name: r for r in self._readings}
            own = {
                m.EXPORTER_UP: {(): float(self._up)},
                m.EXPORTER_REFRESH_SECONDS: {(): self._duration},
                m.EXPORTER_ERRORS: {(): float(self._errors)},
                m.EXPORTER_REFRESH: {(): self._ok_at} if self._ok_at is not None else {},
            }
        for metric in m.METRICS:
            if metric in own:
                yield family(metric, own[metric])
            elif metric.name in readings:
                yield family(metric, readings[metric.name].samples)
