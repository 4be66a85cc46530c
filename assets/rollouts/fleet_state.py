"""Per rollout: device assignments, per-phase status, and the decision log (one partition each)."""

from datetime import UTC, datetime

import dagster as dg

from assets.rollouts.common import GROUP, ROLLOUTS, md_table, store_from
from edgeplat.rollouts import cohorts
from edgeplat.rollouts.events import Kind, RolloutState
from edgeplat.rollouts.world import assignments
from resources.lakehouse import LakehouseResource


@dg.asset(
    partitions_def=ROLLOUTS,
    group_name=GROUP,
    description="Each target device's hash bucket and phase, and the release it should run now "
    "(lakehouse table rollout_assignments).",
)
def rollout_assignments(
    context: dg.AssetExecutionContext, lakehouse: LakehouseResource
) -> dg.MaterializeResult:
    rid = context.partition_key
    store = store_from(lakehouse)
    now = datetime.now(UTC)
    with store.session() as con:
        table = assignments(con, store, rid, now)
        store.replace_assignments(rid, table, now)
        per_phase = store.assignment_counts(rid)
    return dg.MaterializeResult(
        metadata={
            "devices": table.num_rows,
            "per_phase": dg.MetadataValue.md(md_table(["phase", "devices", "on the release now"], per_phase)),
            "sql": dg.MetadataValue.text(f"SELECT * FROM rollout_assignments WHERE rollout_id = '{rid}'"),
        }
    )


@dg.asset(
    partitions_def=ROLLOUTS,
    group_name=GROUP,
    deps=[rollout_assignments],
    description="Per phase: targeted, acknowledged, updated, healthy, failed and unreachable devices.",
)
def rollout_phase_status(
    context: dg.AssetExecutionContext, lakehouse: LakehouseResource
) -> dg.MaterializeResult:
    rid = context.partition_key
    store = store_from(lakehouse)
    now = datetime.now(UTC)
    with store.session() as con:
        state = store.state(rid, con)
        status = cohorts.phase_status(con, rid, state, store.assigned_phases(rid, con), now)
    rows = [tuple(r.values()) for r in status.to_pylist()]
    totals = {c: int(sum(status.column(c).to_pylist())) for c in status.column_names if c != "phase"}
    return dg.MaterializeResult(
        metadata={
            "status": str(state.status),
            "phase": state.phase,
            **{k: dg.MetadataValue.int(v) for k, v in totals.items()},
            "per_phase": dg.MetadataValue.md(md_table(status.column_names, rows)),
        }
    )


@dg.asset(
    partitions_def=ROLLOUTS,
    group_name=GROUP,
    description="The rollout's durable decision log (lakehouse table rollout_events): every decision "
    "and command with who, why and the inputs it was made on.",
)
def rollout_events(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    rid = context.partition_key
    store = store_from(lakehouse)
    events = store.events(rid)
    state = RolloutState.from_events(events)
    shown = [e for e in events if e.kind != Kind.RECORD_GATES]
    rows = [(e.at.isoformat(timespec="seconds"), e.kind, e.phase, e.actor, e.reason[:120]) for e in shown]
    return dg.MaterializeResult(
        metadata={
            "status": str(state.status),
            "phase": state.phase,
            "events": len(events),
            "release": f"{state.spec.release.name} {state.spec.release.version}",
            "log": dg.MetadataValue.md(md_table(["at", "kind", "phase", "who", "why"], rows[-60:], limit=60)),
            "sql": dg.MetadataValue.text(
                f"SELECT * FROM rollout_events WHERE rollout_id = '{rid}' ORDER BY seq"
            ),
        }
    )
