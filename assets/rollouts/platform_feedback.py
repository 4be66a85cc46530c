"""``platform_feedback``: one bounded pass of what Greengrass and IoT Hub report about the devices
active rollouts deployed to, folded into ``devices`` (acknowledgements, running release,
BROKEN states for the gates, drift). See ``edgeplat.rollouts.platform_feedback``."""

import dagster as dg
from pydantic import Field

from assets.rollouts.common import GROUP, store_from
from edgeplat.backends.feedback import PassBudget
from edgeplat.backends.feedback_greengrass import GreengrassObserver
from edgeplat.backends.feedback_iot_edge import IotEdgeObserver
from edgeplat.rollouts.platform_feedback import observe_rollouts
from resources.backends import FleetBackendResource
from resources.lakehouse import LakehouseResource


class FeedbackConfig(dg.Config):
    """The pass's budget: it must fit the schedule's interval."""

    max_calls: int = Field(default=5_000, description="platform calls per pass")
    max_seconds: float = Field(default=45.0, description="wall time per pass (a sensor tick is 60 s)")
    calls_per_second: float = Field(default=50.0, description="pace, within the platforms' API quotas")


@dg.asset(
    group_name=GROUP,
    description="What the platforms report (Greengrass installed components and deployment executions, "
    "IoT Edge $edgeAgent module reports) for active rollouts' devices, folded into the devices table.",
)
def platform_feedback(
    config: FeedbackConfig, lakehouse: LakehouseResource, fleet_backend: FleetBackendResource
) -> dg.MaterializeResult:
    gg, edge = fleet_backend.greengrass(), fleet_backend.iot_edge()
    report = observe_rollouts(
        store_from(lakehouse),
        greengrass=GreengrassObserver(gg.gg, thing_name=gg.thing_name) if gg is not None else None,
        iot_edge=IotEdgeObserver(edge.registry, hub_device_id=edge.hub_device_id)
        if edge is not None
        else None,
        budget=PassBudget(
            max_calls=config.max_calls,
            max_seconds=config.max_seconds,
            calls_per_second=config.calls_per_second,
        ),
    )
    return dg.MaterializeResult(metadata={k: dg.MetadataValue.json(v) for k, v in report.as_dict().items()})
