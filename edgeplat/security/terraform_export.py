"""The tenants' object-store identities as Terraform reads them: one JSON document per environment.

``edgeplat security provision-storage`` creates each tenant's IAM user and inline policy at
run time (:mod:`edgeplat.security.tenant_storage`); Terraform may create the same users and
policies up front (infrastructure/modules/tenant_storage). Both must grant exactly the same,
so Terraform does not restate the policy: it reads this document
(``jsondecode(file("tenant-storage.json"))``), written by ``scripts/export-tenant-storage``
from the same functions the provisioning uses, and a test regenerates it to catch drift.
Provisioning then finds the user Terraform made (same name, path, tag and policy) and only
issues the access key into Vault.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgeplat.security.storage_policy import tenant_prefix
from edgeplat.security.tenant_storage import (
    POLICY_NAME,
    TENANT_TAG,
    USER_PATH,
    StorageTarget,
    iam_user_name,
)

DOCUMENT_VERSION = 1


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
    }


def regenerate(document: dict[str, Any]) -> dict[str, Any]:
    """The document the generator writes today for the inputs ``document`` was written from."""
    target = StorageTarget.from_url(
        document["store_url"], partition=document["partition"], allow_list=document["allow_list"]
    )
    return tenant_storage_document(target, document["tenants"])
