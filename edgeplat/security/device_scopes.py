"""Per-device write scopes on AWS: what the IoT credentials provider lets each device's certificate do.

With the tenant's one S3 key (:mod:`edgeplat.security.tenant_storage`) any device of a tenant
can write any key under ``tenant=<T>/``, so it can pre-empt or overwrite a sibling's batch
before ingest (which quarantines it: a denial of service inside the tenant). On AWS a device
instead exchanges its X.509 certificate for temporary credentials at the AWS IoT credentials
provider, as Greengrass' token exchange service does, and those credentials reach only its
own prefix. Per tenant:

- an IAM role ``edgeplat-d-<tenant>`` trusted by ``credentials.iot.amazonaws.com``, whose
  policy names the device's prefix through the policy variable the provider sets:
  ``tenant=<T>/device=${credentials-iot:ThingName}/*`` (PutObject for batches, GetObject
  for HEAD before a large upload and for its own ``desired.json``, AbortMultipartUpload),
  GetObject on ``tenant=<T>/releases/*`` (release manifests and artifacts the slot installer
  fetches), and the Deny statements every device credential carries (no ``desired.json``
  writes, no dot segments). No ListBucket, no delete;
- a role alias ``edgeplat-d-<tenant>`` pointing at that role;
- an AWS IoT policy ``edgeplat-d-<tenant>`` attached to the tenant's device certificates,
  allowing ``iot:AssumeRoleWithCertificate`` on that alias only.

The tenant comes from which alias the certificate may assume (one role per tenant), the
device from the thing name: the device sends its device id in ``x-amzn-iot-thingname`` and
the provider sets ``credentials-iot:ThingName`` from it only for a thing its certificate is
attached to, so a device cannot name a sibling. Hence the rules: **thing name = device id**
(so device ids must be valid thing names, ``[a-zA-Z0-9:_-]``, and unique per AWS account and
region, where thing names live), and a certificate is attached to its own device's thing
only. (Greengrass core devices are named ``<tenant>_<device>`` by
``edgeplat.backends.greengrass.default_thing_name``; a fleet that uses device scopes passes
``thing_name=lambda d: d.device_id`` to the backend.)

:func:`device_scope_problems` proves the scope for a concrete thing name with
:mod:`edgeplat.security.policy_eval`: own prefix writable, a sibling's and another tenant's
refused, no listing, no delete, nothing without a thing name. moto enforces IAM policies
but evaluates neither policy variables nor conditions, so a moto server cannot prove this.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from edge_sync.ids import THING_NAME_PATTERN, validate_id
from edge_sync.vault_admin import lower_case_name
from edgeplat.security.policy_eval import may_allow, surely_allows
from edgeplat.security.storage_policy import (
    DESIRED_NAME,
    OBJECT_ACTIONS,
    POLICY_VERSION,
    StoragePolicyError,
    bucket_arn,
    guard_statements,
    policy_problems,
    tenant_prefix,
)

THING_NAME_VAR = "${credentials-iot:ThingName}"
THING_NAME_KEY = "credentials-iot:ThingName"
TRUSTED_SERVICE = "credentials.iot.amazonaws.com"
ASSUME_ACTION = "iot:AssumeRoleWithCertificate"
RELEASES = "releases/"  # edge_sync.release_manifest.manifest_key: tenant=<T>/releases/<v>/...
CREDENTIAL_SECONDS = (900, 3600)  # CreateRoleAlias credentialDurationSeconds bounds
MAX_ROLE_NAME = 64
PROBE_STREAM_KEY = "stream=telemetry/00000000000000000001-00000000000000000002.batch"


class DeviceScopeError(StoragePolicyError):
    """A device role, its trust or its IoT policy reaches beyond one device's prefix."""

    def __init__(self, tenant_id: str, problems: list[str]) -> None:
        self.tenant_id, self.problems = tenant_id, problems
        listed = "\n  - ".join(problems)
        ValueError.__init__(
            self,
            f"device credentials of tenant {tenant_id!r} are not scoped to one device's prefix:\n  - {listed}\n"
            "fix: regenerate the role, alias and IoT policy (scripts/export-tenant-storage, then "
            "terraform apply) and remove any other grant on the role",
        )


def _name(tenant_id: str, max_len: int) -> str:
    name = f"edgeplat-d-{lower_case_name('tenant', tenant_id)}"
    if len(name) <= max_len:
        return name
    return f"{name[: max_len - 17]}-{hashlib.sha256(tenant_id.encode()).hexdigest()[:16]}"


def device_role_name(tenant_id: str) -> str:
    """``edgeplat-d-<tenant>``: IAM role names ignore case, hence the injective lower-case spelling."""
    return _name(tenant_id, MAX_ROLE_NAME)


def role_alias_name(tenant_id: str) -> str:
    """The tenant's role alias (``[\\w=,@-]``, 1-128 characters), named like its role."""
    return _name(tenant_id, 128)


def iot_policy_name(tenant_id: str) -> str:
    return _name(tenant_id, 128)


def role_alias_arn(alias: str, *, region: str, account_id: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iot:{region}:{account_id}:rolealias/{alias}"


def check_thing_name(device_id: str) -> str:
    """``device_id`` if it can be a thing name (thing name = device id), else a ValueError naming the fix."""
    validate_id("device", device_id)
    if not THING_NAME_PATTERN.fullmatch(device_id):
        raise ValueError(
            f"device id {device_id!r} cannot be an AWS IoT thing name ([a-zA-Z0-9:_-], no '.'): "
            "per-device write scopes need thing name = device id; rename the device or keep the "
            "tenant storage key for it"
        )
    return device_id


def device_prefix_resource(
    bucket: str, tenant_id: str, *, base_prefix: str = "", partition: str = "aws"
) -> str:
    return f"{bucket_arn(bucket, partition)}/{tenant_prefix(tenant_id, base_prefix)}device={THING_NAME_VAR}/*"


def device_role_policy(
    bucket: str, tenant_id: str, *, base_prefix: str = "", partition: str = "aws"
) -> dict[str, Any]:
    """The permissions policy of the tenant's device role (JSON-able)."""
    bucket_res = bucket_arn(bucket, partition)
    prefix = tenant_prefix(tenant_id, base_prefix)
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "OwnDeviceObjects",
                "Effect": "Allow",
                "Action": list(OBJECT_ACTIONS),
                "Resource": device_prefix_resource(
                    bucket, tenant_id, base_prefix=base_prefix, partition=partition
                ),
            },
            {
                "Sid": "TenantReleases",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"{bucket_res}/{prefix}{RELEASES}*",
            },
            *guard_statements(bucket_res, prefix),
        ],
    }


def trust_policy() -> dict[str, Any]:
    """The role's trust policy: only the AWS IoT credentials provider may assume it."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": TRUSTED_SERVICE}, "Action": "sts:AssumeRole"}
        ],
    }


def iot_policy(alias_arn: str) -> dict[str, Any]:
    """The AWS IoT policy of the tenant's device certificates: assume the tenant's alias, nothing else."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [{"Effect": "Allow", "Action": ASSUME_ACTION, "Resource": alias_arn}],
    }


def role_alias_definition(tenant_id: str, role_arn: str, credential_seconds: int = 3600) -> dict[str, Any]:
    """CreateRoleAlias parameters for the tenant's alias."""
    low, high = CREDENTIAL_SECONDS
    if not low <= credential_seconds <= high:
        raise ValueError(f"credential duration must be {low}..{high} seconds, got {credential_seconds}")
    return {
        "roleAlias": role_alias_name(tenant_id),
        "roleArn": role_arn,
        "credentialDurationSeconds": credential_seconds,
    }


# ----------------------------------------------------------------------------- the checker
def _load(policy: dict[str, Any] | str, name: str) -> tuple[dict[str, Any] | None, list[str]]:
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except ValueError as exc:
            return None, [f"{name}: not JSON ({exc})"]
    if not isinstance(policy, dict) or "Statement" not in policy:
        return None, [f"{name}: not an IAM policy document (no 'Statement')"]
    return policy, []


def _siblings(device_id: str) -> list[str]:
    # one that extends the device id (device=d1x/ against a device=d1* pattern), one unrelated
    return [f"{device_id[:127]}x" if len(device_id) < 128 else f"{device_id[:127]}y", "sibling-0"]


def device_scope_problems(
    policy: dict[str, Any] | str,
    bucket: str,
    tenant_id: str,
    *,
    thing_name: str = "device-1",
    base_prefix: str = "",
    partition: str = "aws",
    name: str = "device role policy",
) -> list[str]:
    """Why ``policy`` lets device ``thing_name`` reach beyond its own prefix; empty if it does not.

    The policy is evaluated as IAM would for a request whose ``credentials-iot:ThingName`` is
    ``thing_name``; with the variable substituted it must also pass the tenant checker.
    """
    doc, problems = _load(policy, name)
    if doc is None:
        return problems
    check_thing_name(thing_name)
    concrete = json.loads(json.dumps(doc).replace(THING_NAME_VAR, thing_name))
    problems += policy_problems(
        concrete, bucket, tenant_id, base_prefix=base_prefix, partition=partition, name=name
    )
    objects = f"{bucket_arn(bucket, partition)}/"
    ctx = {THING_NAME_KEY: thing_name}

    def key(tenant: str, device: str, rest: str = PROBE_STREAM_KEY) -> str:
        return f"{objects}{tenant_prefix(tenant, base_prefix)}device={device}/{rest}"

    own = key(tenant_id, thing_name)
    if not surely_allows(doc, "s3:PutObject", own, ctx):
        problems.append(f"{name}: device {thing_name!r} cannot write its own batch key {own}")
    own_desired = key(tenant_id, thing_name, DESIRED_NAME)
    if not surely_allows(doc, "s3:GetObject", own_desired, ctx):
        problems.append(f"{name}: device {thing_name!r} cannot read its own {own_desired}")
    if may_allow(doc, "s3:PutObject", own_desired, ctx):
        problems.append(f"{name}: device {thing_name!r} may write its desired state {own_desired}")
    for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
        if may_allow(doc, action, own, ctx):
            problems.append(f"{name}: device {thing_name!r} may delete ({action}) {own}")
    if may_allow(doc, "s3:ListBucket", bucket_arn(bucket, partition), ctx):
        problems.append(f"{name}: device {thing_name!r} may list the bucket (s3:ListBucket)")
    others = [(tenant_id, s, "a sibling's") for s in _siblings(thing_name) if s != thing_name]
    others += [
        (t, thing_name, "another tenant's") for t in (f"{tenant_id[:127]}x", "other-tenant") if t != tenant_id
    ]
    for tenant, device, whose in others:
        for rest in (PROBE_STREAM_KEY, DESIRED_NAME):
            target = key(tenant, device, rest)
            for action in OBJECT_ACTIONS:
                if may_allow(doc, action, target, ctx):
                    problems.append(f"{name}: device {thing_name!r} may {action} {whose} key {target}")
    if may_allow(doc, "s3:PutObject", own, {}):
        problems.append(
            f"{name}: a request without a thing name may write {own}: scope the resource with {THING_NAME_VAR}"
        )
    return problems


def _allow_statements(doc: dict[str, Any], name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each Allow statement of a loaded policy, with where it is ("<name> statement <Sid or index>")."""
    statements = doc["Statement"] if isinstance(doc["Statement"], list) else [doc["Statement"]]
    for i, st in enumerate(statements):
        if isinstance(st, dict) and st.get("Effect") == "Allow":
            yield f"{name} statement {st.get('Sid') or i}", st


def trust_policy_problems(policy: dict[str, Any] | str, name: str = "trust policy") -> list[str]:
    """Why ``policy`` lets anyone but the IoT credentials provider assume the device role."""
    doc, problems = _load(policy, name)
    if doc is None:
        return problems
    for where, st in _allow_statements(doc, name):
        if st.get("Principal") != {"Service": TRUSTED_SERVICE}:
            problems.append(f"{where}: Principal must be exactly {{'Service': {TRUSTED_SERVICE!r}}}")
        if _strings(st.get("Action")) != ["sts:AssumeRole"] or "NotAction" in st:
            problems.append(f"{where}: Action must be exactly 'sts:AssumeRole'")
    return problems


def iot_policy_problems(policy: dict[str, Any] | str, alias_arn: str, name: str = "IoT policy") -> list[str]:
    """Why ``policy`` lets a tenant's certificates do more than assume the tenant's role alias."""
    doc, problems = _load(policy, name)
    if doc is None:
        return problems
    for where, st in _allow_statements(doc, name):
        if "NotAction" in st or "NotResource" in st:
            problems.append(f"{where}: Allow with NotAction/NotResource grants what it does not name")
        if [a.lower() for a in _strings(st.get("Action"))] != [ASSUME_ACTION.lower()]:
            problems.append(f"{where}: Action must be exactly {ASSUME_ACTION!r}, got {st.get('Action')!r}")
        if _strings(st.get("Resource")) != [alias_arn]:
            problems.append(f"{where}: Resource must be exactly the tenant's role alias {alias_arn!r}")
    return problems


def check_device_scopes(
    tenant_id: str,
    *,
    bucket: str,
    role_policy: dict[str, Any] | str,
    trust: dict[str, Any] | str,
    iot: dict[str, Any] | str,
    alias_arn: str,
    base_prefix: str = "",
    partition: str = "aws",
    thing_name: str = "device-1",
) -> None:
    """Raise :class:`DeviceScopeError` unless the role, its trust and the IoT policy all pass."""
    problems = device_scope_problems(
        role_policy, bucket, tenant_id, thing_name=thing_name, base_prefix=base_prefix, partition=partition
    )
    problems += trust_policy_problems(trust)
    problems += iot_policy_problems(iot, alias_arn)
    if problems:
        raise DeviceScopeError(tenant_id, problems)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []
