"""``device_drift``: per device, the release the rollouts want against the release it reports, and
per state field, the configuration central wants against what the device reports (with a check
that warns on old drift and an optional drift summary committed to the GitOps repository)."""

import json
from datetime import UTC, datetime

import dagster as dg

from assets.rollouts.common import GROUP, md_table, store_from
from edgeplat.rollouts import cohorts
from edgeplat.sync import config_drift
from resources.gitops import GitOpsRepoResource
from resources.lakehouse import LakehouseResource

SAMPLE_ROWS = 20


@dg.asset(
    group_name=GROUP,
    description="Desired versus reported version per device (lakehouse table device_drift); a device "
    "drifts when the latest rollout that deployed to it wants a release it does not report. Desired versus "
    "reported configuration per state field (table device_config_drift): pending, drifted, or accepted "
    "(the device's own value wins under the field's rule).",
)
def device_drift(lakehouse: LakehouseResource, gitops_repo: GitOpsRepoResource) -> dg.MaterializeResult:
    store = store_from(lakehouse)
    now = datetime.now(UTC)
    with store.session() as con:
        table = cohorts.drift(con)
        store.replace_drift(table, now)
        per_rollout = store.drift_counts()
        sample = store.drifted_devices(SAMPLE_ROWS)
    fields = config_drift.refresh(lakehouse.get(), now)
    by_status = config_drift.counts(fields)
    metadata = {
        "devices": table.num_rows,
        "drifted": dg.MetadataValue.int(int(sum(r[2] for r in per_rollout))),
        "per_rollout": dg.MetadataValue.md(
            md_table(["rollout", "devices", "drifted", "rolled back"], per_rollout)
        ),
        "drifted_sample": dg.MetadataValue.md(
            md_table(["tenant", "device", "rollout", "desired", "reported", "status"], sample)
        ),
        "config_fields_drifting": dg.MetadataValue.int(fields.num_rows),
        **{f"config_{s}": dg.MetadataValue.int(n) for s, n in by_status.items()},
        "config_drift_sample": dg.MetadataValue.md(
            md_table(
                ["tenant", "device", "field", "status", "desired", "reported", "origin", "age (s)"],
                [
                    (
                        r["tenant_id"],
                        r["device_id"],
                        f"{r['namespace']}/{r['key']}/{r['field']}",
                        r["status"],
                        r["desired_value"],
                        r["reported_value"],
                        r["desired_origin"],
                        round(r["age_s"]),
                    )
                    for r in fields.slice(0, SAMPLE_ROWS).to_pylist()
                ],
            )
        ),
    }
    watcher = gitops_repo.drift_writer()
    if watcher is not None and gitops_repo.drift_file:
        text = json.dumps(config_drift.summary(fields), indent=2, sort_keys=True) + "\n"
        commit = watcher.commit_file(gitops_repo.drift_file, text, "device drift [edgeplat]")
        metadata["drift_writeback_commit"] = dg.MetadataValue.text(commit or "unchanged")
    return dg.MaterializeResult(metadata=metadata)


class ConfigDriftCheckConfig(dg.Config):
    """How old a pending or drifted field may get before the check warns."""

    threshold_s: float = 3600.0


@dg.asset_check(
    asset=device_drift,
    description="State fields pending or drifted for longer than the threshold (WARN; default 1 h). "
    "Accepted drift (the device's value wins under its rule) never warns.",
)
def config_drift_age(config: ConfigDriftCheckConfig, lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    now = datetime.now(UTC)
    lake = store_from(lakehouse).lake  # an older catalog gains the drift table before it is read
    with lake.session(read_only=True) as con:
        count, oldest = config_drift.older_than(con, config.threshold_s, now)
    return dg.AssetCheckResult(
        passed=count == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{count} field(s) drifting for more than {config.threshold_s:.0f} s"
        if count
        else f"no field drifting for more than {config.threshold_s:.0f} s",
        metadata={
            "threshold_s": dg.MetadataValue.float(float(config.threshold_s)),
            "old_fields": dg.MetadataValue.int(count),
            "oldest": dg.MetadataValue.json(oldest),
        },
    )
