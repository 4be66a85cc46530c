"""Schedules: reconciliation every 15 minutes (catches what sensors missed, admits deferred batches),
settled batch objects archived hourly (retention: ``EDGEPLAT_ARCHIVE_AFTER_HOURS``), alert rules
every minute, the device inventory hourly, platform feedback every 2 minutes when a platform backend
is configured, device drift (releases and configuration) every 15 minutes."""

import os

import dagster as dg

from assets.sync.archive import DEFAULT_ARCHIVE_AFTER_H
from pipelines.jobs import (
    archive_settled,
    device_drift_refresh,
    device_inventory_sync,
    evaluate_alerts,
    platform_feedback_refresh,
    reconcile_sync,
)

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

device_inventory_hourly = dg.ScheduleDefinition(
    name="device_inventory_hourly",
    job=device_inventory_sync,
    cron_schedule="7 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
# Acknowledgements of Greengrass/IoT Edge devices come from this pass: on when those platforms are.
_PLATFORMS = {
    os.environ.get("EDGEPLAT_FLEET_BACKEND", ""),
    *os.environ.get("EDGEPLAT_FLEET_BACKENDS", "").split(","),
}
platform_feedback_every_2_minutes = dg.ScheduleDefinition(
    name="platform_feedback_every_2_minutes",
    job=platform_feedback_refresh,
    cron_schedule="*/2 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING
    if _PLATFORMS & {"greengrass", "azure_iot_edge"}
    else dg.DefaultScheduleStatus.STOPPED,
)
# Configuration drift changes without rollouts (central edits, devices syncing): refreshed on its own,
# after the reconciliation that ingests what devices reported.
device_drift_every_15_minutes = dg.ScheduleDefinition(
    name="device_drift_every_15_minutes",
    job=device_drift_refresh,
    cron_schedule="5-59/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
# Only with the whole code location (their assets are not in the sync's or the rollouts' own).
PLATFORM_SCHEDULES = [
    device_inventory_hourly,
    platform_feedback_every_2_minutes,
    device_drift_every_15_minutes,
]


def _archive_after_hours() -> int:
    text = os.environ.get("EDGEPLAT_ARCHIVE_AFTER_HOURS", str(DEFAULT_ARCHIVE_AFTER_H))
    if not text.strip().isdigit():
        raise ValueError(
            f"EDGEPLAT_ARCHIVE_AFTER_HOURS={text!r} is not a whole number of hours: set e.g. 72, or unset it"
        )
    return int(text)


# Settled objects leave the hot prefix after the operator's retention (hours, default 72): listings
# then cost what the backlog costs. A launchpad run may set its own archive_after_h.
archive_settled_hourly = dg.ScheduleDefinition(
    name="archive_settled_hourly",
    job=archive_settled,
    cron_schedule="37 * * * *",
    run_config={"ops": {"archive_settled_objects": {"config": {"archive_after_h": _archive_after_hours()}}}},
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
ARCHIVE_SCHEDULES = [archive_settled_hourly]
