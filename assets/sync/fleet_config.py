"""``apply_fleet_config_op``: the op of the ``apply_fleet_config`` job, which applies one commit's
``fleet/`` tree of the GitOps repository as central state edits (``edgeplat.fleet_config``)."""

from typing import Any

import dagster as dg

from assets.sync.central_edits import _publisher
from edgeplat.fleet_config.apply import apply_commit
from resources.gitops import GitOpsRepoResource
from resources.keys import PlatformSignerResource
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from resources.state_rules import StateRulesResource


class FleetConfigRunConfig(dg.Config):
    """The commit of the GitOps repository whose ``fleet/`` tree to apply (the sensor's head)."""

    commit: str


@dg.op(
    description="Apply the fleet/ tree of one GitOps commit: changed values merged and published as "
    "central state edits, removed values withdrawn, each recorded in device_state_sources.",
    # git, the lakehouse or the object store failing is worth retrying (the apply is idempotent);
    # an invalid tree is not (its Failure says allow_retries=False)
    retry_policy=dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL),
)
def apply_fleet_config_op(
    context: dg.OpExecutionContext,
    config: FleetConfigRunConfig,
    lakehouse: LakehouseResource,
    object_store: ObjectStoreResource,
    platform_signer: PlatformSignerResource,
    gitops_repo: GitOpsRepoResource,
    state_rules: StateRulesResource,
) -> dict:
    watcher = gitops_repo.fleet_watcher("run")
    if watcher is None:
        raise dg.Failure("GitOps is off: set gitops_repo.repo (EDGEPLAT_GITOPS_REPO)")
    # the operator's rules, the ones every other central edit merges by (they also decide which
    # fields git may set: a field whose rule cannot forget a value cannot be withdrawn)
    rules = state_rules.get()
    result = apply_commit(
        watcher,
        lakehouse.get(),
        config.commit,
        rules,
        publish=_publisher(object_store, platform_signer, lakehouse, rules),
    )
    metadata: dict[str, Any] = {
        "commit": config.commit,
        "status": result.status,
        "edits": result.edits,
        "withdrawn": result.withdrawn,
        "devices": len(result.devices),
        "conflicts": dg.MetadataValue.json(result.conflicts),
    }
    if result.status == "invalid":
        for err in result.errors:
            context.log.error("fleet/ at %s: %s", config.commit[:12], err)
        errors = [e.as_dict() for e in result.errors]
        raise dg.Failure(
            description=f"fleet/ at {config.commit[:12]} is invalid ({len(errors)} errors); nothing changed. "
            + "; ".join(str(e) for e in result.errors[:5]),
            metadata={**metadata, "errors": dg.MetadataValue.json(errors)},
            allow_retries=False,
        )
    context.log.info("fleet/ at %s: %s", config.commit[:12], result.as_dict())
    context.add_output_metadata(metadata)
    return result.as_dict()
