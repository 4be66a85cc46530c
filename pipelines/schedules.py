"""Schedules: reconciliation every 15 minutes (catches what sensors missed, admits deferred batches),
alert rules every minute."""

import dagster as dg

from pipelines.jobs import evaluate_alerts, reconcile_sync

reconcile_every_15_minutes = dg.ScheduleDefinition(
    name="reconcile_sync_every_15_minutes",
    job=reconcile_sync,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

# The lakehouse side of the alert rules; the live subscriber (`edgeplat live`) notifies within seconds.
evaluate_alerts_every_minute = dg.ScheduleDefinition(
    name="evaluate_alerts_every_minute",
    job=evaluate_alerts,
    cron_schedule="* * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

SCHEDULES = [reconcile_every_15_minutes]
ALERT_SCHEDULES = [evaluate_alerts_every_minute]
