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

        def unit(c) -> None:
            c.register("_drift", table)
            c.execute("DELETE FROM device_drift")
            c.execute(
                "INSERT INTO device_drift (tenant_id, device_id, rollout_id, rollout, desired_version, "
                "reported_version, status, rolled_back, drifted, computed_at) SELECT tenant_id, device_id, "
                "rollout_id, rollout, desired_version, reported_version, status, rolled_back, drifted, ? FROM _drift",
                [now],
            )
            c.unregister("_drift")

        store.write(unit, "device drift")
        per_rollout = con.execute(
            "SELECT coalesce(rollout_id, '(none)'), count(*), count(*) FILTER (WHERE drifted), "
            "count(*) FILTER (WHERE rolled_back) FROM device_drift GROUP BY 1 ORDER BY 1"
        ).fetchall()
        sample = con.execute(
            "SELECT tenant_id, device_id, rollout_id, desired_version, reported_version, status FROM device_drift "
            "WHERE drifted ORDER BY tenant_id, device_id LIMIT 20"
        ).fetchall()
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
