"""The Dagster wiring: ingest job with metadata, reconciliation job with checks, central edit job."""

from __future__ import annotations

import dagster as dg
import pytest

from edge_sync.desired import decode, desired_key
from edge_sync.identity import PlatformSigner
from pipelines.definitions import sync_definitions
from pipelines.resources import embedded_sync_resources, resources_for
from pipelines.schedules import SCHEDULES
from tests.support.fleet import Fleet


def definitions(fleet: Fleet) -> dg.Definitions:
    root = fleet.root
    return sync_definitions(
        embedded_sync_resources(
            catalog=fleet.lake.config.catalog,
            data_path=fleet.lake.config.data_path,
            objects=str(fleet.store.root),
            keys=str(root / "keys"),
            registry=str(root / "devices"),
            platform_key=str(root / "platform.pem"),
        )
    )


def test_sync_definitions_validate_and_resources_exist() -> None:
    assert {"key_service", "device_registry", "platform_signer"} <= set(resources_for("local"))
    schedule = SCHEDULES[0]
    assert schedule.cron_schedule == "*/15 * * * *" and schedule.job_name == "reconcile_sync"
    defs = sync_definitions(resources_for("local"))
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"ingested_batches", "sync_reconciliation", "devices", "device_health", "sync_views"} <= keys


@pytest.mark.slow
def test_ingest_and_reconcile_jobs_report_counts_and_checks_warn_on_gaps(fleet: Fleet) -> None:
    defs = definitions(fleet)
    good = fleet.upload(fleet.batch("t1", "d1", "telemetry", range(1, 11)))
    dup = fleet.upload(fleet.batch("t1", "d1", "telemetry", range(6, 16)))
    gap = fleet.upload(fleet.batch("t1", "d1", "telemetry", range(21, 25)))  # 16..20 never uploaded
    health = fleet.upload(fleet.batch("t1", "d1", "health", range(1, 4)))
    b = fleet.batch("t1", "d2", "telemetry", range(1, 3))
    bad = fleet.upload(b, data=b.data[:-1] + bytes([b.data[-1] ^ 1]))
    with dg.instance_for_test() as instance:
        config = {
            "ops": {
                "ingested_batches": {
                    "config": {"tenant_id": "t1", "object_keys": [good, dup, gap, health, bad]}
                }
            }
        }
        res = defs.resolve_job_def("ingest_batches").execute_in_process(run_config=config, instance=instance)
        assert res.success
        md = res.asset_materializations_for_node("ingested_batches")[0].metadata
        assert md["rows_in"].value == 27 and md["duplicates_dropped"].value == 5
        assert md["quarantined/bad_signature"].value == 1 and md["quarantined/hash_mismatch"].value == 0

        res = defs.resolve_job_def("reconcile_sync").execute_in_process(instance=instance)
        assert res.success
        checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
        assert not checks["no_sequence_gaps"].passed
        assert checks["no_sequence_gaps"].severity == dg.AssetCheckSeverity.WARN
        # d2's only object was quarantined: no accepted range, so no gap below one (quarantine_summary shows it)
        assert checks["no_sequence_gaps"].metadata["devices"].value == ["t1/d1"]
        assert checks["no_sequence_gaps"].metadata["gap_ranges"].value == ["t1/d1/telemetry: 16..20"]
        assert checks["ingest_freshness"].passed  # the job ingests with the real clock
    assert fleet.count("SELECT device_id, status, reported_version FROM devices ORDER BY 1") == [
        ("d1", "online", "version-3"),  # latest health row by HLC (seq 3)
    ]
    assert fleet.count("SELECT count(*) FROM device_health")[0][0] == 1
    assert fleet.count("SELECT count(*) FROM quarantine_summary")[0][0] == 1


def test_edit_device_state_job_merges_and_publishes_the_edit(fleet: Fleet) -> None:
    defs = definitions(fleet)
    config = {
        "ops": {
            "apply_state_edits": {
                "config": {
                    "tenant_id": "t1",
                    "device_id": "d1",
                    "namespace": "config",
                    "key": "main",
                    "fields": {"threshold": "42", "color": '"blue"'},
                }
            }
        }
    }
    with dg.instance_for_test() as instance:
        res = defs.resolve_job_def("edit_device_state").execute_in_process(
            run_config=config, instance=instance
        )
    assert res.success
    state = dict(
        fleet.count("SELECT field, value FROM device_state WHERE node_id = 'central' AND origin = 'central'")
    )
    assert state == {"threshold": "42", "color": '"blue"'}
    signer = PlatformSigner.load(fleet.root / "platform.pem")
    doc = decode(
        fleet.store.get(desired_key("t1", "d1")),
        platform_keys=signer.public_key_bytes(),
        tenant_id="t1",
        device_id="d1",
    )
    assert {(e.field, e.value) for e in doc.state_edits} == {("threshold", "42"), ("color", '"blue"')}
