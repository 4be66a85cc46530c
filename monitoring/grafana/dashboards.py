"""The Grafana dashboards as code (grafanalib): fleet health, sync status, rollout progress.

``python monitoring/grafana/dashboards.py`` writes ``dashboards/<uid>.json``, the files Grafana
loads through ``provisioning/``; ``--check`` exits 1 when a committed file differs from what
this code generates. Every query uses only the exporter's metrics (edgeplat/metrics/catalog.py)
and the recording rules of ``monitoring/prometheus/edgeplat-rules.yml``; a test checks both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    Dashboard,
    GridPos,
    Stat,
    Table,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

OUT = Path(__file__).resolve().parent / "dashboards"
# the uid the provisioned datasource has (provisioning/datasources/edgeplat.yml)
DATASOURCE = {"type": "prometheus", "uid": "edgeplat-prometheus"}
TENANT = 'tenant=~"$tenant"'
WIDTH = 24


class Layout:
    """Places panels left to right in rows of ``WIDTH`` grid units."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0

    def at(self, w: int, h: int) -> GridPos:
        if self.x + w > WIDTH:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = GridPos(h=h, w=w, x=self.x, y=self.y)
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos


def _targets(*queries: tuple[str, str], instant: bool = False, fmt: str = "time_series") -> list[Target]:
    return [
        Target(
            expr=expr,
            legendFormat=legend,
            refId=chr(ord("A") + i),
            datasource=DATASOURCE,
            instant=instant,
            format=fmt,
        )
        for i, (expr, legend) in enumerate(queries)
    ]


def series(
    layout: Layout,
    title: str,
    *queries: tuple[str, str],
    unit: str = "",
    w: int = 12,
    h: int = 8,
    stacked: bool = False,
) -> TimeSeries:
    return TimeSeries(
        title=title,
        dataSource=DATASOURCE,
        targets=_targets(*queries),
        gridPos=layout.at(w, h),
        unit=unit,
        stacking={"mode": "normal", "group": "A"} if stacked else {},
    )


def stat(layout: Layout, title: str, expr: str, unit: str = "none", w: int = 6) -> Stat:
    return Stat(
        title=title,
        dataSource=DATASOURCE,
        targets=_targets((expr, ""), instant=True),
        gridPos=layout.at(w, 4),
        format=unit,
        reduceCalc="lastNotNull",
        graphMode="none",
    )


def table(layout: Layout, title: str, expr: str, w: int = 24, h: int = 8) -> Table:
    return Table(
        title=title,
        dataSource=DATASOURCE,
        targets=_targets((expr, ""), instant=True, fmt="table"),
        gridPos=layout.at(w, h),
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True}}}],
    )


def variable(name: str, query: str, *, include_all: bool = True) -> Template:
    return Template(
        name=name,
        label=name,
        query=query,
        dataSource=DATASOURCE,
        includeAll=include_all,
        multi=True,
        allValue=".*",
        default="$__all",
        refresh=2,  # on time range change: new tenants and rollouts appear
    )


def dashboard(uid: str, title: str, panels: list, variables: list[Template]) -> Dashboard:
    return Dashboard(
        title=title,
        uid=uid,
        tags=["edgeplat"],
        panels=panels,
        templating=Templating(list=variables),
        time=Time("now-6h", "now"),
        refresh="30s",
        timezone="utc",
    ).auto_panel_ids()


def fleet_health() -> Dashboard:
    lay = Layout()
    panels = [
        stat(lay, "Devices online", f'sum(edgeplat_devices{{status="online",{TENANT}}})'),
        stat(lay, "Devices offline", f'sum(edgeplat_devices{{status="offline",{TENANT}}})'),
        stat(
            lay,
            "Batches quarantined (1h)",
            f"sum(increase(edgeplat_quarantined_batches_total{{{TENANT}}}[1h]))",
        ),
        stat(lay, "Exporter reads the lakehouse", "min(edgeplat_exporter_lakehouse_up)"),
        series(
            lay,
            "Devices by status",
            (
                f"sum by (tenant, platform, status) (edgeplat_devices{{{TENANT}}})",
                "{{tenant}} {{platform}} {{status}}",
            ),
            stacked=True,
        ),
        series(
            lay,
            "Share of devices offline",
            (f"edgeplat:devices_offline:ratio{{{TENANT}}}", "{{tenant}} {{platform}}"),
            unit="percentunit",
        ),
        series(
            lay,
            "Quarantined batches by reason",
            (f"sum by (reason) (edgeplat:quarantined_batches:rate5m{{{TENANT}}})", "{{reason}}"),
            unit="ops",
            stacked=True,
        ),
        series(
            lay,
            "State conflicts by rule",
            (f"sum by (rule) (edgeplat:state_conflicts:rate5m{{{TENANT}}})", "{{rule}}"),
            unit="ops",
        ),
        series(
            lay,
            "Rows evicted on devices before upload",
            (
                f"sum by (stream, reason) (rate(edgeplat_evicted_rows_total{{{TENANT}}}[$__rate_interval]))",
                "{{stream}} {{reason}}",
            ),
            unit="rps",
        ),
        series(
            lay,
            "Notifications by outcome",
            (
                f"sum by (sink, outcome) (increase(edgeplat_notifications_total{{{TENANT}}}[$__rate_interval]))",
                "{{sink}} {{outcome}}",
            ),
        ),
    ]
    return dashboard(
        "edgeplat-fleet-health",
        "Edge fleet: health",
        panels,
        [variable("tenant", "label_values(edgeplat_devices, tenant)")],
    )


def sync_status() -> Dashboard:
    lay = Layout()
    panels = [
        stat(
            lay,
            "Since last ingest",
            f"time() - max(edgeplat_last_ingest_timestamp_seconds{{{TENANT}}})",
            unit="s",
        ),
        stat(
            lay,
            "Sync lag p90 (worst tenant)",
            f'max(edgeplat_sync_lag_seconds{{quantile="0.9",{TENANT}}})',
            unit="s",
        ),
        stat(lay, "Batches deferred (clock ahead)", f"sum(edgeplat_deferred_batches{{{TENANT}}})"),
        stat(lay, "Exporter read time", "max(edgeplat_exporter_refresh_duration_seconds)", unit="s"),
        series(
            lay,
            "Sync lag by quantile",
            (
                f"max by (tenant, quantile) (edgeplat_sync_lag_seconds{{{TENANT}}})",
                "{{tenant}} q{{quantile}}",
            ),
            unit="s",
            w=24,
        ),
        series(
            lay,
            "Rows ingested by stream",
            (f"sum by (stream) (edgeplat:ingested_rows:rate5m{{{TENANT}}})", "{{stream}}"),
            unit="rps",
            stacked=True,
        ),
        series(
            lay,
            "Batches accepted and quarantined",
            (f"sum(edgeplat:ingested_batches:rate5m{{{TENANT}}})", "accepted"),
            (f"sum(edgeplat:quarantined_batches:rate5m{{{TENANT}}})", "quarantined"),
            unit="ops",
        ),
        series(
            lay,
            "Duplicate rows (re-sent and already stored)",
            (
                f"sum by (stream) (rate(edgeplat_duplicate_rows_total{{{TENANT}}}[$__rate_interval]))",
                "{{stream}}",
            ),
            unit="rps",
        ),
        series(
            lay,
            "Time since each tenant's last ingest",
            (f"time() - edgeplat_last_ingest_timestamp_seconds{{{TENANT}}}", "{{tenant}}"),
            unit="s",
        ),
    ]
    return dashboard(
        "edgeplat-sync-status",
        "Edge fleet: sync status",
        panels,
        [variable("tenant", "label_values(edgeplat_ingested_batches_total, tenant)")],
    )


def rollout_progress() -> Dashboard:
    lay = Layout()
    rollout = 'rollout=~"$rollout"'
    panels = [
        table(lay, "Rollouts (active and recently finished)", f"edgeplat_rollout_status{{{rollout}}} == 1"),
        series(
            lay,
            "Target share of the current phase",
            (f"edgeplat_rollout_target_percent{{{rollout}}}", "{{rollout}}"),
            unit="percent",
        ),
        series(lay, "Devices acted on", (f"edgeplat_rollout_devices{{{rollout}}}", "{{rollout}} {{action}}")),
        series(
            lay,
            "Cohort health in the latest gate report",
            (f"edgeplat_rollout_cohort_health{{{rollout}}}", "{{rollout}} {{metric}} {{cohort}}"),
        ),
        series(
            lay,
            "Gate verdicts recorded",
            (
                f"sum by (rollout, verdict) (increase(edgeplat_rollout_gate_verdicts_total{{{rollout}}}[$__rate_interval]))",
                "{{rollout}} {{verdict}}",
            ),
            stacked=True,
        ),
        table(lay, "Latest gate checks", f"edgeplat_rollout_gate_check{{{rollout}}} == 1", w=12),
        series(
            lay,
            "Rollout decisions by kind (all rollouts)",
            (
                'sum by (kind) (increase(edgeplat_rollout_events_total{kind!="created"}[$__rate_interval]))',
                "{{kind}}",
            ),
            w=12,
        ),
        series(lay, "Current phase", (f"edgeplat_rollout_phase{{{rollout}}}", "{{rollout}}"), w=24),
    ]
    return dashboard(
        "edgeplat-rollout-progress",
        "Edge fleet: rollout progress",
        panels,
        [variable("rollout", "label_values(edgeplat_rollout_status, rollout)")],
    )


DASHBOARDS = (fleet_health, sync_status, rollout_progress)


def rendered() -> dict[str, str]:
    """File name -> JSON text of every dashboard, as committed."""
    out = {}
    for build in DASHBOARDS:
        d = build()
        out[f"{d.uid}.json"] = (
            json.dumps(d.to_json_data(), cls=DashboardEncoder, sort_keys=True, indent=2) + "\n"
        )
    return out


def main(argv: list[str]) -> int:
    files = rendered()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (OUT / n).is_file() or (OUT / n).read_text() != text]
        extra = sorted({p.name for p in OUT.glob("*.json")} - set(files))
        for name in stale + extra:
            print(f"{OUT / name}: differs from the generator; run `python monitoring/grafana/dashboards.py`")
        return 1 if stale or extra else 0
    OUT.mkdir(exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
