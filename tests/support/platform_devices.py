"""Devices behind the platform doubles applying what their platform deploys, for mixed-fleet tests.

``GreengrassDevices`` plays every registered core device: its effective components are the
merge of the latest deployment of each target it belongs to (the thing itself and its thing
groups, membership read from the IoT API on moto), a later deployment winning for the same
component; a device no deployment targets keeps what it was provisioned with. Applying a new
version fails with the version's failure rate: the component is then BROKEN and the
deployment's execution FAILED, else RUNNING and SUCCEEDED; the double serves the result
(ListInstalledComponents, ListEffectiveDeployments, ListCoreDevices status).

``IotEdgeDevices`` plays every IoT Edge device: the configuration with the highest priority
whose target condition (``*`` or ``tags.a.b='v' OR ...``) matches its twin tags decides the
module image; the ``$edgeAgent`` module twin then reports that image with ``runtimeStatus``
``running``, or ``backoff`` with the image's version's failure rate.

``MixedFleet`` is the rollout demo's fleet whose Greengrass and IoT Edge devices run what
these platforms run (the edge agents still pull their signed desired state), so their health
rows, and so the gates, follow what the platform did.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from edgeplat.backends.base import DeviceRef
from edgeplat.backends.greengrass import GROUP_PREFIX, default_thing_name
from edgeplat.simulator.rollout_fleet import DemoFleet, FleetDevice
from tests.support.platforms import COMPONENT, Platforms


class GreengrassDevices:
    """Core devices applying Greengrass deployments (see module doc)."""

    def __init__(self, p: Platforms, failure_rate: Mapping[str, float], seed: int = 3) -> None:
        self.p, self.failure_rate, self.rng = p, failure_rate, random.Random(seed)
        self.applied: dict[str, tuple[str, ...]] = {}  # thing -> deployment ids applied

    def version(self, thing: str) -> str | None:
        row = self.p.gg_double.installed.get(thing, {}).get(COMPONENT)
        return row["componentVersion"] if row else None

    def step(self) -> None:
        double = self.p.gg_double
        groups: dict[str, list[str]] = {}  # thing -> group arns of the rollouts' groups
        for g in self.p.iot.list_thing_groups(namePrefixFilter=GROUP_PREFIX, maxResults=250)["thingGroups"]:
            things = self.p.iot.list_things_in_thing_group(thingGroupName=g["groupName"], maxResults=250)
            for thing in things["things"]:
                groups.setdefault(thing, []).append(g["groupArn"])
        with double._lock:
            latest = {
                d["targetArn"]: d
                for d in sorted(double.deployments.values(), key=lambda d: d["creationTimestamp"])
                if d["isLatestForTarget"] and d["deploymentStatus"] != "CANCELED"
            }
            things = list(double.core_devices)
        for thing in things:
            arn = f"arn:aws:iot:us-east-1:123456789012:thing/{thing}"
            mine = [latest[t] for t in [arn, *groups.get(thing, [])] if t in latest]
            ids = tuple(sorted(d["deploymentId"] for d in mine))
            if not mine or self.applied.get(thing) == ids:
                continue
            self.applied[thing] = ids
            merged: dict[str, str] = {}
            for d in sorted(mine, key=lambda d: d["creationTimestamp"]):
                for name in [n for n in merged if n in d["components"]]:
                    del merged[name]
                merged.update({n: c["componentVersion"] for n, c in d["components"].items()})
            before = {n: r["componentVersion"] for n, r in double.installed.get(thing, {}).items()}
            # what group deployments do not mention stays only if a deployment installed it before
            now: dict[str, tuple[str, str]] = {}
            failed = False
            for name, version in merged.items():
                if before.get(name) == version:
                    now[name] = (version, double.installed[thing][name]["lifecycleState"])
                    continue
                broken = self.rng.random() < self.failure_rate.get(version, 0.0)
                failed |= broken
                now[name] = (version, "BROKEN" if broken else "RUNNING")
            double.set_installed(thing, now)
            for d in mine:
                double.record_execution(thing, d["deploymentId"], "FAILED" if failed else "SUCCEEDED")


class IotEdgeDevices:
    """IoT Edge devices applying layered deployments (see module doc)."""

    def __init__(self, p: Platforms, module: str, failure_rate: Mapping[str, float], seed: int = 5) -> None:
        self.p, self.module, self.failure_rate, self.rng = p, module, failure_rate, random.Random(seed)
        self.images: dict[str, str] = {}

    def version(self, device: str) -> str | None:
        image = self.images.get(device)
        return image.rsplit(":", 1)[1] if image else None

    def step(self) -> None:
        hub = self.p.hub
        with hub._lock:
            # the highest priority wins; between equals, the most recently created (as IoT Hub does)
            configs = sorted(
                hub.configurations.values(), key=lambda c: (c["priority"], c["createdTimeUtc"]), reverse=True
            )
            twins = list(hub.twins.values())
        for twin in twins:
            if not twin["capabilities"].get("iotEdge"):
                continue
            config = next((c for c in configs if _matches(c["targetCondition"], twin["tags"])), None)
            if config is None:
                continue
            agent = config["content"]["modulesContent"]["$edgeAgent"]
            module = agent.get(f"properties.desired.modules.{self.module}")
            image = module["settings"]["image"] if module else None
            if image is None or self.images.get(twin["deviceId"]) == image:
                continue
            self.images[twin["deviceId"]] = image
            version = image.rsplit(":", 1)[1]
            status = "backoff" if self.rng.random() < self.failure_rate.get(version, 0.0) else "running"
            hub.set_module_reported(
                twin["deviceId"],
                "$edgeAgent",
                {"modules": {self.module: {"settings": {"image": image}, "runtimeStatus": status}}},
            )


def _matches(condition: str, tags: Mapping[str, Any]) -> bool:
    if condition.strip() == "*":
        return True
    for clause in condition.split(" OR "):
        path, _, value = clause.strip().partition("=")
        node: Any = {"tags": tags}
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node == value.strip("'"):
            return True
    return False


class MixedFleet(DemoFleet):
    """The demo fleet whose Greengrass and IoT Edge devices run what their platform runs."""

    def __init__(
        self, *args: Any, greengrass: GreengrassDevices, iot_edge: IotEdgeDevices, **kw: Any
    ) -> None:
        self.gg_devices, self.edge_devices = greengrass, iot_edge
        super().__init__(*args, **kw)

    def advance(self, minutes: int) -> None:
        self.gg_devices.step()
        self.edge_devices.step()
        super().advance(minutes)

    def _pull(self, d: FleetDevice) -> bool:
        if d.platform == "greengrass":
            version = self.gg_devices.version(default_thing_name(DeviceRef(d.tenant_id, d.device_id)))
        elif d.platform == "iot_edge":
            version = self.edge_devices.version(d.device_id)
        else:
            return super()._pull(d)
        if version is None or version == d.version:
            return False
        d.version = version
        d.ran.add(version)
        return True
