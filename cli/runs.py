"""Runs started by the CLI: jobs of the code location executed in process on the shared instance.

Every command that changes something (sync, rollout launch, approve, ...) runs the same Dagster
job the UI launches, so it shows in the UI as a run with its config, logs and who asked.
"""

from __future__ import annotations

from typing import Any

from cli.common import CliError
from cli.environment import definitions, instance, lakehouse
from pipelines.jobs import MAIN_JOB

# The console shows warnings only; the full event log still goes to the instance (see it in the UI).
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def failure_message(result: Any) -> str:
    """What a failed run's first failing step said (a ``dg.Failure`` description or the error)."""
    for ev in result.all_events:
        if ev.is_step_failure:
            data = ev.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                return data.user_failure_data.description
            if data.error is not None:
                return data.error.message.strip()
    return "see the run in the Dagster UI"


def _execute(job: str, run_config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Execute a job of the code location in process on the shared instance, quietly, never raising."""
    return (
        definitions()
        .resolve_job_def(job)
        .execute_in_process(
            instance=instance(),
            raise_on_error=False,
            run_config={**QUIET_LOGS, **(run_config or {})},
            **kwargs,
        )
    )


def _values(metadata: Any) -> dict[str, Any]:
    """Metadata entries as plain values."""
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def run_job(job: str, op: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Run an op job in process on the shared instance; returns (run id, the op's output metadata)."""
    lakehouse()  # creates the lakehouse on first use, like every other command
    result = _execute(job, {"ops": {op: {"config": config}}})
    if not result.success:
        raise CliError(f"{failure_message(result)} (run {result.run_id})")
    meta: dict[str, Any] = {}
    for ev in result.all_events:
        if ev.event_type_value == "STEP_OUTPUT" and ev.event_specific_data.metadata:
            meta = _values(ev.event_specific_data.metadata)
    return result.run_id, meta


def run_partition(job: str, partition_key: str) -> str:
    """Run an asset job for one partition on the shared instance; returns the run id (failures logged)."""
    return _execute(job, partition_key=partition_key).run_id


def run_main_job() -> dict[str, Any]:
    """Run the main job (``sync_fleet``); returns its run id and the counts its assets reported."""
    result = _execute(MAIN_JOB)
    if not result.success:
        raise CliError(
            f"the job {MAIN_JOB} failed (run {result.run_id}); open the Dagster UI (make dev) to see why"
        )
    metadata: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        metadata[mat.asset_key.to_user_string()] = _values(mat.metadata)
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    rec = metadata.get("sync_reconciliation", {})
    return {
        "run_id": result.run_id,
        "job": MAIN_JOB,
        "objects_listed": rec.get("objects_listed", 0),
        "batches_accepted": rec.get("missed/accepted", 0),
        "rows_in": rec.get("missed/rows_in", 0),
        "rows_new": rec.get("missed/rows_new", 0),
        "duplicates_dropped": rec.get("missed/duplicates_dropped", 0),
        "quarantined": rec.get("missed/quarantined", 0),
        "conflicts": rec.get("missed/conflicts", 0),
        "deferred_admitted": rec.get("deferred_admitted", 0),
        "checks": checks,
        "assets": metadata,
    }
