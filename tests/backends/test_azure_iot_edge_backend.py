"""Azure IoT Edge backend through the azure-iot-hub SDK, against a loopback IoT Hub double."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgeplat.backends.azure_iot_edge import AzureIotEdgeBackend, configuration_id, target_condition
from edgeplat.backends.base import BackendError, DeviceRef, IotEdgeModule, ReleaseSpec
from tests.support.iothub_double import CONNECTION_STRING, HUB, KEY_NAME, IotHubDouble, running_iothub_double

V2 = ReleaseSpec("app", "2.0.0", iot_edge=IotEdgeModule("inference", "acr.io/acme/inference:2.0.0"))
V1 = ReleaseSpec("app", "1.0.0", iot_edge=IotEdgeModule("inference", "acr.io/acme/inference:1.0.0"))


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[str, IotHubDouble]]:
    with running_iothub_double() as served:
        yield served


@pytest.fixture
def env(hub) -> tuple[AzureIotEdgeBackend, IotHubDouble]:
    url, double = hub
    double.twins.clear()
    double.configurations.clear()
    double.module_twins.clear()
    double.requests.clear()
    for n in ("d1", "d2", "d3", "d4"):
        double.add_device(n)
    return AzureIotEdgeBackend.from_connection_string(
        CONNECTION_STRING, base_url=url, base_priority=5
    ), double


def fleet(*names: str, platform: str = "iot_edge") -> list[DeviceRef]:
    return [DeviceRef("t1", n, platform) for n in names]


def rollout_tags(double: IotHubDouble) -> dict[str, str]:
    return {d: t["tags"].get("edgeplat", {}).get("rollouts", {}).get("r1") for d, t in double.twins.items()}


def test_phases_tag_twins_and_layer_deployments(env):
    backend, double = env
    r0 = backend.deploy(fleet("d1") + fleet("gg1", platform="greengrass"), V2, rollout_id="r1", phase=0)
    assert r0.changed == (("t1", "d1"),) and r0.deployments == ("edgeplat-r1-p0",)
    assert ("t1", "gg1") in r0.skipped
    backend.deploy(fleet("d1", "d2", "d3"), V2, rollout_id="r1", phase=1)
    assert rollout_tags(double) == {"d1": "p0", "d2": "p1", "d3": "p1", "d4": None}
    assert double.twins["d1"]["tags"]["edgeplat"]["tenant"] == "t1"
    layer = double.configurations[configuration_id("r1", 1)]
    assert layer["targetCondition"] == "tags.edgeplat.rollouts.r1='p0' OR tags.edgeplat.rollouts.r1='p1'"
    assert layer["priority"] == 5 + 10 + 1 and double.configurations["edgeplat-r1-p0"]["priority"] == 15
    module = layer["content"]["modulesContent"]["$edgeAgent"]["properties.desired.modules.inference"]
    assert module["settings"]["image"] == "acr.io/acme/inference:2.0.0"


def test_repeated_deploy_is_a_noop(env):
    backend, double = env
    backend.deploy(fleet("d1", "d2"), V2, rollout_id="r1", phase=0)
    puts = len(double.calls("PUT", "/configurations"))
    assert backend.deploy(fleet("d1", "d2"), V2, rollout_id="r1", phase=0).noop
    assert len(double.calls("PUT", "/configurations")) == puts == 1
    assert len(double.configurations) == 1


def test_changed_target_updates_layer_but_new_image_is_refused(env):
    backend, double = env
    backend.deploy(fleet("d1"), V2, rollout_id="r1", phase=0)
    backend.base_priority = 50
    assert backend.deploy(fleet("d1"), V2, rollout_id="r1", phase=0).deployments == ("edgeplat-r1-p0",)
    assert double.configurations["edgeplat-r1-p0"]["priority"] == 60
    other = ReleaseSpec("app", "2.0.1", iot_edge=IotEdgeModule("inference", "acr.io/acme/inference:2.0.1"))
    with pytest.raises(BackendError, match="cannot change a deployment's content"):
        backend.deploy(fleet("d1"), other, rollout_id="r1", phase=0)


def test_rollback_removes_layers_and_clears_tags(env):
    backend, double = env
    backend.deploy(fleet("d1"), V2, rollout_id="r1", phase=0)
    backend.deploy(fleet("d1", "d2"), V2, rollout_id="r1", phase=1)
    result = backend.rollback(fleet("d1", "d2", "d4"), rollout_id="r1", to=V1)
    assert sorted(result.deployments) == ["edgeplat-r1-p0", "edgeplat-r1-p1"]
    assert result.changed == (("t1", "d1"), ("t1", "d2"))
    assert double.configurations == {}
    assert rollout_tags(double) == {"d1": None, "d2": None, "d3": None, "d4": None}
    assert backend.rollback(fleet("d1", "d2"), rollout_id="r1", to=V1).noop
    # a retried deploy after the rollback must not bring the layer back
    assert backend.deploy(fleet("d1", "d2"), V2, rollout_id="r1", phase=1).noop
    assert double.configurations == {}
    status = backend.status("r1").by_device()
    assert {k: s.state for k, s in status.items()} == {
        ("t1", "d1"): "rolled_back",
        ("t1", "d2"): "rolled_back",
    }


def test_status_reads_edge_agent_reports(env):
    backend, double = env
    backend.deploy(fleet("d1", "d2"), V2, rollout_id="r1", phase=0)
    double.set_module_reported(
        "d1",
        "$edgeAgent",
        {
            "modules": {
                "inference": {
                    "settings": {"image": "acr.io/acme/inference:2.0.0"},
                    "runtimeStatus": "running",
                }
            }
        },
    )
    status = backend.status("r1").by_device()
    assert status[("t1", "d1")].acknowledged and status[("t1", "d1")].reported_version == "2.0.0"
    assert status[("t1", "d1")].desired_version == "2.0.0" and status[("t1", "d1")].phase == 0
    assert not status[("t1", "d2")].acknowledged
    assert {s.device_id for s in backend.status().devices} == {"d1", "d2"}


def test_errors_name_the_cause(env):
    backend, double = env
    with pytest.raises(BackendError, match=r"HTTP 404.*DeviceNotFound.*register the device"):
        backend.deploy(fleet("unknown"), V2, rollout_id="r1", phase=0)
    with pytest.raises(BackendError, match="release.iot_edge"):
        backend.deploy(fleet("d1"), ReleaseSpec("app", "1"), rollout_id="r1", phase=0)
    wrong_key = f"HostName={HUB};SharedAccessKeyName={KEY_NAME};SharedAccessKey=b3RoZXIta2V5"
    bad = AzureIotEdgeBackend.from_connection_string(wrong_key, base_url=backend_url(backend))
    with pytest.raises(BackendError, match="HTTP 401.*signature"):
        bad.status("r1")


def backend_url(backend: AzureIotEdgeBackend) -> str:
    return backend.configurations.protocol.config.base_url


def test_double_rejects_invalid_configurations(hub):
    from tests.support.iothub_double import HubError

    _, double = hub
    good = {
        "id": "x",
        "priority": 1,
        "targetCondition": target_condition("r", 0),
        "content": {"modulesContent": {"$edgeAgent": {"properties.desired.modules.m": {}}}},
    }
    for change, message in (
        ({"priority": -1}, "priority"),
        ({"content": {}}, "exactly one"),
        ({"content": {"modulesContent": {"$edgeAgent": {"modules.m": {}}}}}, "properties.desired"),
        ({"bogus": 1}, "unknown configuration fields"),
    ):
        with pytest.raises(HubError, match=message):
            double._put_configuration("x", {**good, **change}, None)
    with pytest.raises(HubError, match="id"):
        double._put_configuration("Upper", {**good, "id": "Upper"}, None)
