"""The state-rules sensor: when the conflict rules in force change, request a ``publish_state_rules`` run.

The sensor only decides (:func:`edgeplat.state_rules_published.check_publish`): it loads the
rules as the runs do (an operator's file, or the file at the GitOps branch head in a clone of
its own) and compares them with the last send recorded in the lakehouse. The run key names the
version, the content hash and the sends before it, so a tick evaluated again before the run
completes asks for the same run. Rules that do not load send nothing; the skip reason names the
file and the fix. Dagster never launches a run key twice, so when the run of a change failed the
sensor says so instead of asking again.
"""

import dagster as dg

from edgeplat.state_rules_published import check_publish
from pipelines.jobs import publish_state_rules
from resources.lakehouse import LakehouseResource
from resources.state_rules import StateRulesResource

RUN_KEY_TAG = "dagster/run_key"  # the tag Dagster gives a sensor's run with its run key


@dg.sensor(
    jobs=[publish_state_rules],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the state conflict rules in force (EDGEPLAT_STATE_RULES or the GitOps path): "
    "requests a publish_state_rules run when they differ from the rules last sent to the devices.",
)
def state_rules_publish_sensor(
    context: dg.SensorEvaluationContext, lakehouse: LakehouseResource, state_rules: StateRulesResource
) -> dg.SensorResult:
    check = check_publish(
        lambda: state_rules.get(clone="clone-sensor"), state_rules.source(), lakehouse.get()
    )
    if check.run_key is None:
        return dg.SensorResult(skip_reason=check.reason)
    failed = context.instance.get_runs(
        filters=dg.RunsFilter(tags={RUN_KEY_TAG: check.run_key}, statuses=[dg.DagsterRunStatus.FAILURE]),
        limit=1,
    )
    if failed:
        return dg.SensorResult(
            skip_reason=f"{check.reason}: its run {failed[0].run_id} failed; fix what its log says, then "
            "launch the publish_state_rules job by hand"
        )
    context.log.info("%s: requesting a publish_state_rules run", check.reason)
    request = dg.RunRequest(
        run_key=check.run_key,
        tags={
            "edgeplat/state_rules_version": str(check.version),
            "edgeplat/state_rules_hash": check.content_hash,
        },
    )
    return dg.SensorResult(run_requests=[request])
