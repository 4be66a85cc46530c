"""``device_drift``: per device, the release the rollouts want against the release it reports."""

from datetime import UTC, datetime

import dagster as dg

from assets.rollouts.common import GROUP, md_table, store_from
from edgeplat.rollouts import cohorts
from resources.lakehouse import LakehouseResource


@dg.asset(
    group_name=GROUP,
    description="Desired versus reported version per device (lakehouse table device_drift); a device "
    "drifts when the latest rollout that deployed to it wants a release it does not report.",
)
def device_drift(lakehouse: LakehouseResource) -> dg.MaterializeResult:
    store = store_from(lakehouse)
    now = datetime.now(UTC)
    with store.session() as con:
        table = cohorts.drift(con)
        store.replace_drift(table, now)
        per_rollout = store.drift_counts()
        sample = store.drifted_devices(20)
    drifted = sum(r[2] for r in per_rollout)
    return dg.MaterializeResult(
        metadata={
            "devices": table.num_rows,
            "drifted": dg.MetadataValue.int(int(drifted)),
            "per_rollout": dg.MetadataValue.md(
                md_table(["rollout", "devices", "drifted", "rolled back"], per_rollout)
            ),
            "drifted_sample": dg.MetadataValue.md(
                md_table(["tenant", "device", "rollout", "desired", "reported", "status"], sample)
            ),
        }
    )
