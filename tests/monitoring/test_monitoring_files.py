"""The monitoring files: rules and configs pass the real tools' checks, the rules behave as their
unit tests say, the committed dashboards are what the generator makes, and every metric a rule or
a dashboard selects is one the exporter serves (or a rule records)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from edgeplat.metrics.catalog import exposed_names
from tests.support.prometheus import AMTOOL, PROMTOOL, binary
from tests.support.promql import dashboard_exprs, metric_names, recorded_names, rule_exprs

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
RULES = MONITORING / "prometheus" / "edgeplat-rules.yml"
DASHBOARDS = MONITORING / "grafana" / "dashboards"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "edgeplat_dashboards", MONITORING / "grafana" / "dashboards.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.services
def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    promtool = binary(PROMTOOL, "Prometheus")
    rules = _run([promtool, "check", "rules", str(RULES)])
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _run([promtool, "check", "config", str(MONITORING / "prometheus" / "prometheus.yml")])
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.mark.services
def test_the_rules_unit_tests_pass() -> None:
    """promtool's rule unit tests: each alert fires on its condition, with its labels, and not before."""
    result = _run(
        [
            binary(PROMTOOL, "Prometheus"),
            "test",
            "rules",
            str(MONITORING / "prometheus" / "edgeplat-rules.test.yml"),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.services
def test_amtool_accepts_the_alertmanager_config(tmp_path: Path) -> None:
    amtool = binary(AMTOOL, "Alertmanager")
    good = _run([amtool, "check-config", str(MONITORING / "alerting" / "alertmanager.yml")])
    assert good.returncode == 0, good.stdout + good.stderr
    # the check is strict: a misspelt field fails it (so a pass above means something)
    bad = tmp_path / "bad.yml"
    bad.write_text(
        (MONITORING / "alerting" / "alertmanager.yml")
        .read_text()
        .replace("routing_key_file", "routing_kee_file")
    )
    assert _run([amtool, "check-config", str(bad)]).returncode != 0


def test_committed_dashboards_are_what_the_generator_makes() -> None:
    rendered = _generator().rendered()
    committed = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert set(committed) == set(rendered), (
        "run `python monitoring/grafana/dashboards.py` and commit the JSON"
    )
    for name, text in rendered.items():
        assert committed[name] == text, f"{name} is stale: run `python monitoring/grafana/dashboards.py`"
    assert set(rendered) == {
        "edgeplat-fleet-health.json",
        "edgeplat-sync-status.json",
        "edgeplat-rollout-progress.json",
    }


def test_every_metric_in_rules_and_dashboards_is_served_or_recorded() -> None:
    known = exposed_names() | recorded_names(RULES)
    used: dict[str, set[str]] = {}
    for name, expr in rule_exprs(RULES):
        used[f"rule {name}"] = metric_names(expr)
    for path in sorted(DASHBOARDS.glob("*.json")):
        for where, expr in dashboard_exprs(path):
            used.setdefault(where, set()).update(metric_names(expr))
    unknown = {where: sorted(names - known) for where, names in used.items() if names - known}
    assert unknown == {}
    # every dashboard has queries, and the check sees the names in them (it is not vacuous)
    assert all(used[w] for w in used), [w for w in used if not used[w]]
    assert "edgeplat_quarantined_batches_total" in set().union(*used.values())
    assert metric_names('sum by (x) (rate(edgeplat_nonexistent_total{a="b"}[5m]))') - known == {
        "edgeplat_nonexistent_total"
    }


def test_provisioning_points_at_the_dashboards_datasource() -> None:
    ds = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "edgeplat.yml").read_text()
    )
    uids = {d["uid"] for d in ds["datasources"]}
    assert uids == {_generator().DATASOURCE["uid"]}
    providers = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "dashboards" / "edgeplat.yml").read_text()
    )
    assert [p["type"] for p in providers["providers"]] == ["file"]
