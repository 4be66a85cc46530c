"""``device_inventory``: import devices from every configured platform into ``devices``.

Greengrass core devices (with their IoT things' attributes and thing groups) and IoT Edge
devices (registry query) become claims folded into ``devices`` with the source of each field
(``edgeplat.inventory``); devices enrolled with the edge agent claim their platform and tags
through their batches (the ingest). Materialize it from the UI for an import now; the
``device_inventory_hourly`` schedule keeps it fresh.
"""

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from edgeplat.inventory.sources import Unassigned, greengrass_claims, iot_edge_claims
from edgeplat.inventory.store import fold_claims
from resources.backends import FleetBackendResource
from resources.lakehouse import LakehouseResource


class InventoryConfig(dg.Config):
    """Import settings (shown in the run's config)."""

    default_tenant: str = Field(
        default="", description="tenant for platform devices that name none (empty: leave them out, listed)"
    )


@dg.asset(
    group_name="fleet",
    deps=["lakehouse_tables"],
    description="Devices from every configured platform (Greengrass core devices, IoT Edge devices) with "
    "platform, tags, connectivity and last seen, folded into the devices table with the source of each "
    "field; conflicting claims are flagged, not overwritten.",
)
def device_inventory(
    context: dg.AssetExecutionContext,
    config: InventoryConfig,
    lakehouse: LakehouseResource,
    fleet_backend: FleetBackendResource,
) -> dg.MaterializeResult:
    seen = Unassigned()
    tenant = config.default_tenant or None
    claims = []
    gg = fleet_backend.greengrass()
    if gg is not None:
        claims += list(greengrass_claims(gg.iot, gg.gg, default_tenant=tenant, seen=seen))
    edge = fleet_backend.iot_edge()
    if edge is not None:
        claims += list(iot_edge_claims(edge.registry, default_tenant=tenant, seen=seen))
    if gg is None and edge is None:
        context.log.info(
            "no Greengrass or IoT Edge backend configured: only enrolled edge agents are inventoried"
        )
    lake = lakehouse.get()
    report = lake.write(lambda con: fold_claims(con, claims, datetime.now(UTC)), what="device inventory")
    return dg.MaterializeResult(
        metadata={
            **{k: v for k, v in report.as_dict().items() if k != "conflicted"},
            "conflicted": dg.MetadataValue.json(report.conflicted[:50]),
            "pages": dg.MetadataValue.json(seen.pages),
            "without_tenant": dg.MetadataValue.json({k: v[:50] for k, v in seen.devices.items()}),
        }
    )
