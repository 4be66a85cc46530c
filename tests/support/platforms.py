"""Greengrass and IoT Hub behind their loopback doubles, with clients pointed at them, for the
inventory, feedback and mixed-fleet tests: IoT things and thing groups on the moto server,
greengrassv2 on ``greengrass_double``, the IoT Hub registry on ``iothub_double``.

Clients retry as in production (botocore ``standard`` mode, msrest's urllib3 Retry with 429
added by ``AzureIotEdgeBackend.from_connection_string``), with short backoffs so throttling
tests stay fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from edgeplat.backends.azure_iot_edge import AzureIotEdgeBackend
from edgeplat.backends.base import DeviceRef
from edgeplat.backends.greengrass import GreengrassBackend, default_thing_name
from tests.support.greengrass_double import GreengrassDouble, running_greengrass_double
from tests.support.iothub_double import CONNECTION_STRING, IotHubDouble, running_iothub_double
from tests.support.moto_server import MOTO_CREDENTIALS

COMPONENT = "com.acme.App"


@dataclass
class Platforms:
    """Clients and doubles of both platforms."""

    iot: Any
    gg: Any
    gg_double: GreengrassDouble
    hub_backend: AzureIotEdgeBackend
    hub: IotHubDouble

    def greengrass_backend(self, **options: Any) -> GreengrassBackend:
        return GreengrassBackend(self.iot, self.gg, **options)

    def add_core_device(
        self, tenant: str, device: str, *, installed: str | None = None, **attributes: str
    ) -> str:
        """An IoT thing (tenant/device attributes plus ``attributes``) registered as a core device
        running ``COMPONENT`` at ``installed``; returns the thing name."""
        thing = default_thing_name(DeviceRef(tenant, device, "greengrass"))
        attrs = {"tenant_id": tenant, "device_id": device, **attributes}
        self.iot.create_thing(thingName=thing, attributePayload={"attributes": attrs})
        self.gg_double.add_core_device(thing, installed={COMPONENT: installed} if installed else None)
        return thing


@contextmanager
def running_platforms(moto_endpoint: str, *, max_attempts: int = 4) -> Iterator[Platforms]:
    with running_greengrass_double() as (gg_url, gg_double), running_iothub_double() as (hub_url, hub):
        session = boto3.session.Session(**MOTO_CREDENTIALS)
        config = Config(retries={"mode": "standard", "max_attempts": max_attempts})
        iot = session.client("iot", region_name="us-east-1", endpoint_url=moto_endpoint, config=config)
        gg = session.client("greengrassv2", region_name="us-east-1", endpoint_url=gg_url, config=config)
        hub_backend = AzureIotEdgeBackend.from_connection_string(CONNECTION_STRING, base_url=hub_url)
        for manager in (hub_backend.registry, hub_backend.configurations):
            manager.protocol.config.retry_policy.policy.backoff_factor = 0.01
        try:
            yield Platforms(iot, gg, gg_double, hub_backend, hub)
        finally:
            iot.close()
            gg.close()
