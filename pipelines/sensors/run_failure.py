"""Run failures of the platform's own jobs notify the platform sinks (rules of kind ``run_failure``)."""

import dagster as dg

from resources.alerts import AlertRulesResource
from resources.lakehouse import LakehouseResource


@dg.run_failure_sensor(
    name="platform_run_failure_sensor",
    description="Notifies the platform sinks of the alert rules file when a run of this code location fails.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def platform_run_failure_sensor(
    context: dg.RunFailureSensorContext, lakehouse: LakehouseResource, alert_rules: AlertRulesResource
) -> None:
    if alert_rules.config() is None:
        return
    lake = lakehouse.get()
    lake.ensure_created()
    engine = alert_rules.engine(lake)
    run = context.dagster_run
    message = context.failure_event.message or "run failed"
    report = engine.notify_run_failure(run.job_name, run.run_id, message)
    context.log.info(f"run failure of {run.job_name} ({run.run_id}): {report.to_dict()}")
