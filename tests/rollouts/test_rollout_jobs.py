"""The rollout jobs, the promotion sensor and rollout_health's gate checks on a real Dagster instance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.events import Kind, Status
from edgeplat.rollouts.store import RolloutStore
from edgeplat.simulator.rollout_fleet import DemoFleet
from pipelines.definitions import rollout_definitions
from resources.backends import FleetBackendResource
from resources.gitops import GitOpsRepoResource
from resources.keys import PlatformSignerResource
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from tests.support.rollouts import sized_spec, small_spec


@pytest.fixture
def resources(tmp_path: Path, lake) -> dict:
    return {
        "lakehouse": LakehouseResource(catalog=lake.config.catalog, data_path=lake.config.data_path),
        "fleet_backend": FleetBackendResource(
            lakehouse=LakehouseResource(catalog=lake.config.catalog, data_path=lake.config.data_path),
            object_store=ObjectStoreResource(url=str(tmp_path / "objects")),
            platform_signer=PlatformSignerResource(
                path=str(tmp_path / "platform.pem"), create_if_missing=True
            ),
        ),
        "gitops_repo": GitOpsRepoResource(),
    }


@pytest.fixture
def defs(resources) -> dg.Definitions:
    return rollout_definitions(resources)


def run(defs: dg.Definitions, instance, job: str, op: str, config: dict, **kw):
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, run_config={"ops": {op: {"config": config}}}, raise_on_error=False, **kw
    )


def spec_yaml(**over) -> str:
    return yaml.safe_dump(small_spec(**over).model_dump(mode="json", exclude_none=True))


@pytest.mark.slow
def test_launch_approve_pause_resume_fail_through_jobs(defs, resources, lake) -> None:
    fleet = DemoFleet(
        lake, resources["fleet_backend"].get(), devices=60, start=datetime.now(UTC), upload_every=None
    )
    fleet.close()
    store = RolloutStore(lake)
    manual = {
        "type": "canary",
        "phases": [{"percent": 50, "bake": "30m", "approval": "manual"}, {"percent": 100}],
    }
    with dg.instance_for_test() as instance:
        bad = run(defs, instance, "launch_rollout", "launch_rollout_op", {"spec_yaml": "name: x\nbogus: 1\n"})
        assert not bad.success
        launched = run(
            defs,
            instance,
            "launch_rollout",
            "launch_rollout_op",
            {"spec_yaml": spec_yaml(strategy=manual), "who": "alice", "why": "ship it"},
        )
        assert launched.success
        rid = launched.output_for_node("launch_rollout_op")
        assert rid.startswith("r1-") and instance.get_dynamic_partitions("rollouts") == [rid]
        assert store.state(rid).status == Status.AWAITING_APPROVAL and store.sent(rid).num_rows == 0

        approved = run(
            defs, instance, "approve_phase", "approve_op", {"rollout": "r1", "who": "bob", "why": "ok"}
        )
        assert approved.success
        approval = next(e for e in store.events(rid) if e.kind == Kind.APPROVE)
        assert (approval.actor, approval.reason, approval.phase) == ("bob", "ok", 0)
        assert approval.inputs["run_id"] == approved.run_id
        assert store.sent(rid).num_rows > 0  # the job's tick deployed phase 0 right away
        again = run(
            defs, instance, "approve_phase", "approve_op", {"rollout": rid, "who": "bob", "why": "ok"}
        )
        assert not again.success  # nothing awaits approval: a clear failure, no second event

        assert run(
            defs, instance, "pause", "pause_op", {"rollout": rid, "who": "carol", "why": "look"}
        ).success
        assert store.state(rid).status == Status.PAUSED
        assert run(defs, instance, "resume", "resume_op", {"rollout": rid, "who": "carol"}).success
        assert run(
            defs, instance, "fail_phase", "fail_phase_op", {"rollout": rid, "who": "dan", "why": "bad"}
        ).success
        state = store.state(rid)
        assert state.status in (Status.ROLLING_BACK, Status.ROLLED_BACK)
        assert [e.actor for e in state.events if e.kind == Kind.FAIL_PHASE] == ["dan"]
        assert "rollback" in store.sent(rid).column("action").to_pylist()
        kinds = {r.dagster_run.job_name for r in instance.get_run_records()}
        assert {"launch_rollout", "approve_phase", "pause", "resume", "fail_phase"} <= kinds


@pytest.mark.slow
def test_gates_are_asset_checks_on_rollout_health(defs, resources, lake, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEPLAT_HOME", str(tmp_path / "home"))
    backend = resources["fleet_backend"].get()
    fleet = DemoFleet(
        lake, backend, devices=200, start=datetime.now(UTC) - timedelta(hours=6), upload_every=None
    )
    fleet.set_release_profile("3.0.0", error_rate=0.04)
    fleet.advance(30)
    ctl = Controller(RolloutStore(lake), backend)
    rid = ctl.launch(sized_spec(), actor="alice", now=fleet.now)
    for _ in range(40):
        ctl.tick(rid, fleet.now)
        if ctl.store.state(rid).status == Status.ROLLED_BACK:
            break
        fleet.advance(5)
    fleet.close()
    assert ctl.store.state(rid).status == Status.ROLLED_BACK
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("rollouts", [rid])
        result = defs.resolve_job_def("rollout_refresh").execute_in_process(
            instance=instance, partition_key=rid
        )
        assert result.success
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert not checks["gates"].passed and not checks["error_rate"].passed
        assert checks["error_rate"].severity == dg.AssetCheckSeverity.ERROR
        assert checks["cpu_pct"].passed  # not gated by this spec
        mats = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert mats == {"rollout_assignments", "rollout_phase_status", "rollout_health", "rollout_events"}
        health = next(
            e
            for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "rollout_health"
        )
        meta = health.materialization.metadata
        # the chart travels inside the metadata (a server path would be a broken image in the UI)
        assert meta["chart"].value.startswith(f"![rollout {rid}](data:image/png;base64,iVBORw0KGgo")
        assert meta["devices_sent"].value == 0 and meta["devices_on_release"].value == 0  # rolled back
        assert "rollback_done" in meta["progress"].value
        drift = defs.resolve_job_def("device_drift_refresh").execute_in_process(instance=instance)
        assert drift.success
    with lake.session(read_only=True) as con:
        n, new = con.execute(
            "SELECT count(*), count(desired_version) FROM rollout_assignments WHERE rollout_id = ?", [rid]
        ).fetchone()
        assert n == 200 and new == 0  # rolled back: nobody should run the release
        assert con.execute("SELECT count(*) FROM device_drift WHERE rolled_back").fetchone()[0] > 0


def test_promotion_sensor_requests_a_run_that_deploys_and_never_acts_itself(defs, resources, lake) -> None:
    from pipelines.sensors.rollout_promotion import rollout_promotion_sensor

    # 200 devices: the salt is per rollout (random id), and 10% of 40 was empty once in ~70 launches
    DemoFleet(
        lake, resources["fleet_backend"].get(), devices=200, start=datetime.now(UTC), upload_every=None
    ).close()
    store = RolloutStore(lake)

    def tick(instance, cursor=None):
        with dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs, cursor=cursor
        ) as ctx:
            return rollout_promotion_sensor(ctx)

    with dg.instance_for_test() as instance:
        rid = Controller(store, resources["fleet_backend"].get()).launch(small_spec(), actor="alice")
        first = tick(instance)
        assert [p for r in first.dynamic_partitions_requests for p in r.partition_keys] == [rid]
        # the sensor decided, but nothing was sent: the backend is called in the run it requested
        assert store.state(rid).status == Status.PENDING and store.sent(rid).num_rows == 0
        (advance,) = [r for r in first.run_requests if r.job_name == "advance_rollout"]
        assert advance.tags["edgeplat/rollout"] == rid and advance.run_key.startswith(f"advance:{rid}:1:")
        assert f"refresh:{rid}:1" in {r.run_key for r in first.run_requests}
        again = tick(instance, first.cursor).run_requests[0].run_key
        # same work, same key (the last part is the retry window, which may have turned meanwhile)
        assert again.rsplit(":", 1)[0] == advance.run_key.rsplit(":", 1)[0]

        run = defs.resolve_job_def("advance_rollout").execute_in_process(
            instance=instance, run_config=advance.run_config, tags=advance.tags
        )
        assert run.success
        assert store.state(rid).status == Status.DEPLOYING and store.sent(rid).num_rows > 0
        second = tick(instance, first.cursor)
        # deployed and waiting for acknowledgements: no step is due, the assets refresh once
        assert not [r for r in second.run_requests if r.job_name == "advance_rollout"]
        assert f"refresh:{rid}:{len(store.events(rid))}" in {r.run_key for r in second.run_requests}
        assert [e.kind for e in store.events(rid)].count(Kind.DEPLOY_PHASE) == 1  # no double promotion


def test_rollout_definitions_load_and_the_launchpad_shows_the_spec() -> None:
    from pipelines.definitions import build_definitions

    defs = build_definitions()
    job = defs.resolve_job_def("launch_rollout")
    fields = job.run_config_schema.config_type.fields["ops"].config_type.fields["launch_rollout_op"]
    config = fields.config_type.fields["config"].config_type.fields
    assert {"spec_yaml", "who", "why"} <= set(config)
    assert "strategy" in config["spec_yaml"].default_value  # the example spec, ready to edit
    assert {s.name for s in defs.sensors} >= {"rollout_promotion_sensor", "rollout_gitops_sensor"}
    graph = defs.resolve_asset_graph()
    assert {k.name for k in graph.asset_check_keys} >= {"gates", "error_rate", "crash_count"}


def test_a_failed_step_is_requested_again_in_the_next_retry_window(monkeypatch) -> None:
    from pipelines.sensors import rollout_promotion

    def key(at: float, due: list[str]) -> str:
        monkeypatch.setattr(rollout_promotion.time, "time", lambda: at)
        return rollout_promotion.advance_request("r1-x", 4, due, "why").run_key

    window = rollout_promotion.RETRY_WINDOW_S
    start = 100 * window
    assert key(start, ["r1:0:deploy"]) == key(start + window - 1, ["r1:0:deploy"])  # one run per window
    assert key(start, ["r1:0:deploy"]) != key(start + window, ["r1:0:deploy"])  # retried after it
    assert key(start, ["r1:0:deploy"]) != key(start, ["r1:0:deploy", "late-deploy:3"])  # new work: new run
