"""Greengrass backend: IoT thing groups on the moto server, greengrassv2 on a loopback double."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import boto3
import pytest

from edgeplat.backends.base import BackendError, DeviceRef, GreengrassComponent, ReleaseSpec
from edgeplat.backends.greengrass import GreengrassBackend, JobPolicy, group_name
from tests.support.greengrass_double import ApiError, GreengrassDouble, running_greengrass_double, validate
from tests.support.moto_server import MOTO_CREDENTIALS

pytestmark = pytest.mark.services

V1 = ReleaseSpec("app", "1.0.0", greengrass=GreengrassComponent("com.acme.App", "1.0.0"))
V2 = ReleaseSpec("app", "2.0.0", greengrass=GreengrassComponent("com.acme.App", "2.0.0"))


@pytest.fixture(scope="module")
def gg_double() -> Iterator[tuple[str, GreengrassDouble]]:
    with running_greengrass_double() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def clients(moto_server, gg_double):
    session = boto3.session.Session(**MOTO_CREDENTIALS)  # one session: loading service models is slow
    iot = session.client("iot", region_name="us-east-1", endpoint_url=moto_server)
    gg = session.client("greengrassv2", region_name="us-east-1", endpoint_url=gg_double[0])
    yield iot, gg
    iot.close()
    gg.close()


@pytest.fixture
def env(clients, gg_double, request):
    _, double = gg_double
    double.deployments.clear()
    double.requests.clear()
    backend = GreengrassBackend(
        *clients, job_policy=JobPolicy(device_timeout=timedelta(minutes=45), abort_min_executed=5)
    )
    # each test gets its own rollout id: the moto server is shared by the session
    rollout = f"r-{request.node.name.replace('_', '-')[:40]}"
    return backend, double, rollout


def fleet(*names: str, platform: str = "greengrass") -> list[DeviceRef]:
    return [DeviceRef("t1", n, platform) for n in names]


def members(backend: GreengrassBackend, group: str) -> set[str]:
    return set(backend.iot.list_things_in_thing_group(thingGroupName=group)["things"])


def test_phases_create_groups_and_deployments(env):
    backend, double, rollout = env
    r0 = backend.deploy(
        fleet("d1", "d2") + fleet("az1", platform="iot_edge"), V2, rollout_id=rollout, phase=0
    )
    assert r0.changed == (("t1", "d1"), ("t1", "d2")) and len(r0.deployments) == 1
    assert ("t1", "az1") in r0.skipped
    r1 = backend.deploy(fleet("d1", "d2", "d3", "d4"), V2, rollout_id=rollout, phase=1)
    assert r1.changed == (("t1", "d3"), ("t1", "d4"))  # earlier-phase devices stay where they are
    assert members(backend, group_name(rollout, 0)) == {"t1_d1", "t1_d2"}
    assert members(backend, group_name(rollout, 1)) == {"t1_d3", "t1_d4"}

    creates = double.calls("CreateDeployment")
    assert len(creates) == 2
    first = creates[0]
    group0 = backend.iot.describe_thing_group(thingGroupName=group_name(rollout, 0))
    assert first["targetArn"] == group0["thingGroupArn"]
    assert first["components"] == {"com.acme.App": {"componentVersion": "2.0.0"}}
    assert first["deploymentPolicies"]["failureHandlingPolicy"] == "ROLLBACK"
    job = first["iotJobConfiguration"]
    assert job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 45}
    assert job["abortConfig"]["criteriaList"][0]["minNumberOfExecutedThings"] == 5
    thing = backend.iot.describe_thing(thingName="t1_d1")
    prev = thing["attributes"].pop("edgeplat_prev")
    assert thing["attributes"] == {"tenant_id": "t1", "device_id": "d1"}
    assert prev.endswith(":")  # recorded at deploy time: no version of the component ran before


def test_repeated_deploy_is_a_noop(env):
    backend, double, rollout = env
    backend.deploy(fleet("d1"), V2, rollout_id=rollout, phase=0)
    again = backend.deploy(fleet("d1"), V2, rollout_id=rollout, phase=0)
    assert again.noop
    assert len(double.calls("CreateDeployment")) == 1


def test_rollback_cancels_and_redeploys_previous(env):
    backend, double, rollout = env
    backend.deploy(fleet("d1"), V2, rollout_id=rollout, phase=0)
    backend.deploy(fleet("d1", "d2"), V2, rollout_id=rollout, phase=1)
    result = backend.rollback(fleet("d1", "d2"), rollout_id=rollout, to=V1)
    assert len(result.deployments) == 2
    assert len(double.calls("CancelDeployment")) == 2
    rollbacks = double.calls("CreateDeployment")[2:]
    assert [r["components"] for r in rollbacks] == [{"com.acme.App": {"componentVersion": "1.0.0"}}] * 2
    assert backend.rollback(fleet("d1", "d2"), rollout_id=rollout, to=V1).noop
    # a retried deploy after the rollback does not resurrect the bad release
    assert backend.deploy(fleet("d1", "d9"), V2, rollout_id=rollout, phase=0).noop
    assert "t1_d9" not in members(backend, group_name(rollout, 0))
    assert len(double.calls("CreateDeployment")) == 4


def test_status_reads_device_executions(env):
    backend, double, rollout = env
    r = backend.deploy(fleet("d1", "d2"), V2, rollout_id=rollout, phase=0)
    double.record_execution("t1_d1", r.deployments[0], "SUCCEEDED")
    status = backend.status(rollout).by_device()
    assert status[("t1", "d1")].acknowledged and status[("t1", "d1")].state == "succeeded"
    assert status[("t1", "d1")].desired_version == "2.0.0" and status[("t1", "d1")].phase == 0
    assert not status[("t1", "d2")].acknowledged and status[("t1", "d2")].state == "pending"


def test_invalid_request_surfaces_as_clear_error(env):
    backend, double, rollout = env
    bad = ReleaseSpec("app", "9", greengrass=GreengrassComponent("com.acme.App", "9" * 65))
    with pytest.raises(BackendError, match=r"ValidationException.*componentVersion.*at most 64"):
        backend.deploy(fleet("d1"), bad, rollout_id=rollout, phase=0)
    assert double.calls("CreateDeployment") == []


def test_job_policy_from_spec():
    from edgeplat.rollouts.spec import RolloutSpec

    spec = RolloutSpec.model_validate(
        {
            "name": "r",
            "release": {
                "name": "app",
                "version": "1",
                "greengrass": {"component": "com.acme.App", "version": "1.0.0"},
            },
            "target": {"tenants": ["t1"]},
            "strategy": {"type": "canary", "phases": [{"percent": 10}, {"percent": 100}]},
            "gates": [{"metric": "error_rate", "max_ratio": 2, "min_devices": 7}],
            "device_timeout": "90m",
        }
    )
    policy = JobPolicy.from_spec(spec)
    assert policy.abort_min_executed == 7
    assert policy.job_configuration()["timeoutConfig"] == {"inProgressTimeoutInMinutes": 90}


def test_release_without_component_is_refused(env):
    backend, _, rollout = env
    with pytest.raises(BackendError, match="release.greengrass"):
        backend.deploy(fleet("d1"), ReleaseSpec("app", "1"), rollout_id=rollout, phase=0)


def test_double_rejects_unknown_members_and_wrong_types(gg_double):
    op = gg_double[1].model.operation_model("CreateDeployment")

    arn = "arn:aws:iot:us-east-1:123456789012:thinggroup/g"
    for params, where in (
        ({}, "targetArn"),
        ({"targetArn": arn, "bogus": 1}, "bogus"),
        ({"targetArn": arn, "components": {"c": {}}}, "componentVersion"),
        (
            {"targetArn": arn, "deploymentPolicies": {"failureHandlingPolicy": "MAYBE"}},
            "failureHandlingPolicy",
        ),
        (
            {"targetArn": arn, "iotJobConfiguration": {"timeoutConfig": {"inProgressTimeoutInMinutes": "5"}}},
            "inProgressTimeoutInMinutes",
        ),
    ):
        with pytest.raises(ApiError, match=where) as info:
            validate(op.input_shape, params, "")
        assert info.value.status == 400 and info.value.code == "ValidationException"
