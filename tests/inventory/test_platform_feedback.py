"""Platform feedback passes: bounded by their budget (the rest waits for the next pass), facts from
Greengrass installed components and IoT Edge ``$edgeAgent`` reports, BROKEN states included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgeplat.backends.base import DeviceRef
from edgeplat.backends.feedback import PassBudget
from edgeplat.backends.feedback_greengrass import GreengrassObserver
from edgeplat.backends.feedback_iot_edge import IotEdgeObserver
from edgeplat.backends.greengrass import default_thing_name
from tests.support.platforms import COMPONENT, Platforms, running_platforms

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def platforms(moto_server: str) -> Iterator[Platforms]:
    with running_platforms(moto_server) as p:
        yield p


def test_greengrass_pass_is_bounded_and_resumes(platforms):
    refs = [DeviceRef("fb", f"fb-gg-{i}", "greengrass") for i in range(12)]
    for i, d in enumerate(refs):
        thing = default_thing_name(d)
        platforms.gg_double.core_devices[thing] = {"coreDeviceThingName": thing, "status": "HEALTHY",
                                                   "lastStatusUpdateTimestamp": 1.0}  # fmt: skip
        platforms.gg_double.set_installed(thing, {COMPONENT: ("3.0.0", "BROKEN" if i < 3 else "RUNNING")})
    observer = GreengrassObserver(platforms.gg, thing_name=default_thing_name, workers=2)
    first = observer.observe(
        refs, component=COMPONENT, desired_version="3.0.0", budget=PassBudget(max_calls=6)
    )
    assert len(first.facts) == 5 and len(first.left) == 7  # one page of core devices + five devices
    second = observer.observe(refs, component=COMPONENT, desired_version="3.0.0", budget=PassBudget())
    assert not second.left and len(second.facts) == 12
    assert sorted(f.device_id for f in second.facts if f.broken) == ["fb-gg-0", "fb-gg-1", "fb-gg-2"]
    calls = len(platforms.gg_double.calls("ListInstalledComponents"))
    third = observer.observe(refs, component=COMPONENT, desired_version="3.0.0", budget=PassBudget())
    assert len(third.facts) == 12 and len(platforms.gg_double.calls("ListInstalledComponents")) == calls


def test_iot_edge_pass_reads_edge_agent_reports_in_pages(platforms):
    refs = [DeviceRef("fb", f"fb-edge-{i}", "iot_edge") for i in range(7)]
    for i, d in enumerate(refs):
        platforms.hub.add_device(d.device_id, tags={"tenant": "fb"})
        image = "acr.io/app:3.0.0" if i else "acr.io/app:2.0.0"
        status = "backoff" if i == 1 else "running"
        platforms.hub.set_module_reported(
            d.device_id,
            "$edgeAgent",
            {"modules": {"app": {"settings": {"image": image}, "runtimeStatus": status}}},
        )
    got = IotEdgeObserver(platforms.hub_backend.registry, page_size=3).observe(
        refs, module="app", desired_image="acr.io/app:3.0.0", versions={"acr.io/app:3.0.0": "3.0.0"},
        budget=PassBudget(),
    )  # fmt: skip
    facts = {f.device_id: f for f in got.facts}
    assert got.calls == 3 and len(facts) == 7
    assert (facts["fb-edge-0"].version, facts["fb-edge-0"].acknowledged) == ("2.0.0", False)
    assert (
        facts["fb-edge-1"].broken
        and facts["fb-edge-2"].state == "running"
        and facts["fb-edge-2"].acknowledged
    )
