"""Rollout spec: examples load, defaults, durations, and bad input names the field."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgeplat.rollouts.spec import (
    HEALTH_METRICS,
    SCHEMA_PATH,
    RolloutSpec,
    SpecError,
    format_duration,
    json_schema,
    load_spec,
    parse_duration,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "rollouts").glob("*.yaml"))


def minimal(**over) -> dict:
    spec = {
        "name": "inference-2-1-0",
        "release": {
            "name": "inference",
            "version": "2.1.0",
            "greengrass": {"component": "com.acme.Inference", "version": "2.1.0"},
        },
        "target": {"tenants": ["acme"]},
        "strategy": {"type": "canary", "phases": [{"percent": 1}, {"percent": 10}, {"percent": 100}]},
    }
    spec.update(over)
    return spec


def errors_of(data) -> dict[str, str]:
    with pytest.raises(SpecError) as exc:
        load_spec(data)
    return dict(exc.value.errors)


def test_examples_load_and_canary_good_has_manual_50():
    names = {p.name for p in EXAMPLES}
    assert {"canary-good.yaml", "canary-bad.yaml", "blue-green.yaml"} <= names
    for path in EXAMPLES:
        assert isinstance(load_spec(path), RolloutSpec)
    good = load_spec(ROOT / "examples/rollouts/canary-good.yaml")
    assert [p.percent for p in good.phases] == [1, 10, 50, 100]
    assert [p.approval for p in good.phases] == ["auto", "auto", "manual", "auto"]
    assert load_spec(ROOT / "examples/rollouts/blue-green.yaml").strategy.type == "blueGreen"


def test_defaults_and_round_trip():
    spec = load_spec(minimal())
    assert spec.rollback == "automatic" and spec.selection.salt == "per_rollout"
    # derived from the release; the edge agent installs any release itself
    assert spec.platforms == ["greengrass", "edge_agent"]
    assert spec.phases[0].bake == timedelta(minutes=10)
    again = RolloutSpec.model_validate(json.loads(spec.model_dump_json()))
    assert again == spec


@pytest.mark.parametrize(
    "text,seconds",
    [("10m", 600), ("2h", 7200), ("1h30m", 5400), ("45s", 45), ("1d", 86400), ("500ms", 0.5), ("1.5h", 5400)],
)
def test_durations(text, seconds):
    td = parse_duration(text)
    assert td.total_seconds() == seconds
    assert parse_duration(format_duration(td)) == td


@pytest.mark.parametrize("bad", ["10", "10 minutes", "m10", "", "1h-5m"])
def test_bad_duration_names_field(bad):
    data = minimal()
    data["strategy"]["phases"][0]["bake"] = bad
    errs = errors_of(data)
    assert "bad duration" in errs["strategy.phases[0].bake"]


def test_unknown_field_named_with_path():
    data = minimal()
    data["strategy"]["phases"][1]["bak"] = "1h"
    errs = errors_of(data)
    assert "unknown field 'bak'" in errs["strategy.phases[1].bak"]
    assert "unknown field 'colour'" in errors_of(minimal(colour="blue"))["colour"]


def test_percentages_must_increase_and_end_at_100():
    data = minimal()
    data["strategy"]["phases"] = [{"percent": 1}, {"percent": 50}, {"percent": 50}, {"percent": 100}]
    with pytest.raises(SpecError) as exc:
        load_spec(data)
    assert "strategy.phases[2].percent: phases must increase (50 after 50)" in str(exc.value)
    data["strategy"]["phases"] = [{"percent": 1}, {"percent": 50}]
    assert "last phase must be 100" in errors_of(data)["strategy.phases[1].percent"]
    data["strategy"]["phases"] = [{"percent": 0}, {"percent": 100}]
    assert "strategy.phases[0].percent" in errors_of(data)


def test_gate_on_unknown_metric_and_gate_without_limit():
    errs = errors_of(
        minimal(gates=[{"metric": "error_rate", "max": 0.1}, {"metric": "latency_ms", "max": 5}])
    )
    assert "unknown metric 'latency_ms'" in errs["gates[1].metric"]
    assert "error_rate" in errs["gates[1].metric"]  # lists the known ones
    errs = errors_of(minimal(gates=[{"metric": "cpu_pct"}]))
    assert "at least one limit" in errs["gates[0]"]


def test_known_metrics_are_health_columns():
    assert set(HEALTH_METRICS) == {
        "error_rate",
        "crash_count",
        "cpu_pct",
        "mem_mb",
        "heartbeat",
        "queue_depth",
    }


def test_bad_cron_and_timezone_named():
    errs = errors_of(
        minimal(maintenance_window={"cron": "0 25 * * *", "duration": "2h", "timezone": "Mars/Olympus"})
    )
    assert "bad cron" in errs["maintenance_window.cron"]
    assert "unknown timezone 'Mars/Olympus'" in errs["maintenance_window.timezone"]


def test_maintenance_window_contains_respects_timezone():
    spec = load_spec(
        minimal(maintenance_window={"cron": "0 22 * * *", "duration": "2h", "timezone": "Europe/Berlin"})
    )
    w = spec.maintenance_window
    assert w is not None
    # 22:00 in Berlin is 21:00 UTC in winter.
    assert w.contains(datetime(2026, 1, 5, 21, 0, tzinfo=UTC))
    assert w.contains(datetime(2026, 1, 5, 22, 59, tzinfo=UTC))
    assert not w.contains(datetime(2026, 1, 5, 23, 0, tzinfo=UTC))
    assert not w.contains(datetime(2026, 1, 5, 20, 59, tzinfo=UTC))


def test_release_needs_a_platform_and_target_platform_must_be_shipped():
    data = minimal()
    data["release"] = {"name": "inference", "version": "2.1.0"}
    assert "at least one platform" in errors_of(data)["release"]
    data = minimal()
    data["target"]["platforms"] = ["greengrass", "iot_edge"]
    assert "no iot_edge artifact" in errors_of(data)["target.platforms[1]"]


def test_bad_ids_tenants_and_stratify():
    assert "name" in errors_of(minimal(name="Bad Name!"))
    data = minimal()
    data["target"]["tenants"] = []
    assert "target.tenants" in errors_of(data)
    assert "stratify_by" in errors_of(minimal(selection={"stratify_by": "region"}))["selection.stratify_by"]


def test_yaml_text_and_missing_file(tmp_path):
    spec = load_spec((ROOT / "examples/rollouts/canary-bad.yaml").read_text())
    assert spec.name == "inference-2-2-0"
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="mapping"):
        load_spec("- just\n- a list\n")


def test_exported_schema_is_current():
    assert json.loads(SCHEMA_PATH.read_text()) == json.loads(json.dumps(json_schema(), sort_keys=True))


def test_schema_cli(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeplat.rollouts.spec",
            "--check",
            str(ROOT / "examples/rollouts/canary-good.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert "ok (canary" in out.stdout


def test_domain_modules_import_without_dagster():
    code = (
        "import sys; import edgeplat.rollouts.spec, edgeplat.rollouts.selection, edgeplat.rollouts.gates,"
        " edgeplat.rollouts.events, edgeplat.rollouts.commands, edgeplat.rollouts.decide; print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
