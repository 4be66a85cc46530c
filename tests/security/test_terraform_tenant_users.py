"""A tenant's IAM user made the way Terraform makes it (infrastructure/modules/tenant_storage,
from the generated tenant document) is one provisioning accepts: it issues the key into Vault
without changing the user or its policy, and the check passes. Real servers: the
policy-enforcing moto server and OpenBao of tests/security/conftest.py."""

from __future__ import annotations

import json
import secrets

import pytest

from edgeplat.security.tenant_storage import SECRET_NAME, StorageTarget, TenantStorageAdmin
from edgeplat.security.terraform_export import tenant_storage_document

pytestmark = [pytest.mark.services, pytest.mark.xdist_group("openbao")]


def _apply_like_terraform(iam, document: dict, tenant: str) -> None:
    """What aws_iam_user.tenant and aws_iam_user_policy.tenant create from the document."""
    entry = document["tenants"][tenant]
    iam.create_user(
        UserName=entry["iam_user"],
        Path=document["user_path"],
        Tags=[{"Key": document["tenant_tag"], "Value": tenant}],
    )
    iam.put_user_policy(
        UserName=entry["iam_user"],
        PolicyName=document["policy_name"],
        PolicyDocument=json.dumps(entry["policy"]),
    )


def test_provisioning_adopts_the_user_terraform_created(moto_iam, vault_admin, unique_id) -> None:
    bucket = f"fleet-{secrets.token_hex(6)}"
    moto_iam.client("s3").create_bucket(Bucket=bucket)
    target = StorageTarget(bucket, "batches", endpoint_url=moto_iam.endpoint)
    tenant = unique_id("t")
    document = tenant_storage_document(target, [tenant])
    iam = moto_iam.client("iam")
    _apply_like_terraform(iam, document, tenant)
    user = document["tenants"][tenant]["iam_user"]
    before = iam.get_user_policy(UserName=user, PolicyName=document["policy_name"])["PolicyDocument"]

    grant = TenantStorageAdmin(iam, vault_admin, target).provision(tenant)

    assert grant.issued and grant.iam_user == user
    after = iam.get_user_policy(UserName=user, PolicyName=document["policy_name"])["PolicyDocument"]
    assert after == before  # the same document: nothing for Terraform to change back
    assert iam.list_user_policies(UserName=user)["PolicyNames"] == [document["policy_name"]]
    assert vault_admin.read_shared_secret(tenant, SECRET_NAME)[0]["access_key_id"] == grant.access_key_id
    assert TenantStorageAdmin(iam, vault_admin, target).check(tenant).ok
    # the credential reaches the tenant's prefix, which is where the document says it is
    data, _ = vault_admin.read_shared_secret(tenant, SECRET_NAME)
    s3 = moto_iam.client("s3", data["access_key_id"], data["secret_access_key"])
    s3.put_object(Bucket=bucket, Key=f"{document['tenants'][tenant]['prefix']}device=d1/x.batch", Body=b"x")
