"""The fleet backend as a Dagster resource: which platform rollouts deploy through.

``kind="edge_agent"`` (default, embedded): signed desired-state documents in the object
store, signed with the platform key. ``kind="greengrass"``: boto3 IoT + Greengrass v2
(credentials from the environment, endpoints configurable). ``kind="azure_iot_edge"``: an
IoT Hub service connection string, passed as ``dg.EnvVar`` so it never shows in the UI.
``kinds="edge_agent,greengrass,azure_iot_edge"`` (``EDGEPLAT_FLEET_BACKENDS``) builds one of
each behind a ``RoutingBackend``: a mixed fleet, each device sent to its platform's backend.

Given ``state_rules``, the edge_agent documents carry the conflict rules in force (loaded at
the first document a backend writes), so a device whose first document is a release merges
with the operator's rules, as one that first got a central edit does.
"""

import dagster as dg

from edgeplat.backends.azure_iot_edge import AzureIotEdgeBackend
from edgeplat.backends.base import FleetBackend
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.backends.greengrass import GreengrassBackend
from edgeplat.backends.routing import RoutingBackend
from edgeplat.desired_publisher import DesiredStatePublisher
from edgeplat.desired_records import LakehouseDesiredRecords
from resources.keys import PlatformSignerResource
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from resources.state_rules import StateRulesResource

KINDS = ("edge_agent", "greengrass", "azure_iot_edge")


class FleetBackendResource(dg.ConfigurableResource):
    """Builds the ``FleetBackend`` rollouts act through (see module doc for the kinds)."""

    kind: str = "edge_agent"
    kinds: str = ""  # comma-separated: several platforms at once (overrides kind)
    object_store: ObjectStoreResource | None = None  # edge_agent
    platform_signer: PlatformSignerResource | None = None  # edge_agent
    lakehouse: LakehouseResource | None = None  # edge_agent: the publisher's record of what it signed
    state_rules: StateRulesResource | None = None  # edge_agent: the rules documents carry (None: kept)
    index_prefix: str = "rollouts/edge_agent"
    region: str = "us-east-1"  # greengrass
    iot_endpoint_url: str | None = None
    greengrass_endpoint_url: str | None = None
    iothub_connection_string: str | None = None  # azure_iot_edge (secret: dg.EnvVar)
    iothub_base_url: str | None = None

    def get(self) -> FleetBackend:
        kinds = [k.strip() for k in self.kinds.split(",") if k.strip()]
        if kinds:
            return RoutingBackend([self.build(k) for k in kinds])
        return self.build(self.kind)

    def greengrass(self) -> GreengrassBackend | None:
        """The Greengrass backend when configured (its ``iot``/``gg`` clients serve the inventory)."""
        return self.build("greengrass") if "greengrass" in self._kinds() else None  # type: ignore[return-value]

    def iot_edge(self) -> AzureIotEdgeBackend | None:
        """The IoT Edge backend when configured (its ``registry`` serves the inventory)."""
        return self.build("azure_iot_edge") if "azure_iot_edge" in self._kinds() else None  # type: ignore[return-value]

    def _kinds(self) -> list[str]:
        return [k.strip() for k in self.kinds.split(",") if k.strip()] or [self.kind]

    def build(self, kind: str) -> FleetBackend:
        if kind == "edge_agent":
            if self.object_store is None or self.platform_signer is None or self.lakehouse is None:
                raise ValueError(
                    "FleetBackendResource(kind='edge_agent') needs object_store, platform_signer and "
                    "lakehouse resources"
                )
            lake = self.lakehouse.get()
            publisher = DesiredStatePublisher(
                self.object_store.get(),
                self.platform_signer.get(),
                records=LakehouseDesiredRecords(lake),
                rules=self.state_rules.get if self.state_rules is not None else None,
            )
            return EdgeAgentBackend(publisher, index_prefix=self.index_prefix)
        if kind == "greengrass":
            return GreengrassBackend.from_clients(
                region=self.region,
                iot_endpoint_url=self.iot_endpoint_url,
                greengrass_endpoint_url=self.greengrass_endpoint_url,
            )
        if kind == "azure_iot_edge":
            if not self.iothub_connection_string:
                raise ValueError(
                    "FleetBackendResource(kind='azure_iot_edge') needs iothub_connection_string "
                    "(set it with dg.EnvVar('EDGEPLAT_IOTHUB_CONNECTION_STRING'))"
                )
            return AzureIotEdgeBackend.from_connection_string(
                self.iothub_connection_string, base_url=self.iothub_base_url
            )
        raise ValueError(f"unknown fleet backend kind {kind!r}; use one of {', '.join(KINDS)}")
