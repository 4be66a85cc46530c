"""No secret reaches run config, event logs, metadata, stdout/stderr, Python logs or the instance's files.

A small simulated fleet uploads to S3 (moto on loopback) with data keys from Vault transit
(OpenBao, one device AppRole per tenant); then, as in the demo, the arrival sensor plans
ingest runs and the ingest job runs in process on a real Dagster instance, with the
central Vault AppRole and the S3 credentials given only through ``dg.EnvVar``, set to
recognisable canary values. Everything captured is then searched for those values (and
for anything shaped like a Vault token).
"""

import logging
import re
import secrets
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from assets.fleet.lakehouse import lakehouse_tables
from assets.sync.ingest import ingested_batches
from edge_sync.identity import LocalDeviceRegistry
from edge_sync.keys import DataKey
from edge_sync.objectstore_url import from_url
from edge_sync.vault import VaultSession
from edge_sync.vault_keys import VaultTransitKeyService
from edgeplat.simulator import SimulationConfig, simulate
from pipelines.jobs import ingest_batches
from pipelines.sensors.batch_arrival import batch_arrival_sensor
from resources.keys import DeviceRegistryResource
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from resources.state_rules import StateRulesResource
from resources.vault import ADDR_ENV, ROLE_ID_ENV, SECRET_ID_ENV, VaultKeyServiceResource, vault_from_env

pytestmark = [pytest.mark.services, pytest.mark.xdist_group("openbao"), pytest.mark.slow]

VAULT_TOKEN = re.compile(rb"\b(?:hvs|hvb|s|b)\.[A-Za-z0-9]{24,}\b")


class DeviceRoles:
    """The simulated devices' data keys: each tenant's own device AppRole (``datakey/plaintext`` only)."""

    def __init__(self, vault_admin, addr: str) -> None:
        self.admin, self.addr = vault_admin, addr
        self.by_tenant: dict[str, VaultTransitKeyService] = {}
        self.secret_ids: list[str] = []

    def generate_data_key(self, tenant_id: str) -> DataKey:
        if tenant_id not in self.by_tenant:
            role_id, secret_id = self.admin.enrol_device(tenant_id, "sim-devices", token_ttl="60s")
            self.secret_ids += [role_id, secret_id]
            self.by_tenant[tenant_id] = VaultTransitKeyService(VaultSession(self.addr, role_id, secret_id))
        return self.by_tenant[tenant_id].generate_data_key(tenant_id)

    def unwrap(self, tenant_id, key_id, wrapped):  # pragma: no cover - devices never unwrap
        raise AssertionError("devices never unwrap")


def _files_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def test_full_ingest_run_leaks_no_secret(
    openbao, vault_admin, s3_bucket, tmp_path, monkeypatch, capfd, caplog, unique_id
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint, bucket = s3_bucket
    role_id, secret_id = vault_admin.enrol_central(unique_id("hygiene"))
    aws_key_id = "AKIACANARY" + secrets.token_hex(5).upper()
    aws_secret = "aws-secret-CANARY-" + secrets.token_hex(12)
    monkeypatch.setenv(ADDR_ENV, openbao[0])
    monkeypatch.setenv(ROLE_ID_ENV, role_id)
    monkeypatch.setenv(SECRET_ID_ENV, secret_id)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws_secret)

    # the devices: a simulated fleet uploading to S3 with transit data keys
    devices = DeviceRoles(vault_admin, openbao[0])
    registry_dir = tmp_path / "registry"
    store = from_url(
        f"s3://{bucket}/fleet", endpoint_url=endpoint, access_key_id=aws_key_id, secret_access_key=aws_secret
    )
    simulate(
        SimulationConfig(devices=4, tenants=2, hours=0.25, offline_fraction=0.0, seed=7),
        store=store,
        keyring=devices,
        registry=LocalDeviceRegistry(registry_dir),
        home=tmp_path / "sim",
    )
    assert len(devices.by_tenant) == 2
    # one batch is held back for the failing run at the end (settled objects never reach the key service)
    held_key = next(o.key for o in store.list("").objects if o.key.endswith(".batch"))
    held = store.get(held_key)
    store.delete(held_key)

    # the central side: every secret through dg.EnvVar
    resources = {
        "lakehouse": LakehouseResource(
            catalog=f"sqlite:{tmp_path}/catalog.sqlite", data_path=f"{tmp_path}/lake/"
        ),
        "object_store": ObjectStoreResource(
            url=f"s3://{bucket}/fleet",
            endpoint_url=endpoint,
            aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
        ),
        "key_service": VaultKeyServiceResource(vault=vault_from_env()),
        "device_registry": DeviceRegistryResource(registry_dir=str(registry_dir)),
        "state_rules": StateRulesResource(),
    }
    schema_job = dg.define_asset_job("schema", selection=[lakehouse_tables])
    defs = dg.Definitions(
        assets=[lakehouse_tables, ingested_batches], jobs=[schema_job, ingest_batches], resources=resources
    )
    captured: list[tuple[str, bytes]] = []
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("schema").execute_in_process(instance=instance).success
        ctx = dg.build_sensor_context(
            instance=instance, resources={k: resources[k] for k in ("lakehouse", "object_store")}
        )
        tick = batch_arrival_sensor(ctx)
        assert tick.run_requests, tick.skip_reason
        captured.append(("sensor result", repr(tick).encode()))  # run keys, run config, tags, cursor
        accepted = 0
        run_ids = []
        for request in tick.run_requests:
            res = defs.resolve_job_def("ingest_batches").execute_in_process(
                run_config=request.run_config, instance=instance, tags=request.tags
            )
            assert res.success
            md = res.asset_materializations_for_node("ingested_batches")[0].metadata
            assert md["quarantined"].value == 0
            accepted += md["accepted"].value
            run_ids.append(res.run_id)
        assert accepted > 10, "the batches were really decrypted through Vault transit"

        # a run whose Vault login is refused fails, and says so without echoing what it was given
        wrong_secret_id = "wrong-secret-CANARY-" + secrets.token_hex(8)
        monkeypatch.setenv(SECRET_ID_ENV, wrong_secret_id)
        store.put(held_key, held)
        failing = defs.resolve_job_def("ingest_batches").execute_in_process(
            run_config={
                "ops": {"ingested_batches": {"config": {"object_keys": [held_key], "tenant_id": ""}}}
            },
            instance=instance,
            raise_on_error=False,
        )
        assert not failing.success
        failure_text = serialize_value(instance.all_logs(failing.run_id)).encode()
        assert b"refused" in failure_text  # the failure is explained, and the batch waits for a good login:
        with resources["lakehouse"].get().session(read_only=True) as con:
            assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
        run_ids.append(failing.run_id)

        for run_id in run_ids:
            run = instance.get_run_by_id(run_id)
            captured.append((f"run {run_id} (config, tags)", serialize_value(run).encode()))
            captured += [
                (f"event log of run {run_id}", serialize_value(e).encode()) for e in instance.all_logs(run_id)
            ]
            # snapshots are stored compressed in the instance's database: read them decoded (what the UI shows)
            captured.append(
                (
                    f"job snapshot of run {run_id}",
                    serialize_value(instance.get_job_snapshot(run.job_snapshot_id)).encode(),
                )
            )
            captured.append(
                (
                    f"execution plan of run {run_id}",
                    serialize_value(
                        instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
                    ).encode(),
                )
            )
        captured += [(f"instance file {p}", data) for p, data in _files_bytes(Path(instance.root_directory))]
    out, err = capfd.readouterr()
    captured += [("stdout", out.encode()), ("stderr", err.encode())]
    captured += [
        (f"log record {r.levelname} {r.name}", (r.getMessage() + (r.exc_text or "")).encode())
        for r in caplog.records
    ]
    captured += [(f"file {p}", data) for p, data in _files_bytes(tmp_path)]

    secrets_used = {
        "central role id": role_id,
        "central secret id": secret_id,
        "AWS access key id": aws_key_id,
        "AWS secret key": aws_secret,
        "OpenBao root token": openbao[1],
        "wrong secret id": wrong_secret_id,
        **{f"device credential {i}": v for i, v in enumerate(devices.secret_ids)},
    }
    blob = b"\n".join(data for _, data in captured)
    assert b"RUN_SUCCESS" in blob and b"ingested_batches" in blob  # the scan really saw the runs
    leaked = {
        (name, where)
        for name, value in secrets_used.items()
        for where, data in captured
        if value.encode() in data
    }
    # Known and documented (docs/security.md): botocore's own DEBUG records print the signed request's
    # Authorization header, which names the access key id (an identifier, not the secret key). Production
    # logs at INFO and must not list botocore among Dagster's managed_python_loggers at DEBUG.
    tolerated = {("AWS access key id", "log record DEBUG botocore.endpoint")}
    assert sorted(leaked - tolerated) == [], (
        f"secrets found in captured output: {sorted(leaked - tolerated)[:10]}"
    )
    assert VAULT_TOKEN.findall(blob) == [], "a Vault token reached the captured output"
    assert any(b"ingested_batches" in data for where, data in captured if where.startswith("job snapshot"))
    # the UI's view of the code location (resources and their configured values) names the variables only
    ui = serialize_value(RepositorySnap.from_def(defs.get_repository_def())).encode()
    assert SECRET_ID_ENV.encode() in ui and ROLE_ID_ENV.encode() in ui
    assert [name for name, value in secrets_used.items() if value.encode() in ui] == []
