"""Sensors: new batch objects -> ingest runs; active rollouts -> advance runs; the GitOps repository;
changed state rules -> a run sending them to the devices."""

from pipelines.sensors.batch_arrival import batch_arrival_sensor
from pipelines.sensors.fleet_config import fleet_config_sensor
from pipelines.sensors.rollout_gitops import rollout_gitops_sensor
from pipelines.sensors.rollout_promotion import rollout_promotion_sensor
from pipelines.sensors.run_failure import platform_run_failure_sensor
from pipelines.sensors.state_rules_publish import state_rules_publish_sensor

# state_rules_publish_sensor: a change of the conflict rules in force is sent to every device
SYNC_SENSORS = [batch_arrival_sensor, state_rules_publish_sensor]
ROLLOUT_SENSORS = [rollout_promotion_sensor, rollout_gitops_sensor]
ALERT_SENSORS = [platform_run_failure_sensor]
SENSORS = [*SYNC_SENSORS, *ROLLOUT_SENSORS, *ALERT_SENSORS]
SENSORS += [fleet_config_sensor]  # desired device state from the GitOps repository's fleet/ tree
