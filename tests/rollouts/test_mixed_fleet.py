"""A mixed fleet in one rollout: edge agents (signed desired state), Greengrass core devices (behind
the greengrassv2 double, IoT on moto) and IoT Edge devices (behind the IoT Hub double), each sent
through its platform's backend by a ``RoutingBackend``, with what the platforms report folded in by
a platform-observation pass before each step.

The bad and the healthy release go through the real promotion sensor: ``rollout_promotion_sensor``
is evaluated on a temporary Dagster instance and each ``advance_rollout`` run it requests is
executed in process, on a ``FleetBackendResource(kinds="edge_agent,greengrass,azure_iot_edge")``
aimed at the doubles. The controller's clock (``controller._now``, what the sensor and the op read
when given no time) reads the fleet's simulated time, so a bake of 30 minutes passes in three steps.
The outage case drives the ``Controller`` directly (``due_all``, then a step for each rollout with
work): its backoff window lives in one ``RoutingBackend``, which each run would build anew."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from edgeplat.backends.base import IotEdgeModule, ReleaseSpec
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.backends.feedback import PassBudget
from edgeplat.backends.feedback_greengrass import GreengrassObserver
from edgeplat.backends.feedback_iot_edge import IotEdgeObserver
from edgeplat.backends.greengrass import default_thing_name
from edgeplat.backends.routing import RoutingBackend
from edgeplat.lakehouse import Lakehouse
from edgeplat.rollouts import controller as controller_module
from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.events import TERMINAL, Kind
from edgeplat.rollouts.platform_feedback import observe_rollouts
from edgeplat.rollouts.store import RolloutStore
from pipelines.definitions import rollout_definitions
from pipelines.jobs import ROLLOUT_TAG
from pipelines.sensors.rollout_promotion import rollout_promotion_sensor
from resources.backends import FleetBackendResource
from resources.gitops import GitOpsRepoResource
from resources.keys import PlatformSignerResource
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from tests.support.iothub_double import CONNECTION_STRING
from tests.support.moto_server import MOTO_CREDENTIALS
from tests.support.platform_devices import GreengrassDevices, IotEdgeDevices, MixedFleet
from tests.support.platforms import COMPONENT, Platforms, running_platforms
from tests.support.rollouts import sized_spec

pytestmark = [pytest.mark.services, pytest.mark.slow]

PLATFORMS = ("edge_agent", "greengrass", "iot_edge")
IMAGE = "acr.example.io/app:{}"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class PromotionSensor:
    """The real promotion sensor on a temporary Dagster instance, bound to the test's lakehouse and a
    fleet backend resource on the doubles; each ``advance_rollout`` run it requests runs in process."""

    def __init__(self, instance: dg.DagsterInstance, resources: dict) -> None:
        self.instance = instance
        self.resources = resources
        self.defs = rollout_definitions(resources)
        self.cursor: str | None = None
        self.advance_runs = 0

    def tick(self) -> None:
        with dg.build_sensor_context(
            instance=self.instance, resources=self.resources, definitions=self.defs, cursor=self.cursor
        ) as ctx:
            result = rollout_promotion_sensor(ctx)
        self.cursor = result.cursor
        for added in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(added.partitions_def_name, list(added.partition_keys))
        for request in result.run_requests or []:
            if request.job_name != "advance_rollout":
                continue  # refresh runs rebuild views of the log: not needed here, left out for speed
            run = self.defs.resolve_job_def(request.job_name).execute_in_process(
                run_config=request.run_config, instance=self.instance, tags=request.tags
            )
            assert run.success
            self.advance_runs += 1


@dataclass
class Mixed:
    p: Platforms
    fleet: MixedFleet
    store: RolloutStore
    ctl: Controller
    routing: RoutingBackend
    clock: FakeClock
    gg_observer: GreengrassObserver
    edge_observer: IotEdgeObserver
    previous_gg: dict[str, str]  # thing -> component version before any rollout
    previous_image: dict[str, str]  # IoT Edge device -> image before any rollout
    sensor: PromotionSensor | None = None  # None: the controller is driven directly

    def step(self, minutes: int = 10) -> None:
        """Devices apply and report; the platforms are observed; each rollout with work is stepped:
        by the promotion sensor's runs, or by the sensor's loop on the test's controller."""
        self.fleet.advance(minutes)
        observe_rollouts(
            self.store,
            greengrass=self.gg_observer,
            iot_edge=self.edge_observer,
            budget=PassBudget(max_calls=2000),
        )
        if self.sensor is not None:
            self.sensor.tick()
            return
        for r in self.ctl.due_all(self.fleet.now):
            if r.due:
                self.ctl.tick(r.rollout_id, self.fleet.now)

    def run(self, rid: str, steps: int) -> str:
        for _ in range(steps):
            self.step()
            status = str(self.store.state(rid).status)
            if self.store.state(rid).status in TERMINAL:
                return status
        return str(self.store.state(rid).status)

    def advance_runs(self, rid: str) -> int:
        """The successful ``advance_rollout`` runs of ``rid`` the sensor's instance recorded."""
        assert self.sensor is not None
        runs = self.sensor.instance.get_runs(
            filters=dg.RunsFilter(
                job_name="advance_rollout", tags={ROLLOUT_TAG: rid}, statuses=[dg.DagsterRunStatus.SUCCESS]
            )
        )
        assert len(runs) == self.sensor.advance_runs  # every run the sensor requested was for this rollout
        return len(runs)

    def sent_platforms(self, rid: str, action: str) -> Counter:
        rows = self.store.sent(rid).to_pylist()
        return Counter(r["platform"] for r in rows if r["action"] == action)


def fleet_backend_resource(tmp_path: Path, lake: Lakehouse, p: Platforms) -> FleetBackendResource:
    """The three platforms behind one ``RoutingBackend``, configured as a deployment would be."""
    lakehouse = LakehouseResource(catalog=lake.config.catalog, data_path=lake.config.data_path)
    return FleetBackendResource(
        kinds="edge_agent,greengrass,azure_iot_edge",
        lakehouse=lakehouse,
        object_store=ObjectStoreResource(url=str(tmp_path / "objects")),
        platform_signer=PlatformSignerResource(path=str(tmp_path / "platform.pem"), create_if_missing=True),
        iot_endpoint_url=p.iot.meta.endpoint_url,
        greengrass_endpoint_url=p.gg.meta.endpoint_url,
        iothub_connection_string=CONNECTION_STRING,
        iothub_base_url=p.hub_backend.registry.protocol.config.base_url,
    )


@contextmanager
def mixed_fleet(
    moto: str,
    lake: Lakehouse,
    tmp_path: Path,
    *,
    devices: int,
    tenants: tuple[str, ...],
    failure_rate: dict[str, float],
    max_attempts: int = 4,
    through_sensor: bool = True,
) -> Iterator[Mixed]:
    with running_platforms(moto, max_attempts=max_attempts) as p, dg.instance_for_test() as instance:
        clock = FakeClock()
        resource = fleet_backend_resource(tmp_path, lake, p)
        # the devices read what the sensor's runs publish: the same store, index and platform key
        edge_backend = resource.build("edge_agent")
        assert isinstance(edge_backend, EdgeAgentBackend)
        routing = RoutingBackend([edge_backend, p.greengrass_backend(), p.hub_backend], clock=clock)
        gg_sim = GreengrassDevices(p, failure_rate)
        edge_sim = IotEdgeDevices(p, "app", failure_rate)
        fleet = MixedFleet(
            lake,
            edge_backend,
            greengrass=gg_sim,
            iot_edge=edge_sim,
            devices=devices,
            tenants=tenants,
            platforms=PLATFORMS,
            upload_every=None,
        )
        previous_gg, previous_image = {}, {}
        # the IoT Edge fleet's base deployment, and an earlier rollout's layer over half of it
        p.hub.configurations["base"] = {
            "id": "base",
            "priority": 0,
            "targetCondition": "*",
            "createdTimeUtc": "2026-01-01T00:00:00Z",
            "content": {
                "modulesContent": {
                    "$edgeAgent": {
                        "properties.desired.modules.app": {"settings": {"image": IMAGE.format("2.0.0")}}
                    }
                }
            },
        }
        p.hub_backend._ensure_layer(
            ReleaseSpec("app", "2.0.1", iot_edge=IotEdgeModule("app", IMAGE.format("2.0.1"))), "earlier", 0
        )
        for i, d in enumerate(fleet.devices):
            if d.platform == "greengrass":
                prev = "2.0.0" if i % 2 else "2.0.1"  # devices differ in what they ran before
                previous_gg[p.add_core_device(d.tenant_id, d.device_id, installed=prev)] = prev
            elif d.platform == "iot_edge":
                earlier = i % 2 == 0
                tags = {"tenant": d.tenant_id}
                if earlier:
                    tags["edgeplat"] = {"tenant": d.tenant_id, "rollouts": {"earlier": "p0"}}
                p.hub.add_device(d.device_id, tags=tags)
                previous_image[d.device_id] = IMAGE.format("2.0.1" if earlier else "2.0.0")
        store = RolloutStore(lake)
        mixed = Mixed(
            p,
            fleet,
            store,
            Controller(store, routing),
            routing,
            clock,
            GreengrassObserver(p.gg, thing_name=default_thing_name, workers=4),
            IotEdgeObserver(p.hub_backend.registry, page_size=100),
            previous_gg,
            previous_image,
        )
        if through_sensor:
            mixed.sensor = PromotionSensor(
                instance,
                # GitOps off: the rollout assets' drift write-back is not under test here
                {
                    "lakehouse": resource.lakehouse,
                    "fleet_backend": resource,
                    "gitops_repo": GitOpsRepoResource(),
                },
            )
        try:
            mixed.fleet.advance(10)  # every device settles on what its platform runs
            yield mixed
        finally:
            fleet.close()


def release_spec(tenants: tuple[str, ...], **over):
    return sized_spec(
        target={"tenants": list(tenants)},
        release={
            "name": "app",
            "version": "3.0.0",
            "greengrass": {"component": COMPONENT, "version": "3.0.0"},
            "iot_edge": {"module": "app", "image": IMAGE.format("3.0.0")},
        },
        **over,
    )


@pytest.fixture
def fleet_time(monkeypatch):
    """Sets the AWS credentials the resource's boto3 clients read; returns a function that makes the
    controller's clock read a fleet's simulated time whenever a caller (the sensor, the op) gives none."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", MOTO_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MOTO_CREDENTIALS["aws_secret_access_key"])

    def use(fleet: MixedFleet) -> None:
        monkeypatch.setattr(controller_module, "_now", lambda at: at if at is not None else fleet.now)

    return use


def test_a_bad_release_is_rolled_back_on_all_three_platforms_in_its_first_phase(
    moto_server, lake, tmp_path, fleet_time
):
    tenants = ("mx-bad-a", "mx-bad-b")
    with mixed_fleet(
        moto_server, lake, tmp_path, devices=300, tenants=tenants, failure_rate={"3.0.0": 0.4}
    ) as m:
        fleet_time(m.fleet)
        m.fleet.set_release_profile("3.0.0", error_rate=0.06, crash_rate=0.2)
        assert Counter(d.platform for d in m.fleet.devices) == {p: 100 for p in PLATFORMS}
        rid = m.ctl.launch(release_spec(tenants), actor="test", now=m.fleet.now)
        status = m.run(rid, steps=12)

        state = m.store.state(rid)
        assert status == "rolled_back" and state.phase == 0
        assert m.advance_runs(rid) >= 2  # the deploy and the rollback: each a run the sensor requested
        deployed = m.sent_platforms(rid, "deploy")
        assert set(deployed) == set(PLATFORMS) and sum(deployed.values()) < 60  # the first phase only
        assert m.sent_platforms(rid, "rollback") == deployed  # every platform's devices got the rollback
        rollback = next(e for e in state.events if e.kind == Kind.ROLLBACK)
        checks = {c["metric"]: c["verdict"] for c in rollback.inputs["gates"]["checks"]}
        assert checks["platform_state"] == "fail"  # devices the platforms report broken count as failed

        # Greengrass: each device back on the component version it ran before (not an empty deployment)
        installed = {t: m.p.gg_double.installed[t][COMPONENT]["componentVersion"] for t in m.previous_gg}
        assert installed == m.previous_gg
        assert len(set(m.previous_gg.values())) == 2
        restores = [d for d in m.p.gg_double.deployments.values() if "-restore-" in d["deploymentName"]]
        assert len(restores) == deployed["greengrass"]
        # IoT Edge: the earlier rollout's layer (or the base deployment) is what each device runs again
        assert {d: m.fleet.edge_devices.images[d] for d in m.previous_image} == m.previous_image
        # edge agents: back on the old release
        assert m.fleet.running("3.0.0") == 0


def test_a_healthy_release_completes_on_all_three_platforms(moto_server, lake, tmp_path, fleet_time):
    tenants = ("mx-ok-a", "mx-ok-b")
    with mixed_fleet(moto_server, lake, tmp_path, devices=300, tenants=tenants, failure_rate={}) as m:
        fleet_time(m.fleet)
        rid = m.ctl.launch(release_spec(tenants), actor="test", now=m.fleet.now)
        status = m.run(rid, steps=30)

        assert status == "completed"
        assert m.advance_runs(rid) >= 3  # one run the sensor requested per phase at least
        assert m.sent_platforms(rid, "deploy") == {p: 100 for p in PLATFORMS}
        assert all(
            m.p.gg_double.installed[t][COMPONENT]["componentVersion"] == "3.0.0" for t in m.previous_gg
        )
        assert set(m.fleet.edge_devices.images.values()) == {IMAGE.format("3.0.0")}
        assert m.fleet.running("3.0.0") == 300
        # the spec's job policy reached Greengrass: its device timeout is the IoT job's timeout
        creates = [c for c in m.p.gg_double.calls("CreateDeployment") if "-p" in c["deploymentName"]]
        assert creates and all(
            c["iotJobConfiguration"]["timeoutConfig"] == {"inProgressTimeoutInMinutes": 20} for c in creates
        )
        with lake.session(read_only=True) as con:
            states = dict(
                con.execute(
                    "SELECT platform, string_agg(DISTINCT platform_state, ',') FROM devices "
                    "WHERE tenant_id LIKE 'mx-ok-%' AND platform <> 'edge_agent' GROUP BY 1"
                ).fetchall()
            )
        assert states == {"greengrass": "RUNNING", "iot_edge": "running"}  # from the platforms, folded in


def test_an_outage_on_one_platform_does_not_stall_the_others(moto_server, lake, tmp_path):
    tenants = ("mx-out-a", "mx-out-b")
    with mixed_fleet(
        moto_server,
        lake,
        tmp_path,
        devices=90,
        tenants=tenants,
        failure_rate={},
        max_attempts=2,
        through_sensor=False,
    ) as m:
        spec = release_spec(tenants, strategy={"type": "canary", "phases": [{"percent": 100, "bake": "30m"}]})
        m.p.gg_double.outage = True
        rid = m.ctl.launch(spec, actor="test", now=m.fleet.now)
        m.step()
        sent = m.sent_platforms(rid, "deploy")
        assert sent == {"edge_agent": 30, "iot_edge": 30}  # Greengrass devices are not recorded as sent
        deploy = next(e for e in m.store.state(rid).events if e.kind == Kind.DEPLOY_PHASE)
        assert deploy.inputs["devices_sent"] == 60 and deploy.inputs["devices_failed"] == 30
        assert all("greengrass" in why for why in deploy.inputs["failures"].values())
        assert "greengrass" in m.routing.outages

        m.step()  # inside the backoff window: the Greengrass backend is not called again
        assert m.sent_platforms(rid, "deploy")["greengrass"] == 0
        m.p.gg_double.outage = False
        m.clock.t += timedelta(minutes=10).total_seconds()
        m.step()  # the window is over: the late devices are sent
        assert m.sent_platforms(rid, "deploy") == {p: 30 for p in PLATFORMS}
        assert "greengrass" not in m.routing.outages
        assert m.run(rid, steps=8) == "completed"
