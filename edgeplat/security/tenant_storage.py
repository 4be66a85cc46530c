"""Per-tenant object-store credentials: an IAM user per tenant, scoped to its prefix, handed out via Vault.

Why IAM users with long-lived access keys and not short-lived credentials: OpenBao's core
build has no ``aws`` secrets engine (OpenBao moved the cloud secrets plugins out of the
core; ``bao secrets enable aws`` answers "plugin not found in the catalog"), so Vault cannot
mint per-device STS credentials here. What this module does instead:

1. ``provision``: an IAM user ``edgeplat-t-<tenant>`` (path ``/edgeplat/tenants/``, tagged
   with the tenant id) with one inline policy from
   :func:`edgeplat.security.storage_policy.tenant_storage_policy`; then every policy that
   reaches the user (inline, attached, through groups) is checked, and only if all are
   scoped to the tenant's prefix is an access key created and written to the tenant's shared
   KV v2 secret ``tenants/<T>/shared/objectstore``, which the tenant's devices render
   (``edge_sync.storage_credentials``). Idempotent: a valid key already in Vault is kept.
2. ``rotate``: a new key is written to Vault first, then the old keys are deleted; devices
   pick the new version up on their next render (``VaultSession.render_secrets`` rewrites a
   file when its KV version changes). Rotate after revoking a device that held the key.
3. ``check``: the same verification for what is deployed now (``edgeplat security
   check-storage``): the key in Vault must be one of the tenant user's keys, the user must
   carry the tenant's tag, and every policy reaching it must pass the checker.

The IAM client needs ``iam:*`` on ``arn:aws:iam::<account>:user/edgeplat/tenants/*``; the
Vault client needs write on the KV mount (``VaultAdmin``). Secret keys are never logged or
returned in reports; access key ids (identifiers) are.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from edge_sync.vault_admin import VaultAdmin, lower_case_name
from edgeplat.security.storage_policy import (
    StoragePolicyError,
    check_policies,
    policy_problems,
    tenant_prefix,
    tenant_storage_policy,
)

SECRET_NAME = "objectstore"
POLICY_NAME = "edgeplat-tenant-storage"
USER_PATH = "/edgeplat/tenants/"
TENANT_TAG = "edgeplat-tenant"
MAX_IAM_NAME = 64


def iam_user_name(tenant_id: str) -> str:
    """``edgeplat-t-<tenant>``: IAM compares user names without case, hence the injective
    lower-case spelling; ids too long for IAM's 64 characters end in a hash of the full id."""
    name = f"edgeplat-t-{lower_case_name('tenant', tenant_id)}"
    if len(name) <= MAX_IAM_NAME:
        return name
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:16]
    return f"{name[: MAX_IAM_NAME - 17]}-{digest}"


@dataclass(frozen=True)
class StorageTarget:
    """Where tenants' objects live: ``s3://bucket/base`` at an S3 API endpoint.

    ``endpoint_url`` is what devices connect to (None: AWS); ``allow_list`` grants devices a
    prefix-bound ``s3:ListBucket`` (off: the uploader never lists).
    """

    bucket: str
    base_prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    partition: str = "aws"
    allow_list: bool = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> StorageTarget:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(
                f"store URL {url!r} must be s3://bucket/optional/prefix (tenant credentials are S3 ones)"
            )
        return cls(parsed.netloc, parsed.path.strip("/"), **options)

    @property
    def url(self) -> str:
        base = self.base_prefix.strip("/")
        return f"s3://{self.bucket}/{base}" if base else f"s3://{self.bucket}"

    def policy(self, tenant_id: str) -> dict[str, Any]:
        return tenant_storage_policy(
            self.bucket,
            tenant_id,
            base_prefix=self.base_prefix,
            allow_list=self.allow_list,
            partition=self.partition,
        )

    def secret_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"url": self.url, "region": self.region}
        if self.endpoint_url:
            fields["endpoint_url"] = self.endpoint_url
        return fields


@dataclass
class StorageGrant:
    """What ``provision``/``rotate`` did for one tenant (no secret in it)."""

    tenant_id: str
    iam_user: str
    access_key_id: str
    kv_version: int
    issued: bool  # a new access key was created and written to Vault
    deleted_keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class StorageCheck:
    """The verdict on a tenant's deployed credential: ``ok`` when ``problems`` is empty."""

    tenant_id: str
    iam_user: str
    access_key_id: str | None
    policies: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


class TenantStorageAdmin:
    """Provisions, rotates and checks tenants' object-store credentials (boto3 IAM + Vault KV)."""

    def __init__(self, iam: Any, vault: VaultAdmin, target: StorageTarget) -> None:
        self.iam = iam
        self.vault = vault
        self.target = target
        tenant_prefix("probe", target.base_prefix)  # validates the base prefix once, early

    def __repr__(self) -> str:
        return f"TenantStorageAdmin(target={self.target.url!r})"

    # -- provisioning --------------------------------------------------------------------

    def provision(self, tenant_id: str) -> StorageGrant:
        """Create or repair the tenant's user and policy; issue a key unless Vault holds a valid one.

        Raises :class:`StoragePolicyError` (and hands nothing out) when any policy reaching the
        user grants more than the tenant's prefix.
        """
        user = self._ensure_user(tenant_id)
        self._check_user(tenant_id, user)
        current = self.vault.read_shared_secret(tenant_id, SECRET_NAME)
        keys = self._active_keys(user)
        if current is not None:
            data, version = current
            if data.get("access_key_id") in keys and all(
                data.get(k) == v for k, v in self.target.secret_fields().items()
            ):
                return StorageGrant(tenant_id, user, data["access_key_id"], version, issued=False)
        return self._issue(tenant_id, user)

    def rotate(self, tenant_id: str) -> StorageGrant:
        """A new access key in Vault first, then the old keys deleted (the old key stops working)."""
        user = self._ensure_user(tenant_id)
        self._check_user(tenant_id, user)
        return self._issue(tenant_id, user)

    def _ensure_user(self, tenant_id: str) -> str:
        user = iam_user_name(tenant_id)
        try:
            self.iam.get_user(UserName=user)
        except self.iam.exceptions.NoSuchEntityException:
            self.iam.create_user(
                UserName=user, Path=USER_PATH, Tags=[{"Key": TENANT_TAG, "Value": tenant_id}]
            )
        else:
            owner = self._owner_tag(user)
            if owner != tenant_id:
                raise StoragePolicyError(
                    tenant_id,
                    [
                        f"IAM user {user!r} exists but is tagged {TENANT_TAG}={owner!r}, not this tenant; "
                        "it was not created by this provisioning: rename or delete it"
                    ],
                )
        self.iam.put_user_policy(
            UserName=user, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(self.target.policy(tenant_id))
        )
        return user

    def _issue(self, tenant_id: str, user: str) -> StorageGrant:
        current = self.vault.read_shared_secret(tenant_id, SECRET_NAME)
        in_vault = current[0].get("access_key_id") if current else None
        # IAM allows two keys per user: a leftover of an interrupted rotation that Vault does
        # not hold is deleted first, so the new key always fits.
        deleted = [k for k in self._all_keys(user) if k != in_vault]
        for key_id in deleted:
            self.iam.delete_access_key(UserName=user, AccessKeyId=key_id)
        key = self.iam.create_access_key(UserName=user)["AccessKey"]
        version = self.vault.write_shared_secret(
            tenant_id,
            SECRET_NAME,
            {
                **self.target.secret_fields(),
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
                "iam_user": user,
            },
        )
        if in_vault is not None and in_vault in self._all_keys(user):
            self.iam.delete_access_key(UserName=user, AccessKeyId=in_vault)
            deleted.append(in_vault)
        return StorageGrant(tenant_id, user, key["AccessKeyId"], version, issued=True, deleted_keys=deleted)

    # -- checking ------------------------------------------------------------------------

    def check(self, tenant_id: str) -> StorageCheck:
        """Verify what the tenant's devices get now; never raises for a bad deployment, reports it."""
        user = iam_user_name(tenant_id)
        secret = self.vault.read_shared_secret(tenant_id, SECRET_NAME)
        key_id = secret[0].get("access_key_id") if secret else None
        problems: list[str] = []
        try:
            self.iam.get_user(UserName=user)
        except self.iam.exceptions.NoSuchEntityException:
            problems.append(
                f"no IAM user {user!r}: run `edgeplat security provision-storage --tenant {tenant_id}`"
            )
            if key_id is not None:
                problems.append(
                    f"Vault holds access key {key_id} of an identity that is not the tenant's user"
                )
            return StorageCheck(tenant_id, user, key_id, [], problems)
        owner = self._owner_tag(user)
        if owner != tenant_id:
            problems.append(f"IAM user {user!r} is tagged {TENANT_TAG}={owner!r}, not {tenant_id!r}")
        policies = self._policies(user)
        for name, doc in policies.items():
            problems += policy_problems(
                doc,
                self.target.bucket,
                tenant_id,
                base_prefix=self.target.base_prefix,
                partition=self.target.partition,
                name=name,
            )
        keys = self._active_keys(user)
        if secret is None:
            problems.append(
                f"Vault has no secret {SECRET_NAME!r} for tenant {tenant_id!r}: devices get no credential; "
                "run provision-storage"
            )
        else:
            data = secret[0]
            if key_id not in keys:
                problems.append(
                    f"the access key in Vault ({key_id}) is not an active key of {user!r} "
                    f"(its owner: {self._key_owner(key_id)}): rotate the tenant's credential"
                )
            for k, v in self.target.secret_fields().items():
                if data.get(k) != v:
                    problems.append(f"the Vault secret's {k} is {data.get(k)!r}, expected {v!r}")
        for extra in sorted(set(keys) - {key_id}):
            problems.append(
                f"access key {extra} of {user!r} is active but not the one in Vault: rotate to delete it"
            )
        return StorageCheck(tenant_id, user, key_id, sorted(policies), problems)

    def _owner_tag(self, user: str) -> str | None:
        tags = _pages(self.iam, "list_user_tags", "Tags", UserName=user)
        return next((t["Value"] for t in tags if t.get("Key") == TENANT_TAG), None)

    def _check_user(self, tenant_id: str, user: str) -> None:
        check_policies(
            self._policies(user),
            self.target.bucket,
            tenant_id,
            base_prefix=self.target.base_prefix,
            partition=self.target.partition,
        )

    def _policies(self, user: str) -> dict[str, Any]:
        """Every policy document that grants the user rights, by a readable name."""
        iam = self.iam
        docs: dict[str, Any] = {}
        for name in _pages(iam, "list_user_policies", "PolicyNames", UserName=user):
            docs[f"user inline {name}"] = iam.get_user_policy(UserName=user, PolicyName=name)[
                "PolicyDocument"
            ]
        for att in _pages(iam, "list_attached_user_policies", "AttachedPolicies", UserName=user):
            docs[f"user managed {att['PolicyArn']}"] = self._managed(att["PolicyArn"])
        for group in _pages(iam, "list_groups_for_user", "Groups", UserName=user):
            g = group["GroupName"]
            for name in _pages(iam, "list_group_policies", "PolicyNames", GroupName=g):
                docs[f"group {g} inline {name}"] = iam.get_group_policy(GroupName=g, PolicyName=name)[
                    "PolicyDocument"
                ]
            for att in _pages(iam, "list_attached_group_policies", "AttachedPolicies", GroupName=g):
                docs[f"group {g} managed {att['PolicyArn']}"] = self._managed(att["PolicyArn"])
        return docs

    def _managed(self, arn: str) -> Any:
        version = self.iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        return self.iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]

    def _all_keys(self, user: str) -> list[str]:
        return [
            k["AccessKeyId"] for k in _pages(self.iam, "list_access_keys", "AccessKeyMetadata", UserName=user)
        ]

    def _active_keys(self, user: str) -> list[str]:
        return [
            k["AccessKeyId"]
            for k in _pages(self.iam, "list_access_keys", "AccessKeyMetadata", UserName=user)
            if k.get("Status") == "Active"
        ]

    def _key_owner(self, key_id: str | None) -> str:
        if not key_id:
            return "none"
        try:
            return repr(self.iam.get_access_key_last_used(AccessKeyId=key_id).get("UserName"))
        except Exception:  # noqa: BLE001 - only to word the message; the key is refused either way
            return "unknown"


def _pages(client: Any, operation: str, field_name: str, **kwargs: Any) -> list[Any]:
    out: list[Any] = []
    for page in client.get_paginator(operation).paginate(**kwargs):
        out += page.get(field_name, [])
    return out
