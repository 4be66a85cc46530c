"""Reconciliation assets: missed and deferred objects, duplicates, fleet tables, views, compaction, checks."""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from assets.sync.common import sync_env
from assets.sync.ingest import report_metadata
from edge_sync.ids import validate_id
from edgeplat.sync.compaction import TIMEOUT as COMPACTION_TIMEOUT
from edgeplat.sync.compaction import compact_isolated
from edgeplat.sync.env import wall_ms
from edgeplat.sync.ledger import pending_deferred
from edgeplat.sync.reconcile import (
    admit_deferred,
    find_gaps,
    ingest_missed,
    mark_offline,
    remove_duplicates,
)
from edgeplat.sync.rollups import roll_up_health
from edgeplat.sync.views import create_views
from resources.keys import DeviceRegistryResource, KeyServiceResource
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from resources.state_rules import StateRulesResource

FRESHNESS_WARN_S = 30 * 60
MAX_GAPS_LISTED = 50


class ReconcileConfig(dg.Config):
    max_drift_s: int = 300
    dedupe_window_h: int = 24  # 0: the whole tables
    tenant_id: str = ""  # one tenant's objects only (a run per tenant); "" every tenant


class DevicesConfig(dg.Config):
    offline_after_s: int = 30 * 60


class CompactionConfig(dg.Config):
    timeout_minutes: int = Field(
        default=int(COMPACTION_TIMEOUT.total_seconds() // 60),
        gt=0,
        description="the maintenance child is killed after this long (the run fails and says so)",
    )


@dg.asset(
    group_name="sync",
    deps=["lakehouse_tables"],
    description="Re-lists the object store against the ledger and ingests what was missed; admits deferred "
    "batches now within the clock-drift bound; removes duplicates concurrent runs may have left.",
)
def sync_reconciliation(
    context: dg.AssetExecutionContext,
    config: ReconcileConfig,
    lakehouse: LakehouseResource,
    object_store: ObjectStoreResource,
    key_service: KeyServiceResource,
    device_registry: DeviceRegistryResource,
    state_rules: StateRulesResource,
) -> dg.MaterializeResult:
    env = sync_env(
        lakehouse,
        object_store,
        key_service,
        device_registry,
        state_rules,
        max_drift_ms=config.max_drift_s * 1000,
    )
    prefix = f"tenant={validate_id('tenant', config.tenant_id)}/" if config.tenant_id else ""
    with env.lakehouse.session() as con:
        missed, listed = ingest_missed(env, con, prefix)
        deferred = admit_deferred(env, con, prefix)
        window = timedelta(hours=config.dedupe_window_h) if config.dedupe_window_h else None
        removed = remove_duplicates(env, con, window=window)
        pending = len(pending_deferred(con))
    context.log.info(
        "reconciliation: listed %d, missed %s, deferred %s, duplicates removed %s",
        listed,
        missed.as_dict(),
        deferred.as_dict(),
        removed,
    )
    return dg.MaterializeResult(
        metadata={
            "objects_listed": listed,
            **{f"missed/{k}": v for k, v in report_metadata(missed).items()},
            "deferred_admitted": deferred.deferred_admitted,
            "deferred_pending": pending,
            "duplicates_removed": sum(removed.values()),
        }
    )


@dg.asset_check(
    asset=sync_reconciliation, description="Seq ranges neither uploaded nor counted as evicted (WARN)."
)
def no_sequence_gaps(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    with lakehouse.get().session(read_only=True) as con:
        gaps = find_gaps(con)
    devices = sorted({f"{g.tenant_id}/{g.device_id}" for g in gaps})
    return dg.AssetCheckResult(
        passed=not gaps,
        severity=dg.AssetCheckSeverity.WARN,
        description=("gaps on " + ", ".join(devices[:MAX_GAPS_LISTED])) if gaps else "no gaps",
        metadata={
            "gaps": len(gaps),
            "missing_seqs": sum(g.size for g in gaps),
            "devices": dg.MetadataValue.json(devices[:MAX_GAPS_LISTED]),
            "gap_ranges": dg.MetadataValue.json(
                [
                    f"{g.tenant_id}/{g.device_id}/{g.stream}: {g.first_seq}..{g.last_seq}"
                    for g in gaps[:MAX_GAPS_LISTED]
                ]
            ),
        },
    )


@dg.asset_check(asset=sync_reconciliation, description="The newest batch ingest is recent (WARN when stale).")
def ingest_freshness(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    with lakehouse.get().session(read_only=True) as con:
        latest = con.execute("SELECT max(ingested_at) FROM batches").fetchone()[0]
    age = None if latest is None else (datetime.now(UTC) - latest).total_seconds()
    return dg.AssetCheckResult(
        passed=age is not None and age <= FRESHNESS_WARN_S,
        severity=dg.AssetCheckSeverity.WARN,
        description="nothing ingested yet" if age is None else f"latest ingest {age:.0f} s ago",
        metadata={"latest_ingest_age_s": dg.MetadataValue.float(float(age if age is not None else -1))},
    )


@dg.asset(
    group_name="fleet",
    deps=[sync_reconciliation],
    description="Registered devices: last batch, reported version/slot, online/offline.",
)
def devices(config: DevicesConfig, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    with lakehouse.get().session() as con:
        changed = mark_offline(con, now_ms=wall_ms(), offline_after_s=config.offline_after_s)
        by_status = dict(
            con.execute("SELECT coalesce(status, 'unknown'), count(*) FROM devices GROUP BY 1").fetchall()
        )
    return dg.MaterializeResult(
        metadata={
            "marked_offline": changed,
            **{f"status/{s}": by_status.get(s, 0) for s in ("online", "offline")},
            "devices": sum(by_status.values()),
        }
    )


@dg.asset(group_name="fleet", deps=[sync_reconciliation], description="Health rolled up per device and hour.")
def device_health(lakehouse: LakehouseResource) -> dg.MaterializeResult:
    with lakehouse.get().session() as con:
        hours = roll_up_health(con)
        total = con.execute("SELECT count(*) FROM device_health").fetchone()[0]
    return dg.MaterializeResult(metadata={"hours_rewritten": hours, "rows": total})


@dg.asset(
    group_name="sync",
    deps=["lakehouse_tables"],
    description="Named SQL views for analysts: telemetry_hourly, device_last_seen, sync_lag, "
    "quarantine_summary, conflicts_recent.",
)
def sync_views(lakehouse: LakehouseResource) -> dg.MaterializeResult:
    with lakehouse.get().session() as con:
        names = create_views(con)
    return dg.MaterializeResult(metadata={"views": dg.MetadataValue.json(names)})


@dg.asset(
    group_name="sync",
    deps=[sync_reconciliation, devices, device_health],
    description="DuckLake maintenance: flush inlined rows, merge small files, expire snapshots, clean "
    "files; run in a child process, replaced if DuckLake crashes it, killed past its timeout.",
    pool="lakehouse_maintenance",  # one compaction at a time across runs (deploy/dagster pools)
)
def lakehouse_compaction(config: CompactionConfig, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    out = compact_isolated(lakehouse.get().config, timeout=timedelta(minutes=config.timeout_minutes))
    return dg.MaterializeResult(metadata={k: dg.MetadataValue.int(v) for k, v in out.items()})


RECONCILE_ASSETS = [sync_reconciliation, devices, device_health, sync_views, lakehouse_compaction]
RECONCILE_CHECKS = [no_sequence_gaps, ingest_freshness]
