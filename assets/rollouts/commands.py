"""Operator ops: launch a rollout, approve a phase, pause, resume, abort (roll back now), fail a phase.

Each op appends a durable event with who and why, then runs one controller tick for the
rollout, so an approval deploys and an abort rolls back right away (the promotion sensor
would do the same on its next tick; both paths are idempotent). The CLI runs these same
jobs in process on the shared instance, so every command shows in the UI as a run.
"""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.rollouts.common import ROLLOUTS, controller_from
from edgeplat.rollouts.commands import CommandError
from edgeplat.rollouts.controller import new_rollout_id
from edgeplat.rollouts.plan import PlanError
from edgeplat.rollouts.spec import SpecError, load_spec
from edgeplat.rollouts.store import RolloutNotFound
from resources.backends import FleetBackendResource
from resources.lakehouse import LakehouseResource

EXAMPLE_SPEC = Path(__file__).resolve().parents[2] / "examples" / "rollouts" / "canary-good.yaml"


def _example() -> str:
    try:
        return EXAMPLE_SPEC.read_text()
    except OSError:
        return ""


class LaunchRolloutConfig(dg.Config):
    """The rollout spec to launch (YAML, validated like a GitOps spec file) and who launches it."""

    spec_yaml: str = Field(
        default=_example(),
        description="The rollout spec as YAML: name, release, target, strategy (phases, bake, approval), "
        "gates, progress_deadline, device_timeout, maintenance_window, rollback, selection. "
        "Schema: edgeplat/rollouts/schema.json; examples: examples/rollouts/.",
    )
    who: str = Field(default="ui", description="who launches (recorded in the rollout's events)")
    why: str = Field(default="launched from the Dagster UI", description="why (recorded in the events)")
    rollout_id: str = Field(default="", description="optional id; default <name>-<run id prefix>")
    source: dict[str, str] = Field(
        default_factory=dict, description="where the spec came from (gitops: repo, path, commit)"
    )


class RolloutCommandConfig(dg.Config):
    """Which rollout, who, why (and for approvals, which phase)."""

    rollout: str = Field(description="rollout id (or name: the newest rollout of that name)")
    who: str = Field(description="who gives the command (recorded in the rollout's events)")
    why: str = Field(default="", description="why (recorded in the events)")
    phase: int | None = Field(
        default=None, description="approve_phase: the phase approved (default: the waiting one)"
    )
    request_id: str = Field(default="", description="deduplicates resubmissions (default: the run id)")
    at: str = Field(
        default="", description="ISO timestamp to act at (simulations and the demo); default: now"
    )


def _emit(context: dg.OpExecutionContext, rid: str, summary: dict) -> None:
    """Record the run against the rollout's partition, so the UI links the run and the rollout."""
    context.log_event(dg.AssetObservation(asset_key="rollout_events", partition=rid, metadata=summary))


@dg.op(description="Validate the spec, record the rollout, register its partition, and take the first step.")
def launch_rollout_op(
    context: dg.OpExecutionContext,
    config: LaunchRolloutConfig,
    lakehouse: LakehouseResource,
    fleet_backend: FleetBackendResource,
) -> str:
    try:
        spec = load_spec(config.spec_yaml)
    except SpecError as exc:
        raise dg.Failure(description=str(exc)) from None
    ctl = controller_from(lakehouse, fleet_backend)
    rid = config.rollout_id or new_rollout_id(spec, context.run_id)
    try:
        ctl.launch(
            spec,
            actor=config.who,
            reason=config.why,
            rollout_id=rid,
            source={"kind": "dagster", "run_id": context.run_id, **config.source},
            require_plan=True,
        )
    except PlanError as exc:
        raise dg.Failure(description=str(exc), metadata={"plan": exc.plan.as_dict()}) from None
    context.instance.add_dynamic_partitions(ROLLOUTS.name, [rid])
    res = ctl.tick(rid)
    _emit(context, rid, {"rollout_id": rid, "status": res.status, "phase": res.phase, "who": config.who})
    context.add_output_metadata({"rollout_id": rid, "status": res.status, "appended": len(res.appended)})
    return rid


class AdvanceRolloutConfig(dg.Config):
    """Which rollout to advance, and why the sensor asked (shown in the run's config)."""

    rollout: str = Field(description="rollout id")
    reason: str = Field(default="", description="what the sensor saw due (decisions, late devices)")


@dg.op(
    description="One controller step for one rollout: fold its log, observe the fleet, decide, act "
    "through the fleet backend, append. Requested by the promotion and GitOps sensors."
)
def advance_rollout_op(
    context: dg.OpExecutionContext,
    config: AdvanceRolloutConfig,
    lakehouse: LakehouseResource,
    fleet_backend: FleetBackendResource,
) -> str:
    ctl = controller_from(lakehouse, fleet_backend)
    try:
        rid = ctl.store.resolve(config.rollout)
    except RolloutNotFound as exc:
        raise dg.Failure(description=str(exc)) from None
    res = ctl.tick(rid)
    for e in res.appended:
        context.log.info("rollout %s: %s phase %s: %s", rid, e.kind, e.phase, e.reason)
    if res.appended:
        _emit(context, rid, {"status": res.status, "phase": res.phase, "appended": len(res.appended)})
    context.add_output_metadata(
        {
            "rollout_id": rid,
            "status": res.status,
            "phase": res.phase,
            "sent": dg.MetadataValue.json(res.sent),
            "appended": dg.MetadataValue.json([f"{e.kind}({e.phase})" for e in res.appended]),
        }
    )
    return rid


def _command_op(kind: str, description: str) -> dg.OpDefinition:
    @dg.op(name=f"{kind}_op", description=description)
    def _op(
        context: dg.OpExecutionContext,
        config: RolloutCommandConfig,
        lakehouse: LakehouseResource,
        fleet_backend: FleetBackendResource,
    ) -> str:
        ctl = controller_from(lakehouse, fleet_backend)
        try:
            at = datetime.fromisoformat(config.at) if config.at else datetime.now(UTC)
            if at.tzinfo is None:
                raise ValueError(f"'at' must carry a time zone, e.g. {config.at}+00:00")
            rid = ctl.store.resolve(config.rollout)
            ev = ctl.command(
                rid,
                kind,
                actor=config.who,
                reason=config.why,
                phase=config.phase,
                request_id=config.request_id or context.run_id,
                inputs={"run_id": context.run_id},
                now=at,
            )
        except (CommandError, RolloutNotFound, ValueError) as exc:
            raise dg.Failure(description=f"{kind} {config.rollout}: {exc}") from None
        res = ctl.tick(rid, at)
        _emit(context, rid, {"command": kind, "who": config.who, "why": config.why, "status": res.status})
        context.add_output_metadata(
            {
                "rollout_id": rid,
                "event": ev.key,
                "status": res.status,
                "phase": res.phase,
                "appended": dg.MetadataValue.json([f"{e.kind}({e.phase})" for e in res.appended]),
            }
        )
        return rid

    return _op


COMMAND_OPS = {
    "approve": _command_op("approve", "Approve a phase that waits for a manual approval."),
    "pause": _command_op("pause", "Pause a rollout: nothing new is deployed until it resumes."),
    "resume": _command_op("resume", "Resume a paused rollout (a phase that failed a gate bakes again)."),
    "abort": _command_op("abort", "Abort a rollout: roll every device it updated back now."),
    "fail_phase": _command_op(
        "fail_phase", "Mark the current phase failed by hand (applies the rollback policy)."
    ),
}
