"""One-step device revocation against a real OpenBao, a LocalDeviceRegistry and the real ingest:
the device's login and live token die, a batch it signed is quarantined as ``unknown_device``,
the rest of the run is ingested, and running it again changes nothing."""

from __future__ import annotations

import json

import pytest

from cli import main as cli_main
from edge_sync.vault import DeviceRevoked, VaultSession
from edge_sync.vault_keys import VaultTransitKeyService
from edgeplat.security.revocation import RevocationIncomplete, revoke_device
from edgeplat.security.tenant_storage import SECRET_NAME, StorageTarget, TenantStorageAdmin
from edgeplat.sync.ingest import ingest_objects
from tests.support.fleet import Fleet

pytestmark = [pytest.mark.services, pytest.mark.xdist_group("openbao")]


def test_revoking_once_cuts_vault_and_quarantines_the_devices_later_batches(
    openbao, vault_admin, unique_id, tmp_path
) -> None:
    fleet = Fleet(tmp_path)
    tenant, device, bystander = unique_id("t"), unique_id("d"), unique_id("d")
    creds = vault_admin.enrol_device(tenant, device)
    session = VaultSession(openbao[0], *creds)
    keys = VaultTransitKeyService(session)
    keys.generate_data_key(tenant)  # the device works before
    before = fleet.upload(fleet.batch(tenant, device, "telemetry", range(1, 6)))
    assert ingest_objects(fleet.env(), [before]).accepted == 1
    # written and signed while it was trusted, uploaded after the revocation (or by a thief)
    late = fleet.batch(tenant, device, "telemetry", range(6, 11))

    report = revoke_device(tenant, device, registry=fleet.registry, vault=vault_admin)
    assert report.registry_keys_revoked == [fleet.device(tenant, device).key_id]
    assert report.vault == "revoked" and report.vault_tokens_revoked == 1 and report.changed
    assert not vault_admin.device_enrolled(tenant, device)

    with pytest.raises(DeviceRevoked):
        keys.generate_data_key(tenant)  # live token revoked, and the re-login is refused
    with pytest.raises(DeviceRevoked):
        VaultSession(openbao[0], *creds).login()

    good = fleet.upload(fleet.batch(tenant, bystander, "telemetry", range(1, 4)))
    result = ingest_objects(fleet.env(), [fleet.upload(late), good])
    assert result.accepted == 1
    quarantined = dict(fleet.count("SELECT object_key, reason FROM quarantine"))
    assert quarantined == {late.key: "unknown_device"}
    counts = dict(fleet.count("SELECT device_id, count(*) FROM telemetry GROUP BY ALL"))
    assert counts == {device: 5, bystander: 3}  # rows from before the revocation stay

    again = revoke_device(tenant, device, registry=fleet.registry, vault=vault_admin)
    assert (again.registry_keys_revoked, again.vault, again.changed) == ([], "not enrolled", False)


def test_revocation_without_vault_changes_only_the_registry(tmp_path) -> None:
    fleet = Fleet(tmp_path)
    key_id = fleet.device("t1", "d1").key_id
    report = revoke_device("t1", "d1", registry=fleet.registry, vault=None)
    assert (report.registry_keys_revoked, report.vault) == ([key_id], "skipped")
    assert fleet.registry.public_keys("t1", "d1") == []
    with pytest.raises(ValueError, match="invalid device id"):
        revoke_device("t1", "../d1", registry=fleet.registry, vault=None)


def test_a_failed_vault_step_says_what_was_done_and_rerunning_finishes(
    vault_admin, unique_id, tmp_path
) -> None:
    class Down:
        def device_enrolled(self, tenant_id, device_id):
            raise ConnectionError("vault unreachable")

    fleet = Fleet(tmp_path)
    tenant, device = unique_id("t"), unique_id("d")
    vault_admin.enrol_device(tenant, device)
    key_id = fleet.device(tenant, device).key_id
    with pytest.raises(
        RevocationIncomplete, match=f"stopped at vault.*registry keys revoked: {key_id}"
    ) as info:
        revoke_device(tenant, device, registry=fleet.registry, vault=Down())
    assert info.value.report.registry_keys_revoked == [key_id]
    report = revoke_device(tenant, device, registry=fleet.registry, vault=vault_admin)
    assert (report.registry_keys_revoked, report.vault) == ([], "revoked")


def test_revocation_can_rotate_the_tenants_storage_key(moto_iam, vault_admin, unique_id, tmp_path) -> None:
    bucket = f"fleet-{unique_id('b')}"
    moto_iam.client("s3").create_bucket(Bucket=bucket)
    storage = TenantStorageAdmin(
        moto_iam.client("iam"), vault_admin, StorageTarget(bucket, endpoint_url=moto_iam.endpoint)
    )
    fleet = Fleet(tmp_path)
    tenant, device = unique_id("t"), unique_id("d")
    fleet.device(tenant, device)
    held = storage.provision(tenant).access_key_id  # the copy on the stolen device
    report = revoke_device(tenant, device, registry=fleet.registry, vault=vault_admin, storage=storage)
    assert report.storage_key_rotated not in (None, held)
    assert (
        vault_admin.read_shared_secret(tenant, SECRET_NAME)[0]["access_key_id"] == report.storage_key_rotated
    )
    assert held not in [
        k["AccessKeyId"]
        for k in moto_iam.client("iam").list_access_keys(UserName=storage.check(tenant).iam_user)[
            "AccessKeyMetadata"
        ]
    ]


def test_cli_device_revoke(openbao, vault_admin, unique_id, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("VAULT_ADDR", openbao[0])
    monkeypatch.setenv("VAULT_TOKEN", openbao[1])
    fleet = Fleet(tmp_path)
    tenant, device = unique_id("t"), unique_id("d")
    vault_admin.enrol_device(tenant, device)
    key_id = fleet.device(tenant, device).key_id
    args = [
        "device",
        "revoke",
        "--tenant",
        tenant,
        "--device",
        device,
        "--registry-dir",
        str(tmp_path / "devices"),
    ]
    assert cli_main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["registry_keys_revoked"], out["vault"], out["changed"]) == ([key_id], "revoked", True)
    assert cli_main(args) == 0
    assert "nothing left to revoke" in capsys.readouterr().out
    assert cli_main([*args[:-4], "--device", "../x", *args[-2:]]) == 2
    assert "invalid device id" in capsys.readouterr().err
