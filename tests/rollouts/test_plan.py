"""Plans sized to decide: ``rollout plan`` prints each phase per stratum, and a plan that cannot
reach a gate verdict is refused from every entry point (CLI, the UI's launch job, GitOps)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pyarrow as pa
import pytest
import yaml

from cli import main
from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.gitops import GitOpsWatcher
from edgeplat.rollouts.plan import PlanError, plan_rollout, require_decidable
from edgeplat.rollouts.spec import load_spec
from edgeplat.rollouts.store import RolloutStore
from edgeplat.simulator.rollout_fleet import register_devices

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples/rollouts/canary-good.yaml"


def fleet(n: int = 1000, offline_every: int = 10) -> list[SimpleNamespace]:
    """The example's target: two tenants, both platforms, both channels; every 10th device offline."""
    return [
        SimpleNamespace(
            tenant_id=("acme", "globex")[i % 2],
            device_id=f"dev-{i:05d}",
            platform=("greengrass", "iot_edge")[(i // 2) % 2],
            tags={"channel": ("stable", "beta")[(i // 4) % 2]},
            online=i % offline_every != 3,
            version="2.0.0",
            slot="a",
        )
        for i in range(n)
    ]


def register(lake, devices) -> None:
    with lake.session() as con:
        register_devices(con, devices, datetime(2026, 1, 5, tzinfo=UTC))


def unsized_yaml() -> str:
    """The example as it shipped before: a 1% first phase with no min_devices."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["strategy"]["phases"][0].pop("min_devices")
    data.pop("maintenance_window")
    return yaml.safe_dump(data)


def targets(devices) -> pa.Table:
    return pa.table(
        {
            "tenant_id": [d.tenant_id for d in devices],
            "device_id": [d.device_id for d in devices],
            "platform": [d.platform for d in devices],
            "tags": [yaml.safe_dump(d.tags, default_flow_style=True).strip() for d in devices],
            "status": ["online" if d.online else "offline" for d in devices],
        }
    )


def test_plan_sizes_each_phase_per_stratum_and_refuses_with_the_fix() -> None:
    devices = fleet()
    unsized = plan_rollout(load_spec(unsized_yaml()), targets(devices))
    assert not unsized.ok and unsized.online_fraction == pytest.approx(0.9)
    first = unsized.phases[0]
    assert first.per_stratum == {"acme": 5, "globex": 5} and first.placed == 10
    assert first.online_assured < 15 and first.min_sample_at is None
    (problem,) = unsized.problems
    assert "places 10 devices" in problem and "min_devices 15" in problem and "min_devices: 21" in problem
    with pytest.raises(PlanError, match="launch refused"):
        require_decidable(unsized)

    sized = plan_rollout(load_spec(EXAMPLE), targets(devices))
    assert sized.ok, sized.problems
    first = sized.phases[0]
    assert first.per_stratum == {"acme": 25, "globex": 25} and first.online_assured >= 15
    # 600 samples at one a minute from >= 38 reporting canaries: within 16 minutes; verdict after the
    # 30-minute wait for the offline devices (device_timeout) and the 1h bake
    assert first.min_sample_at.total_seconds() <= 16 * 60 and first.verdict_by.total_seconds() == 90 * 60
    assert [p.per_stratum["acme"] for p in sized.phases] == [25, 50, 250, 500]

    short_bake = yaml.safe_load(EXAMPLE.read_text())
    short_bake["strategy"]["phases"][0].update(min_devices=30, bake="10m")
    (problem,) = plan_rollout(load_spec(short_bake), targets(devices)).problems
    assert "min_samples 600" in problem and "bake at least" in problem


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("EDGEPLAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    monkeypatch.delenv("EDGEPLAT_ENV", raising=False)
    return tmp_path / "home"


@pytest.mark.slow
def test_cli_plan_prints_the_plan_and_launch_refuses_an_unsized_one(home, tmp_path, capsys) -> None:
    from cli.environment import lakehouse

    lake = lakehouse()
    lake.ensure_schema()
    register(lake, fleet())
    assert main(["rollout", "plan", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "1000 target devices, 90% online" in out and "launchable" in out
    rows = [line for line in out.splitlines() if "│" in line]
    # phase 0: 25 devices in each tenant, and the earliest verdict 1h30m after its deploy
    assert any("acme" in r and " 25 " in r and "+1h30m" in r for r in rows), out
    assert any("globex" in r and " 25 " in r for r in rows), out

    unsized = tmp_path / "unsized.yaml"
    unsized.write_text(unsized_yaml())
    assert main(["rollout", "plan", str(unsized)]) == 1
    out = capsys.readouterr().out
    assert "REFUSED" in out and "refused: phase 0 (1%): places 10 devices" in out

    assert main(["rollout", "launch", str(unsized), "--who", "alice"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach a gate verdict" in err and "min_devices: 21" in err
    assert RolloutStore(lake).list_rollouts() == []


@pytest.mark.slow
def test_ui_launch_job_refuses_an_unsized_plan(tmp_path, lake) -> None:
    from pipelines.definitions import rollout_definitions
    from resources.backends import FleetBackendResource
    from resources.gitops import GitOpsRepoResource
    from resources.keys import PlatformSignerResource
    from resources.lakehouse import LakehouseResource
    from resources.object_store import ObjectStoreResource

    register(lake, fleet())
    defs = rollout_definitions(
        {
            "lakehouse": LakehouseResource(catalog=lake.config.catalog, data_path=lake.config.data_path),
            "fleet_backend": FleetBackendResource(
                lakehouse=LakehouseResource(catalog=lake.config.catalog, data_path=lake.config.data_path),
                object_store=ObjectStoreResource(url=str(tmp_path / "objects")),
                platform_signer=PlatformSignerResource(path=str(tmp_path / "k.pem"), create_if_missing=True),
            ),
            "gitops_repo": GitOpsRepoResource(),
        }
    )
    job = defs.resolve_job_def("launch_rollout")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance,
            run_config={"ops": {"launch_rollout_op": {"config": {"spec_yaml": unsized_yaml(), "who": "ui"}}}},
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
        assert "cannot reach a gate verdict" in failure.user_failure_data.description
        assert "min_devices: 21" in failure.user_failure_data.description
        assert instance.get_dynamic_partitions("rollouts") == []
    assert RolloutStore(lake).list_rollouts() == []


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_gitops_refuses_an_unsized_plan_and_launches_a_sized_one(tmp_path, lake, backend) -> None:
    register(lake, fleet())
    origin, dev = tmp_path / "origin.git", tmp_path / "dev"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
    git(tmp_path, "clone", "--quiet", str(origin), str(dev))
    git(dev, "checkout", "--quiet", "-B", "main")
    git(dev, "config", "user.email", "dana@example.com")
    git(dev, "config", "user.name", "Dana")
    (dev / "rollouts").mkdir()
    (dev / "rollouts" / "small.yaml").write_text(unsized_yaml())
    git(dev, "add", "-A")
    git(dev, "commit", "--quiet", "-m", "ship 2.1.0 to 1%")
    git(dev, "push", "--quiet", "origin", "HEAD:main")
    # the sensor itself: no run requested, no partition added, nothing launched
    from pipelines.sensors.rollout_gitops import rollout_gitops_sensor
    from resources.backends import FleetBackendResource
    from resources.gitops import GitOpsRepoResource
    from resources.keys import PlatformSignerResource
    from resources.lakehouse import LakehouseResource
    from resources.object_store import ObjectStoreResource

    resources = {
        "lakehouse": LakehouseResource(catalog=lake.config.catalog, data_path=lake.config.data_path),
        "fleet_backend": FleetBackendResource(
            lakehouse=LakehouseResource(catalog=lake.config.catalog, data_path=lake.config.data_path),
            object_store=ObjectStoreResource(url=str(tmp_path / "objects")),
            platform_signer=PlatformSignerResource(path=str(tmp_path / "k.pem"), create_if_missing=True),
        ),
        "gitops_repo": GitOpsRepoResource(repo=str(origin), workdir=str(tmp_path / "sensor-clone")),
    }
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(instance=instance, resources=resources) as ctx,
    ):
        result = rollout_gitops_sensor(ctx)
    assert not result.run_requests and not result.dynamic_partitions_requests and result.skip_reason

    ctl = Controller(RolloutStore(lake), backend)
    assert ctl.store.list_rollouts() == []
    watcher = GitOpsWatcher(str(origin), tmp_path / "clone")
    first = watcher.sync(ctl, None)
    assert first.launched == [] and first.invalid[0]["path"] == "rollouts/small.yaml"
    assert "cannot reach a gate verdict" in first.invalid[0]["errors"]
    assert "min_devices: 21" in first.invalid[0]["errors"]
    assert ctl.store.list_rollouts() == []

    data = yaml.safe_load(unsized_yaml())
    data["strategy"]["phases"][0]["min_devices"] = 50  # the fix the refusal names (with margin)
    (dev / "rollouts" / "small.yaml").write_text(yaml.safe_dump(data))
    git(dev, "commit", "--quiet", "-am", "size phase 0")
    git(dev, "push", "--quiet", "origin", "HEAD:main")
    second = watcher.sync(ctl, first.head)
    assert [x["path"] for x in second.launched] == ["rollouts/small.yaml"] and second.invalid == []


def test_spread_is_measured_from_recent_health_and_warns_about_a_phase_too_small_to_pass(lake, make_fleet):
    from edgeplat.rollouts.cohorts import target_devices
    from edgeplat.rollouts.plan import fleet_spread, healthy_pass_chance

    demo = make_fleet(devices=400)  # per-device error rates: gamma(20) around 1%, i.e. a 22% spread
    demo.advance(60)
    spec = load_spec(EXAMPLE)
    with lake.session(read_only=True) as con:
        spread = fleet_spread(con, list(spec.target.tenants), target_devices(con, spec))
    sp = spread["error_rate"]
    assert 0.1 < sp.cv < 0.35 and 0.5 < sp.events_per_minute < 0.7  # 60 requests a minute at ~1%
    gate = spec.gates_for(0)[0]
    assert healthy_pass_chance(gate, 1.5, 20, 60, sp) > 0.95
    # the same phase on a fleet whose devices differ by 50%: warned, with the size that would pass
    wide = type(sp)(sp.events_per_minute, 0.5)
    small = yaml.safe_load(EXAMPLE.read_text())
    small["strategy"]["phases"][0]["min_devices"] = 25
    plan = plan_rollout(load_spec(small), targets(fleet()), spread={"error_rate": wide})
    assert plan.ok and len(plan.warnings) == 1 and "give the phase min_devices: " in plan.warnings[0]
