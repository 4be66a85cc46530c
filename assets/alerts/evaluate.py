"""The scheduled alert pass: platform conditions and device alerts the live path did not notify."""

import dagster as dg

from resources.alerts import AlertRulesResource
from resources.lakehouse import LakehouseResource


@dg.op(description="Evaluate the alert rules on the lakehouse and notify the tenants' sinks.")
def evaluate_alerts_op(
    context: dg.OpExecutionContext, lakehouse: LakehouseResource, alert_rules: AlertRulesResource
) -> None:
    lake = lakehouse.get()
    lake.ensure_created()
    engine = alert_rules.engine(lake)
    if engine is None:
        context.log.info(f"no alert rules at {alert_rules.rules_path!r}: nothing evaluated")
        return
    report = engine.evaluate()
    failed = sum(o.outcome == "failed" for _, outcomes in report.notifications for _, o in outcomes)
    context.log.info(f"alert pass: {report.to_dict()}")
    if failed:
        context.log.warning(f"{failed} notification deliveries failed (see the notifications table)")
