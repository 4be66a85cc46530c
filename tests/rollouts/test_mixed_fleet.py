"""A mixed fleet in one rollout: edge agents (signed desired state), Greengrass core devices (behind
the greengrassv2 double, IoT on moto) and IoT Edge devices (behind the IoT Hub double), each sent
through its platform's backend by a ``RoutingBackend``, driven by the real ``Controller`` the way
the promotion sensor drives it (``due_all``, then a step for each rollout with work), with what
the platforms report folded in by a platform-observation pass before each step."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import pytest

from edgeplat.backends.base import IotEdgeModule, ReleaseSpec
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.backends.feedback import PassBudget
from edgeplat.backends.feedback_greengrass import GreengrassObserver
from edgeplat.backends.feedback_iot_edge import IotEdgeObserver
from edgeplat.backends.greengrass import default_thing_name
from edgeplat.backends.routing import RoutingBackend
from edgeplat.lakehouse import Lakehouse
from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.events import TERMINAL, Kind
from edgeplat.rollouts.platform_feedback import observe_rollouts
from edgeplat.rollouts.store import RolloutStore
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

    def step(self, minutes: int = 10) -> None:
        """Devices apply and report; the platforms are observed; the sensor's loop steps each rollout."""
        self.fleet.advance(minutes)
        observe_rollouts(
            self.store,
            greengrass=self.gg_observer,
            iot_edge=self.edge_observer,
            budget=PassBudget(max_calls=2000),
        )
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

    def sent_platforms(self, rid: str, action: str) -> Counter:
        rows = self.store.sent(rid).to_pylist()
        return Counter(r["platform"] for r in rows if r["action"] == action)


@contextmanager
def mixed_fleet(
    moto: str,
    lake: Lakehouse,
    edge_backend: EdgeAgentBackend,
    *,
    devices: int,
    tenants: tuple[str, ...],
    failure_rate: dict[str, float],
    max_attempts: int = 4,
) -> Iterator[Mixed]:
    with running_platforms(moto, max_attempts=max_attempts) as p:
        clock = FakeClock()
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


def test_a_bad_release_is_rolled_back_on_all_three_platforms_in_its_first_phase(moto_server, lake, backend):
    tenants = ("mx-bad-a", "mx-bad-b")
    with mixed_fleet(
        moto_server, lake, backend, devices=300, tenants=tenants, failure_rate={"3.0.0": 0.4}
    ) as m:
        m.fleet.set_release_profile("3.0.0", error_rate=0.06, crash_rate=0.2)
        assert Counter(d.platform for d in m.fleet.devices) == {p: 100 for p in PLATFORMS}
        rid = m.ctl.launch(release_spec(tenants), actor="test", now=m.fleet.now)
        status = m.run(rid, steps=12)

        state = m.store.state(rid)
        assert status == "rolled_back" and state.phase == 0
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


def test_a_healthy_release_completes_on_all_three_platforms(moto_server, lake, backend):
    tenants = ("mx-ok-a", "mx-ok-b")
    with mixed_fleet(moto_server, lake, backend, devices=300, tenants=tenants, failure_rate={}) as m:
        rid = m.ctl.launch(release_spec(tenants), actor="test", now=m.fleet.now)
        status = m.run(rid, steps=30)

        assert status == "completed"
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


def test_an_outage_on_one_platform_does_not_stall_the_others(moto_server, lake, backend):
    tenants = ("mx-out-a", "mx-out-b")
    with mixed_fleet(
        moto_server, lake, backend, devices=90, tenants=tenants, failure_rate={}, max_attempts=2
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
