"""Tenant-scoped object-store credentials against real servers: a moto server that ENFORCES IAM
policies (``moto_iam``, separate from the permissive shared one) and OpenBao for Vault KV.

What the server enforces here is the policy our code generated; what our checker refuses
(policies that would reach further) is in ``test_storage_policy.py`` and in the provisioning
tests below. Run with ``-s`` to print the access table.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from cli import main as cli_main
from edge_sync.agent import DeviceAgent
from edge_sync.batch import read_batch
from edge_sync.identity import DeviceIdentity, PlatformSigner
from edge_sync.objectstore import ObjectStoreError
from edge_sync.storage_credentials import StorageCredentials, StorageCredentialsError
from edge_sync.vault import VaultSession
from edge_sync.vault_admin import shared_kv_path
from edge_sync.vault_keys import VaultTransitKeyService
from edgeplat.security.storage_policy import StoragePolicyError
from edgeplat.security.tenant_storage import (
    SECRET_NAME,
    StorageTarget,
    TenantStorageAdmin,
    iam_user_name,
)
from tests.support.device import agent_on
from tests.support.moto_server import s3_outcome

pytestmark = [pytest.mark.services, pytest.mark.xdist_group("openbao")]

ACCESS_TABLE: list[tuple[str, str, str]] = []


@pytest.fixture
def bucket(moto_iam) -> str:
    name = f"fleet-{secrets.token_hex(6)}"
    moto_iam.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def storage(moto_iam, vault_admin, bucket) -> TenantStorageAdmin:
    target = StorageTarget(bucket, endpoint_url=moto_iam.endpoint)
    return TenantStorageAdmin(moto_iam.client("iam"), vault_admin, target)


def _s3_of(moto_iam, vault_admin, tenant: str):
    """A raw boto3 client with the credential Vault holds for ``tenant`` (an attacker skips our
    client-side key checks, so the server's answer is what counts)."""
    data, _ = vault_admin.read_shared_secret(tenant, SECRET_NAME)
    return moto_iam.client("s3", data["access_key_id"], data["secret_access_key"])


@pytest.fixture(scope="module", autouse=True)
def _print_access_table():
    yield
    if ACCESS_TABLE:
        width = max(len(r[0]) for r in ACCESS_TABLE)
        print("\n\nTenant A's object-store credential on a policy-enforcing S3 (moto):")
        for what, expected, observed in ACCESS_TABLE:
            print(f"  {what:<{width}}  expected {expected:<14} observed {observed}")


def test_a_tenants_credential_reaches_only_its_own_prefix(
    moto_iam, vault_admin, storage, bucket, unique_id
) -> None:
    a = unique_id("t")
    b, ab = unique_id("t"), a + "b"  # ab: the prefix-confusion neighbour (tenant=A vs tenant=AB)
    for tenant in (a, b, ab):
        storage.provision(tenant)
    admin = moto_iam.client("s3")
    victims = {f"tenant={b}/device=d1/desired.json": b"B", f"tenant={ab}/device=d1/desired.json": b"AB"}
    for key, body in victims.items():
        admin.put_object(Bucket=bucket, Key=key, Body=body)
    s3 = _s3_of(moto_iam, vault_admin, a)
    own = f"tenant={a}/device=d1/stream=telemetry/x.batch"

    def put(key):
        return lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"EVIL", IfNoneMatch="*")

    def get(key):
        return lambda: s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    cases = [
        ("PUT under own prefix", put(own), "allowed"),
        ("GET own object", get(own), "allowed"),
        ("GET own missing desired.json", get(f"tenant={a}/device=d1/desired.json"), "NoSuchKey"),
        ("PUT under tenant B's prefix", put(f"tenant={b}/device=d1/desired.json"), "AccessDenied"),
        ("GET tenant B's object", get(f"tenant={b}/device=d1/desired.json"), "AccessDenied"),
        (
            "PUT under tenant=AB/ (prefix confusion)",
            put(f"tenant={ab}/device=d1/desired.json"),
            "AccessDenied",
        ),
        (
            "GET under tenant=AB/ (prefix confusion)",
            get(f"tenant={ab}/device=d1/desired.json"),
            "AccessDenied",
        ),
        (
            "PUT tenant=A/../tenant=B/...",
            put(f"tenant={a}/../tenant={b}/device=d1/desired.json"),
            "AccessDenied",
        ),
        (
            "GET tenant=A/../tenant=B/...",
            get(f"tenant={a}/../tenant={b}/device=d1/desired.json"),
            "AccessDenied",
        ),
        ("PUT tenant=A/./...", put(f"tenant={a}/./device=d1/x.batch"), "AccessDenied"),
        ("PUT at the bucket root", put("desired.json"), "AccessDenied"),
        ("LIST the bucket", lambda: s3.list_objects_v2(Bucket=bucket), "AccessDenied"),
        (
            "LIST own prefix (not granted)",
            lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"tenant={a}/"),
            "AccessDenied",
        ),
        ("DELETE own object", lambda: s3.delete_object(Bucket=bucket, Key=own), "AccessDenied"),
        (
            "PUT ACL on own object",
            lambda: s3.put_object_acl(Bucket=bucket, Key=own, ACL="public-read"),
            "AccessDenied",
        ),
        (
            "IAM: create an access key for B's user",
            lambda: moto_iam.client("iam", *_keys(vault_admin, a)).create_access_key(
                UserName=iam_user_name(b)
            ),
            "AccessDenied",
        ),
    ]
    observed = [(what, expected, s3_outcome(call)) for what, call, expected in cases]
    ACCESS_TABLE.extend(observed)
    assert [(w, o) for w, _, o in observed] == [(w, e) for w, e, _ in observed]
    # the victims' objects are untouched, and nothing landed outside A's prefix
    for key, body in victims.items():
        assert admin.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    keys = [o["Key"] for o in admin.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == sorted([own, *victims])


def _keys(vault_admin, tenant: str) -> tuple[str, str]:
    data, _ = vault_admin.read_shared_secret(tenant, SECRET_NAME)
    return data["access_key_id"], data["secret_access_key"]


def test_provisioning_is_idempotent_and_rotation_kills_the_old_key(
    moto_iam, vault_admin, storage, bucket, unique_id
) -> None:
    tenant = unique_id("t")
    first = storage.provision(tenant)
    again = storage.provision(tenant)
    assert first.issued and not again.issued
    assert (again.access_key_id, again.kv_version) == (first.access_key_id, first.kv_version)
    old = _keys(vault_admin, tenant)

    rotated = storage.rotate(tenant)
    assert rotated.access_key_id != first.access_key_id and rotated.deleted_keys == [first.access_key_id]
    assert rotated.kv_version == first.kv_version + 1
    key = f"tenant={tenant}/device=d1/stream=telemetry/x.batch"  # (devices may not write desired.json)
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        moto_iam.client("s3", *old).put_object(Bucket=bucket, Key=key, Body=b"x")
    moto_iam.client("s3", *_keys(vault_admin, tenant)).put_object(Bucket=bucket, Key=key, Body=b"x")
    assert storage.check(tenant).ok


def test_provisioning_refuses_to_hand_out_a_credential_with_wider_rights(
    moto_iam, vault_admin, storage, unique_id
) -> None:
    iam = moto_iam.client("iam")
    # an operator put the tenant's user into a broad group before provisioning
    tenant = unique_id("t")
    group = f"g-{secrets.token_hex(4)}"
    iam.create_group(GroupName=group)
    iam.put_group_policy(
        GroupName=group,
        PolicyName="s3-all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        ),
    )
    iam.create_user(UserName=iam_user_name(tenant), Tags=[{"Key": "edgeplat-tenant", "Value": tenant}])
    iam.add_user_to_group(GroupName=group, UserName=iam_user_name(tenant))
    with pytest.raises(StoragePolicyError, match=f"group {group} inline s3-all.*action 's3:\\*'"):
        storage.provision(tenant)
    assert vault_admin.read_shared_secret(tenant, SECRET_NAME) is None  # nothing handed out
    assert iam.list_access_keys(UserName=iam_user_name(tenant))["AccessKeyMetadata"] == []

    # a provisioned tenant whose user later gains a managed policy: rotation refuses, check reports
    other = unique_id("t")
    version = storage.provision(other).kv_version
    arn = iam.create_policy(
        PolicyName=f"read-all-{secrets.token_hex(4)}",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{storage.target.bucket}/*",
                    }
                ],
            }
        ),
    )["Policy"]["Arn"]
    iam.attach_user_policy(UserName=iam_user_name(other), PolicyArn=arn)
    with pytest.raises(StoragePolicyError, match="is not under"):
        storage.rotate(other)
    assert vault_admin.read_shared_secret(other, SECRET_NAME)[1] == version
    result = storage.check(other)
    assert not result.ok and any(f"user managed {arn}" in p for p in result.problems), result.problems


def test_check_refuses_a_key_in_vault_that_is_not_the_tenants(
    moto_iam, vault_admin, storage, unique_id
) -> None:
    tenant = unique_id("t")
    storage.provision(tenant)
    data, _ = vault_admin.read_shared_secret(tenant, SECRET_NAME)
    # someone pastes the operator's (admin) key into the tenant's secret
    vault_admin.write_shared_secret(
        tenant,
        SECRET_NAME,
        {**data, "access_key_id": moto_iam.admin_key_id, "secret_access_key": moto_iam.admin_secret},
    )
    result = storage.check(tenant)
    assert not result.ok
    assert any("not an active key" in p and "'edgeplat-operator'" in p for p in result.problems), (
        result.problems
    )
    assert any("active but not the one in Vault" in p for p in result.problems)
    # provisioning repairs it: a fresh key of the tenant's own user replaces the foreign one
    assert storage.provision(tenant).issued and storage.check(tenant).ok


def test_an_agent_uploads_under_its_prefix_with_the_credential_rendered_from_vault(
    moto_iam, openbao, vault_admin, storage, bucket, unique_id, tmp_path: Path
) -> None:
    tenant, device = unique_id("t"), unique_id("d")
    storage.provision(tenant)
    session = VaultSession(openbao[0], *vault_admin.enrol_device(tenant, device))
    runtime = tmp_path / "run"
    session.render_secrets({"objectstore.json": shared_kv_path(tenant, SECRET_NAME)}, runtime)
    creds = StorageCredentials.load(runtime / "objectstore.json")
    assert creds.secret_access_key not in repr(creds)
    store = creds.store()

    agent, identity = agent_on(tmp_path, tenant, device, VaultTransitKeyService(session), store)
    with agent:
        for i in range(5):
            agent.record("telemetry", {"metric": "temp", "value": float(i)})
        report = agent.sync_once()
    assert report.ok, report.to_dict()
    assert report.streams["telemetry"].rows_sent == 5
    assert report.downlink["status"] == "absent"  # its desired.json was fetched (none yet), not refused

    admin = moto_iam.client("s3")
    keys = [o["Key"] for o in admin.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and all(k.startswith(f"tenant={tenant}/device={device}/stream=") for k in keys), keys
    central = VaultTransitKeyService(VaultSession(openbao[0], *vault_admin.enrol_central("storage-tests")))
    batch = read_batch(
        admin.get_object(Bucket=bucket, Key=keys[0])["Body"].read(),
        key_service=central,
        public_keys=[identity.public_key_bytes()],
        expected_key=keys[0],
    )
    assert batch.table.column("seq").to_pylist() == [1, 2, 3, 4, 5]
    # the same store, aimed at another tenant's prefix, is refused by the server
    with pytest.raises(ObjectStoreError, match="refused"):
        store.put(f"tenant={tenant}x/device={device}/desired.json", b"{}")


def test_head_of_a_missing_key_with_scoped_credentials_is_none(
    moto_iam, vault_admin, storage, unique_id
) -> None:
    tenant = unique_id("t")
    storage.provision(tenant)
    data, _ = vault_admin.read_shared_secret(tenant, SECRET_NAME)
    assert StorageCredentials.from_secret(data).store().head(f"tenant={tenant}/device=d1/nothing") is None


def test_an_incomplete_rendered_credential_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "objectstore.json"
    path.write_text(json.dumps({"url": "s3://bucket", "access_key_id": "AKIA..."}))
    with pytest.raises(StorageCredentialsError, match="secret_access_key: provision"):
        StorageCredentials.load(path)
    with pytest.raises(StorageCredentialsError, match="does not exist"):
        StorageCredentials.load(tmp_path / "missing.json")


def test_cli_provisions_checks_and_rotates(
    moto_iam, openbao, vault_admin, bucket, unique_id, monkeypatch, capsys
) -> None:
    # vault_admin: the platform's engines enabled, as an operator's Vault has them
    monkeypatch.setenv("VAULT_ADDR", openbao[0])
    monkeypatch.setenv("VAULT_TOKEN", openbao[1])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_iam.admin_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_iam.admin_secret)
    tenant = unique_id("t")
    args = [
        "--tenant",
        tenant,
        "--store-url",
        f"s3://{bucket}",
        "--endpoint-url",
        moto_iam.endpoint,
        "--iam-endpoint-url",
        moto_iam.endpoint,
    ]
    assert cli_main(["security", "check-storage", *args]) == 1
    assert "no IAM user" in capsys.readouterr().out
    assert cli_main(["security", "provision-storage", *args]) == 0
    assert "issued new key" in capsys.readouterr().out
    assert cli_main(["security", "check-storage", *args]) == 0
    assert ": OK" in capsys.readouterr().out
    assert cli_main(["security", "rotate-storage", *args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["issued"] is True
    # a credential that can read every tenant's objects: check fails, provisioning refuses
    moto_iam.client("iam").put_user_policy(
        UserName=iam_user_name(tenant),
        PolicyName="extra",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
                ],
            }
        ),
    )
    assert cli_main(["security", "check-storage", *args]) == 1
    assert "user inline extra" in capsys.readouterr().out
    assert cli_main(["security", "rotate-storage", *args]) == 2
    assert "not scoped to its prefix" in capsys.readouterr().err
    monkeypatch.delenv("VAULT_TOKEN")
    assert cli_main(["security", "check-storage", *args]) == 2
    assert "set VAULT_ADDR and VAULT_TOKEN" in capsys.readouterr().err


def test_agent_configured_with_vault_credentials_syncs_and_follows_a_rotation(
    moto_iam, openbao, vault_admin, storage, bucket, unique_id, tmp_path: Path
) -> None:
    """``object_store.credentials = "vault"`` in device.toml: the agent renders the tenant's scoped
    key, syncs with it, and after ``rotate`` (the old key dead) its next sync uses the new one."""
    from edge_sync.config import load_config

    tenant, device = unique_id("t"), unique_id("d")
    storage.provision(tenant)
    vault_admin.ensure_tenant(tenant)
    role_id, secret_id = vault_admin.enrol_device(tenant, device)
    (tmp_path / "role_id").write_text(role_id)
    (tmp_path / "secret_id").write_text(secret_id)
    DeviceIdentity.generate(tenant, device).save(tmp_path / "id.pem")
    (tmp_path / "platform.pub").write_text(PlatformSigner.generate().public_key_bytes().hex())
    (tmp_path / "cache.key").write_text(secrets.token_hex(32))
    for name in ("role_id", "secret_id", "cache.key"):  # credential files must be private
        (tmp_path / name).chmod(0o600)
    (tmp_path / "device.toml").write_text(
        f'tenant_id = "{tenant}"\ndevice_id = "{device}"\ncache_path = "cache.duckdb"\n'
        'identity_path = "id.pem"\nplatform_public_key_path = "platform.pub"\n'
        '[cache_key]\nsource = "file"\npath = "cache.key"\n'
        '[keys]\nsource = "vault"\n'
        f'[vault]\naddr = "{openbao[0]}"\nrole_id_path = "role_id"\nsecret_id_path = "secret_id"\n'
        '[object_store]\ncredentials = "vault"\nruntime_dir = "run"\n'
    )
    agent = DeviceAgent(load_config(tmp_path / "device.toml"))
    with agent:
        agent.record("telemetry", {"metric": "temp", "value": 1.0})
        assert agent.sync_once().ok
        assert (tmp_path / "run" / "objectstore.json").stat().st_mode & 0o777 == 0o600
        storage.rotate(tenant)  # deletes the key the agent holds
        agent.record("telemetry", {"metric": "temp", "value": 2.0})
        report = agent.sync_once()
        assert report.ok, report.to_dict()
        assert report.streams["telemetry"].rows_sent == 1
    keys = [o["Key"] for o in moto_iam.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 2 and all(k.startswith(f"tenant={tenant}/device={device}/") for k in keys), keys


def test_vault_credentials_need_a_runtime_dir() -> None:
    from edge_sync.config import ObjectStoreConfig

    with pytest.raises(ValueError, match="runtime_dir"):
        ObjectStoreConfig(credentials="vault")
    with pytest.raises(ValueError, match="needs url"):
        ObjectStoreConfig()
