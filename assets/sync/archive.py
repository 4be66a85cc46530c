"""The archive's operator ops: move settled batch objects out of the hot prefix, replay a device's range.

The domain logic (the crash-safe move, the replay through the ingest) is
``edgeplat.sync.archive``; these ops only read the config and report.
"""

from datetime import timedelta

import dagster as dg
from pydantic import Field

from assets.sync.common import counts_metadata, sync_env
from edge_sync.ids import validate_id
from edgeplat.sync.archive import (
    DEFAULT_ARCHIVE_AFTER,
    DEFAULT_MAX_OBJECTS,
    ArchiveEnv,
    ReplayRange,
    archive_settled,
    replay_archive,
)
from resources.keys import DeviceRegistryResource, KeyServiceResource
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from resources.state_rules import StateRulesResource

DEFAULT_ARCHIVE_AFTER_H = int(DEFAULT_ARCHIVE_AFTER.total_seconds() // 3600)


class ArchiveConfig(dg.Config):
    archive_after_h: int = Field(
        default=DEFAULT_ARCHIVE_AFTER_H,
        ge=0,
        description="settled objects older than this (by ingest or quarantine time) leave the hot prefix",
    )
    tenant_id: str = Field(default="", description="one tenant's objects only; '' every tenant")
    max_objects: int = Field(default=DEFAULT_MAX_OBJECTS, gt=0, description="objects moved per run at most")


class ReplayConfig(dg.Config):
    tenant_id: str
    device_id: str
    stream: str = Field(default="", description="one stream; '' every stream")
    from_seq: int | None = Field(default=None, description="replay batches overlapping from this seq")
    to_seq: int | None = Field(default=None, description="... up to this seq (inclusive)")


@dg.op(
    description="Move settled batch objects older than the retention from the hot prefix to archive/ "
    "(copy, record in archived_batches, delete), so listings cost what the backlog costs, not history."
)
def archive_settled_objects(
    context: dg.OpExecutionContext,
    config: ArchiveConfig,
    lakehouse: LakehouseResource,
    object_store: ObjectStoreResource,
) -> dict:
    env = ArchiveEnv(lakehouse.get(), object_store.get())
    prefix = f"tenant={validate_id('tenant', config.tenant_id)}/" if config.tenant_id else ""
    report = archive_settled(
        env,
        archive_after=timedelta(hours=config.archive_after_h),
        prefix=prefix,
        max_objects=config.max_objects,
    )
    counts = report.as_dict()
    context.log.info("archive: %s", counts)
    if report.conflicts:
        context.log.error(
            "archive copies differing from their hot objects (left hot): %s", report.conflicts[:20]
        )
    context.add_output_metadata({k: dg.MetadataValue.int(v) for k, v in counts.items()})
    return counts


@dg.op(
    description="Re-ingest a device's batches (archived and hot) exactly once: rows already stored are "
    "dropped as duplicates, missing rows restored (a table rebuilt after data loss, a fresh lakehouse)."
)
def replay_device_range(
    context: dg.OpExecutionContext,
    config: ReplayConfig,
    lakehouse: LakehouseResource,
    object_store: ObjectStoreResource,
    key_service: KeyServiceResource,
    device_registry: DeviceRegistryResource,
    state_rules: StateRulesResource,
) -> dict:
    try:
        rng = ReplayRange(
            config.tenant_id, config.device_id, config.stream or None, config.from_seq, config.to_seq
        )
    except ValueError as exc:
        raise dg.Failure(f"replay_archive: {exc}") from None
    env = sync_env(lakehouse, object_store, key_service, device_registry, state_rules)
    report = replay_archive(env, rng)
    if not report.found:
        raise dg.Failure(
            f"no batches of {rng} in the archive or the hot prefix: check the tenant, device, stream "
            "and seq range (edgeplat sql: SELECT * FROM batches WHERE device_id = ...)"
        )
    context.log.info("replay %s: %s", rng, report.as_dict())
    ingest = report.ingest
    context.add_output_metadata(
        {
            "range": str(rng),
            "archived": report.archived,
            "hot": report.hot,
            "accepted": ingest.accepted,
            "rows_in": ingest.rows_in,
            "rows_new": ingest.rows_new,
            "duplicates_dropped": ingest.duplicates_dropped,
            "replay_mismatches": ingest.replay_mismatches,
            "missing_objects": ingest.missing,
            **counts_metadata("quarantined", dict(ingest.quarantined)),
        }
    )
    return report.as_dict()
