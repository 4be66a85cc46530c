"""``fleet_status``: devices online/offline, version distribution, sync lag and queue depth."""

import dagster as dg

from edgeplat.fleet import fleet_status as compute_fleet_status
from resources.lakehouse import LakehouseResource


@dg.asset(
    group_name="fleet",
    deps=["lakehouse_tables", "devices", "device_health"],
    description="Fleet-wide status from the lakehouse.",
)
def fleet_status(lakehouse: LakehouseResource) -> dg.MaterializeResult:
    with lakehouse.get().session(read_only=True) as con:
        status = compute_fleet_status(con)
    return dg.MaterializeResult(
        metadata={
            "devices": status.devices,
            "online": status.online,
            "offline": status.offline,
            "tenants": status.tenants,
            "queue_depth": status.queue_depth,
            "max_sync_lag_s": dg.MetadataValue.float(float(status.max_sync_lag_s or 0.0)),
            "versions": dg.MetadataValue.json(status.versions),
            "by_platform": dg.MetadataValue.json(status.by_platform),
        }
    )
