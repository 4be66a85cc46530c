"""``edgeplat rollout``: every command runs the rollout jobs on the shared instance (visible in the UI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cli import main
from edgeplat.simulator.rollout_fleet import DemoFleet
from tests.support.rollouts import small_spec


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("EDGEPLAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    monkeypatch.delenv("EDGEPLAT_ENV", raising=False)
    return tmp_path / "home"


def cli_json(capsys, *args: str):
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_rollout_commands_go_through_jobs_on_the_shared_instance(home, tmp_path, capsys) -> None:
    from dagster import DagsterInstance

    from cli.environment import lakehouse
    from pipelines.resources import resources_for

    DemoFleet(lakehouse(), resources_for()["fleet_backend"].get(), devices=40, upload_every=None).close()
    spec = small_spec(
        strategy={
            "type": "canary",
            "phases": [{"percent": 50, "bake": "30m", "approval": "manual"}, {"percent": 100}],
        }
    )
    path = tmp_path / "r1.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))

    out = cli_json(capsys, "rollout", "launch", str(path), "--who", "alice")
    rid = out["rollout_id"]
    assert rid.startswith("r1-") and out["status"] == "awaiting_approval"
    assert [r["rollout_id"] for r in cli_json(capsys, "rollout", "list")] == [rid]

    out = cli_json(capsys, "rollout", "approve", rid, "--who", "bob", "--why", "canary looks fine")
    assert out["status"] == "deploying"
    status = cli_json(capsys, "rollout", "status", "r1")
    assert (
        status["approvals"]["0"]["actor"] == "bob"
        and status["approvals"]["0"]["reason"] == "canary looks fine"
    )
    assert cli_json(capsys, "rollout", "pause", rid, "--who", "carol", "--why", "lunch")["status"] == "paused"
    assert cli_json(capsys, "rollout", "resume", rid, "--who", "carol")["status"] == "deploying"
    assert (
        cli_json(capsys, "rollout", "abort", rid, "--who", "dan", "--why", "stop")["status"] == "rolling_back"
    )
    assert cli_json(capsys, "rollout", "status")[0]["status"] == "rolling_back"

    assert main(["rollout", "approve", rid, "--who", "eve"]) == 2
    assert "rolling back" in capsys.readouterr().err

    runs = DagsterInstance.get().get_run_records()
    assert sorted(r.dagster_run.job_name for r in runs) == sorted(
        ["launch_rollout", "approve_phase", "pause", "resume", "abort", "approve_phase"]
    )
    assert main(["rollout", "status", rid]) == 0 and "rolling_back" in capsys.readouterr().out


def test_bad_spec_names_the_field(home, tmp_path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    spec = small_spec().model_dump(mode="json", exclude_none=True)
    spec["strategy"]["phases"][1]["percent"] = 5
    path.write_text(yaml.safe_dump(spec))
    assert main(["rollout", "launch", str(path)]) == 2
    err = capsys.readouterr().err
    assert "strategy.phases[1].percent" in err and "must increase" in err
    assert main(["rollout", "status", "nope"]) == 2
    assert "edgeplat rollout list" in capsys.readouterr().err
