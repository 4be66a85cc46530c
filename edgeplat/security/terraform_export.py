"""The tenants' object-store identities as Terraform reads them: one JSON document per environment.

``edgeplat security provision-storage`` creates each tenant's IAM user and inline policy at
run time (:mod:`edgeplat.security.tenant_storage`); Terraform may create the same users and
policies up front (infrastructure/modules/tenant_storage). Both must grant exactly the same,
so Terraform does not restate the policy: it reads this document
(``jsondecode(file("tenant-storage.json"))``), written by ``scripts/export-tenant-storage``
from the same functions the provisioning uses, and a test regenerates it to catch drift.
Provisioning then finds the user Terraform made (same name, path, tag and policy) and only
issues the access key into Vault.

``device_roles`` holds, per tenant, what per-device write scopes need on AWS (the device role
and its trust, the role alias, the IoT policy for the device certificates); Terraform creates
them from it as they are (infrastructure/modules/tenant_storage/device_roles.tf).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgeplat.security.device_scopes import (
    device_role_name,
    device_role_policy,
    iot_policy,
    iot_policy_name,
    role_alias_name,
    trust_policy,
)
from edgeplat.security.storage_policy import tenant_prefix
from edgeplat.security.tenant_storage import (
    POLICY_NAME,
    TENANT_TAG,
    USER_PATH,
    StorageTarget,
    iam_user_name,
)

DOCUMENT_VERSION = 1
DEVICE_ROLE_POLICY_NAME = "edgeplat-device-scope"
ROLE_ALIAS_ARN = "{role_alias_arn}"  # only AWS knows it before apply: Terraform fills it in
DEVICE_CREDENTIAL_SECONDS = 3600


def tenant_storage_document(target: StorageTarget, tenants: Iterable[str]) -> dict[str, Any]:
    """Bucket, naming rules and, per tenant, its IAM user, key prefix and policy (JSON-able)."""
    return {
        "version": DOCUMENT_VERSION,
        "store_url": target.url,
        "bucket": target.bucket,
        "base_prefix": target.base_prefix,
        "partition": target.partition,
        "allow_list": target.allow_list,
        "user_path": USER_PATH,
        "policy_name": POLICY_NAME,
        "tenant_tag": TENANT_TAG,
        "tenants": {
            tenant: {
                "iam_user": iam_user_name(tenant),
                "prefix": tenant_prefix(tenant, target.base_prefix),
                "policy": target.policy(tenant),
            }
            for tenant in sorted(set(tenants))
        },
        "device_roles": device_roles_document(target, tenants),
    }


def device_roles_document(target: StorageTarget, tenants: Iterable[str]) -> dict[str, Any]:
    """Per tenant, the device role, role alias and IoT policy of per-device write scopes
    (:mod:`edgeplat.security.device_scopes`); the IoT policy names its alias as
    ``{role_alias_arn}``, which Terraform replaces with the alias it created."""
    return {
        "policy_name": DEVICE_ROLE_POLICY_NAME,
        "credential_duration": DEVICE_CREDENTIAL_SECONDS,
        "role_alias_arn_placeholder": ROLE_ALIAS_ARN,
        "tenants": {
            tenant: {
                "role_name": device_role_name(tenant),
                "role_alias": role_alias_name(tenant),
                "iot_policy_name": iot_policy_name(tenant),
                "trust_policy": trust_policy(),
                "role_policy": device_role_policy(
                    target.bucket, tenant, base_prefix=target.base_prefix, partition=target.partition
                ),
                "iot_policy": iot_policy(ROLE_ALIAS_ARN),
            }
            for tenant in sorted(set(tenants))
        },
    }


def regenerate(document: dict[str, Any]) -> dict[str, Any]:
    """The document the generator writes today for the inputs ``document`` was written from."""
    target = StorageTarget.from_url(
        document["store_url"], partition=document["partition"], allow_list=document["allow_list"]
    )
    return tenant_storage_document(target, document["tenants"])
