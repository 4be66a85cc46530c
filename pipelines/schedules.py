"""Schedules: reconciliation every 15 minutes (catches what sensors missed, admits deferred batches)."""

import dagster as dg

from pipelines.jobs import reconcile_sync

reconcile_every_15_minutes = dg.ScheduleDefinition(
    name="reconcile_sync_every_15_minutes",
    job=reconcile_sync,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

SCHEDULES = [reconcile_every_15_minutes]
