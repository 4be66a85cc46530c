"""The state-rules sensor sends a rules change to the devices by itself: a changed operator file (or
a GitOps commit changing it) requests one ``publish_state_rules`` run, after which a real device
agent merges with the new rules; a tick after it requests nothing; a bad file requests nothing and
says why, naming the file."""

from __future__ import annotations

import secrets
from pathlib import Path

import dagster as dg

from edge_sync.agent import DeviceAgent
from edge_sync.identity import PlatformSigner
from pipelines.definitions import sync_definitions
from pipelines.resources import embedded_sync_resources
from pipelines.sensors.state_rules_publish import state_rules_publish_sensor
from resources.keys import PlatformSignerResource
from resources.state_rules import StateRulesResource
from tests.support.fleet import Fleet
from tests.support.git_repo import GitOpsRepo
from tests.support.operator_rules import write_rules

TENANT, DEVICE = "t1", "d1"


class Platform:
    """The sync's code location on the fleet's lakehouse and store, with the given rules source."""

    def __init__(self, fleet: Fleet, state_rules: StateRulesResource) -> None:
        self.fleet = fleet
        self.resources = embedded_sync_resources(
            catalog=fleet.lake.config.catalog,
            data_path=fleet.lake.config.data_path,
            objects=str(fleet.store.root),
            keys=str(fleet.root / "keys"),
            registry=str(fleet.root / "devices"),
            platform_key=str(fleet.root / "platform.pem"),
        )
        self.resources["state_rules"] = state_rules
        self.signer: PlatformSigner = self.resources["platform_signer"].get()  # creates the key
        self.defs = sync_definitions(self.resources)
        self.instance = dg.DagsterInstance.ephemeral()

    def tick(self) -> dg.SensorResult:
        with dg.build_sensor_context(instance=self.instance, resources=self.resources) as ctx:
            return state_rules_publish_sensor(ctx)

    def run(self, job: str, request: dg.RunRequest | None = None, **run_config) -> dg.ExecuteInProcessResult:
        result = self.defs.resolve_job_def(job).execute_in_process(
            run_config=run_config or None, instance=self.instance, tags=request.tags if request else None
        )
        assert result.success
        return result

    def edit(self, **fields: str) -> None:
        config = {
            "tenant_id": TENANT,
            "device_id": DEVICE,
            "namespace": "config",
            "key": "main",
            "fields": fields,
        }
        self.run("edit_device_state", ops={"apply_state_edits": {"config": config}})

    def agent(self) -> DeviceAgent:
        (self.fleet.root / "device").mkdir(exist_ok=True)
        return DeviceAgent.for_device(
            TENANT,
            DEVICE,
            cache_path=self.fleet.root / "device" / "cache.duckdb",
            cache_key=secrets.token_bytes(32),
            wall_ms=self.fleet.clock,
            store=self.fleet.store,
            key_service=self.fleet.keys,
            identity=self.fleet.device(TENANT, DEVICE),
            platform_keys=self.signer.public_key_bytes(),
            sleep=lambda s: None,
        )


def requests(result: dg.SensorResult) -> list[dg.RunRequest]:
    return list(result.run_requests or [])


def reason(result: dg.SensorResult) -> str:
    return result.skip_reason.skip_message if result.skip_reason else ""


def test_a_changed_rules_file_is_sent_to_the_devices_once(fleet: Fleet) -> None:
    path = write_rules(fleet.root / "operator", version=2, label_rule="max")
    platform = Platform(fleet, StateRulesResource(path=str(path)))
    platform.edit(threshold="5")  # the device's document: its edit and rules version 2
    agent = platform.agent()
    try:
        assert agent.sync_once().downlink["rules_version"] == 2
        [first] = requests(platform.tick())  # version 2 was never sent as such: sent once
        assert platform.run("publish_state_rules", first).output_for_node("publish_rules_to_devices") == {
            TENANT: 0
        }
        idle = platform.tick()
        assert requests(idle) == [] and "version 2" in reason(idle) and "already sent" in reason(idle)

        write_rules(fleet.root / "operator", version=3, label_rule="min")  # the operator's change
        [request] = requests(platform.tick())
        assert (
            request.run_key.startswith("state-rules:v3:")
            and request.tags["edgeplat/state_rules_version"] == "3"
        )
        assert requests(platform.tick()) == [request]  # asked again before the run: the same run key
        sent = platform.run("publish_state_rules", request)
        assert sent.output_for_node("publish_rules_to_devices") == {TENANT: 1}

        report = agent.sync_once()
        assert report.ok, report.errors
        assert report.downlink["rules_version"] == 3 and report.downlink["rules_error"] is None
        assert agent.status()["state_rules"]["version"] == 3
        assert requests(again := platform.tick()) == [] and "version 3" in reason(again)
        assert fleet.count("SELECT version, documents_rewritten FROM state_rules_published ORDER BY 1") == [
            (2, 0),
            (3, 1),
        ]
    finally:
        agent.close()


def test_rules_that_do_not_load_or_reuse_a_version_send_nothing_and_say_why(fleet: Fleet) -> None:
    path = write_rules(fleet.root / "operator", version=3, label_rule="max")
    platform = Platform(fleet, StateRulesResource(path=str(path)))
    [request] = requests(platform.tick())
    platform.run("publish_state_rules", request)

    write_rules(fleet.root / "operator", version=4, label_rule="maximum")  # not a rule
    refused = platform.tick()
    assert requests(refused) == []
    assert f"state rules from {path} (EDGEPLAT_STATE_RULES) are not valid" in reason(refused)
    assert "maximum" in reason(refused) and "nothing sent to devices" in reason(refused)

    write_rules(fleet.root / "operator", version=3, label_rule="min")  # changed, version not bumped
    refused = platform.tick()
    assert requests(refused) == []
    assert "changed under version 3" in reason(refused) and "bump `version`" in reason(refused)
    assert fleet.count("SELECT count(*) FROM state_rules_published") == [(1,)]


def test_a_failed_send_is_reported_not_requested_again(fleet: Fleet) -> None:
    path = write_rules(fleet.root / "operator", version=2, label_rule="max")
    platform = Platform(fleet, StateRulesResource(path=str(path)))
    [request] = requests(platform.tick())
    broken = sync_definitions(
        {**platform.resources, "platform_signer": PlatformSignerResource(path=str(fleet.root / "no-key.pem"))}
    )
    failed = broken.resolve_job_def("publish_state_rules").execute_in_process(
        instance=platform.instance, tags={"dagster/run_key": request.run_key}, raise_on_error=False
    )
    assert not failed.success
    stuck = platform.tick()
    assert requests(stuck) == []
    assert f"its run {failed.run_id} failed" in reason(stuck) and "by hand" in reason(stuck)
    platform.run("publish_state_rules")  # launched by hand
    assert "already sent" in reason(platform.tick())


def test_the_packaged_rules_alone_request_nothing(fleet: Fleet) -> None:
    idle = Platform(fleet, StateRulesResource()).tick()
    assert requests(idle) == [] and "the packaged rules, and no others were ever used" in reason(idle)


def test_a_gitops_commit_changing_the_rules_file_requests_a_send(fleet: Fleet, tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "git")
    repo.write(
        "platform/state_rules.yaml", write_rules(tmp_path / "v2", version=2, label_rule="max").read_text()
    )
    repo.commit("operator rules")
    rules = StateRulesResource(
        gitops_path="platform/state_rules.yaml",
        gitops_repo=str(repo.origin),
        gitops_workdir=str(tmp_path / "work"),
    )
    platform = Platform(fleet, rules)
    [first] = requests(platform.tick())
    assert first.run_key.startswith("state-rules:v2:")
    platform.run("publish_state_rules", first)
    repo.write("README.md", "other files change\n")
    repo.commit("docs")
    assert requests(platform.tick()) == []

    repo.write(
        "platform/state_rules.yaml", write_rules(tmp_path / "v3", version=3, label_rule="min").read_text()
    )
    repo.commit("label takes the smallest")
    [second] = requests(platform.tick())
    assert second.run_key.startswith("state-rules:v3:")
    assert (tmp_path / "work" / "clone-sensor" / ".git").is_dir()  # the sensor fetches in its own clone
