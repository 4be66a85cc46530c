"""The IAM policy a tenant's object-store credential gets, and the checker that refuses any other.

A tenant's devices share one S3 credential. What it may do, and why:

- ``s3:PutObject`` under ``<base>tenant=<T>/``: upload batches (``put_if_absent`` is a
  conditional PutObject; large batches use multipart uploads, which PutObject also covers);
  ``s3:AbortMultipartUpload`` there, so a failed multipart upload can be cleaned up;
- ``s3:GetObject`` under the same prefix: the device's ``desired.json`` and ``HEAD`` of a
  batch key before a large upload (S3 authorizes HEAD as GetObject);
- no ``s3:ListBucket`` by default: the uploader never lists (a batch key is derived from its
  seq range and a conditional write settles a resumed upload). ``allow_list=True`` adds it
  on the bucket, limited by an ``s3:prefix`` condition to the tenant prefix;
- no delete, no ACL, no bucket configuration;
- an explicit Deny of writing any ``desired.json``: desired state is the platform's to write
  (``edgeplat.desired_publisher``), and a device that could put a peer's old, validly signed
  document back would roll the peer back;
- an explicit Deny of keys with ``.`` or ``..`` segments: S3 takes them literally (so
  ``tenant=A/../tenant=B/x`` is a key inside A's prefix, not B's object), but S3-compatible
  stores and proxies that normalize paths would not, and no key of ours has such a segment.

The resource always ends the tenant part with a slash, ``tenant=A/*``: ``tenant=A*`` would
also match ``tenant=AB/``.

:func:`policy_problems` checks any policy document against that scope: every Allow must be
limited to the tenant's prefix (``arn:<partition>:s3:::<bucket>/<base>tenant=<T>/``), use only
the actions above, and list only with an ``s3:prefix`` condition inside the prefix. It is
run by the provisioning before a credential is handed out, and by ``edgeplat security
check-storage``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from edge_sync.ids import validate_id
from edge_sync.objectstore import validate_key

POLICY_VERSION = "2012-10-17"
DESIRED_NAME = "desired.json"  # the last segment of edge_sync.desired.desired_key
OBJECT_ACTIONS = ("s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload")
LIST_ACTION = "s3:ListBucket"
# IfExists variants, ForAnyValue/ForAllValues and negations are true when the key is
# missing or for other values, so only these two bound a listing to the prefix.
PREFIX_OPERATORS = ("StringLike", "StringEquals")


class StoragePolicyError(ValueError):
    """A credential's policy reaches beyond its tenant's prefix: it must not be handed out."""

    def __init__(self, tenant_id: str, problems: list[str]) -> None:
        self.tenant_id = tenant_id
        self.problems = problems
        listed = "\n  - ".join(problems)
        super().__init__(
            f"object-store credential of tenant {tenant_id!r} is not scoped to its prefix:\n  - {listed}\n"
            "fix: remove the extra grants (or the policy) from the tenant's IAM user and its groups, then "
            "run `edgeplat security provision-storage` again"
        )


def tenant_prefix(tenant_id: str, base_prefix: str = "") -> str:
    """The tenant's key prefix inside the bucket, always ending in '/': ``<base>/tenant=<T>/``."""
    validate_id("tenant", tenant_id)
    base = base_prefix.strip("/")
    if base:
        validate_key(base)
        if any(c in base for c in "*?$"):
            raise ValueError(f"base prefix {base_prefix!r} must not contain '*', '?' or '$' (IAM wildcards)")
    return f"{base}/tenant={tenant_id}/" if base else f"tenant={tenant_id}/"


def bucket_arn(bucket: str, partition: str = "aws") -> str:
    if not bucket or any(c in bucket for c in "/*?$"):
        raise ValueError(f"invalid S3 bucket name {bucket!r}: give the plain bucket name")
    return f"arn:{partition}:s3:::{bucket}"


def tenant_storage_policy(
    bucket: str, tenant_id: str, *, base_prefix: str = "", allow_list: bool = False, partition: str = "aws"
) -> dict[str, Any]:
    """The identity policy of tenant ``tenant_id``'s object-store credential (a JSON-able dict)."""
    bucket_res = bucket_arn(bucket, partition)
    prefix = tenant_prefix(tenant_id, base_prefix)
    statements: list[dict[str, Any]] = [
        {
            "Sid": "TenantObjects",
            "Effect": "Allow",
            "Action": list(OBJECT_ACTIONS),
            "Resource": f"{bucket_res}/{prefix}*",
        },
        *guard_statements(bucket_res, prefix),
    ]
    if allow_list:
        statements.append(
            {
                "Sid": "TenantList",
                "Effect": "Allow",
                "Action": LIST_ACTION,
                "Resource": bucket_res,
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            }
        )
    return {"Version": POLICY_VERSION, "Statement": statements}


def guard_statements(bucket_res: str, prefix: str) -> list[dict[str, Any]]:
    """The Deny statements every device credential carries (see the module docstring)."""
    return [
        # (moto matches resource patterns as regexes, '.' being any character: there these
        # also refuse every 1- or 2-character segment. No key of ours has one; AWS is literal.)
        {
            "Sid": "NoDesiredStateWrites",
            "Effect": "Deny",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": f"{bucket_res}/{prefix}*/{DESIRED_NAME}",
        },
        {
            "Sid": "NoDotSegments",
            "Effect": "Deny",
            "Action": "s3:*",
            "Resource": [
                f"{bucket_res}/*/../*",
                f"{bucket_res}/*/..",
                f"{bucket_res}/*/./*",
                f"{bucket_res}/*/.",
            ],
        },
    ]


def policy_problems(
    policy: dict[str, Any] | str,
    bucket: str,
    tenant_id: str,
    *,
    base_prefix: str = "",
    partition: str = "aws",
    name: str = "policy",
) -> list[str]:
    """Why ``policy`` lets its holder reach beyond the tenant's prefix; empty if it does not.

    Deny statements only take rights away and are accepted as they are. Each Allow must name
    allowed actions only, on resources under the tenant prefix (object actions) or on the
    bucket with an ``s3:prefix`` condition inside the prefix (``s3:ListBucket``).
    """
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except ValueError as exc:
            return [f"{name}: not JSON ({exc})"]
    if not isinstance(policy, dict) or "Statement" not in policy:
        return [f"{name}: not an IAM policy document (no 'Statement')"]
    statements = policy["Statement"]
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return [f"{name}: 'Statement' must be a list or an object"]
    objects = f"{bucket_arn(bucket, partition)}/{tenant_prefix(tenant_id, base_prefix)}"
    problems: list[str] = []
    for i, st in enumerate(statements):
        where = f"{name} statement {st.get('Sid') or i}" if isinstance(st, dict) else f"{name} statement {i}"
        if not isinstance(st, dict):
            problems.append(f"{where}: not an object")
            continue
        problems += _statement_problems(
            st, where, objects, bucket_arn(bucket, partition), tenant_id, base_prefix
        )
    return problems


def check_policies(
    policies: dict[str, dict[str, Any] | str],
    bucket: str,
    tenant_id: str,
    *,
    base_prefix: str = "",
    partition: str = "aws",
) -> None:
    """Raise :class:`StoragePolicyError` unless every named policy passes :func:`policy_problems`."""
    problems = [
        p
        for name, doc in policies.items()
        for p in policy_problems(
            doc, bucket, tenant_id, base_prefix=base_prefix, partition=partition, name=name
        )
    ]
    if problems:
        raise StoragePolicyError(tenant_id, problems)


def _statement_problems(
    st: dict[str, Any], where: str, objects: str, bucket_res: str, tenant_id: str, base_prefix: str
) -> list[str]:
    effect = st.get("Effect")
    if effect == "Deny":
        return []
    if effect != "Allow":
        return [f"{where}: Effect must be 'Allow' or 'Deny', got {effect!r}"]
    problems = []
    for element in ("NotAction", "NotResource", "NotPrincipal"):
        if element in st:
            problems.append(
                f"{where}: Allow with {element} grants everything it does not name; list what is allowed"
            )
    if "Principal" in st:
        problems.append(
            f"{where}: a Principal belongs in a resource policy, not in the credential's own policy"
        )
    actions = _strings(st.get("Action"))
    resources = _strings(st.get("Resource"))
    if not actions or not resources:
        problems.append(f"{where}: Allow needs Action and Resource")
        return problems
    known = {a.lower(): a for a in (*OBJECT_ACTIONS, LIST_ACTION)}
    for action in actions:
        if action.lower() not in known:
            problems.append(
                f"{where}: action {action!r} is not allowed (only {', '.join((*OBJECT_ACTIONS, LIST_ACTION))}; "
                "no wildcards)"
            )
    lists = any(a.lower() == LIST_ACTION.lower() for a in actions)
    object_actions = any(a.lower() in {o.lower() for o in OBJECT_ACTIONS} for a in actions)
    if lists and object_actions:
        problems.append(f"{where}: put {LIST_ACTION} in a statement of its own (its resource is the bucket)")
        return problems
    for res in resources:
        if "${" in res:
            problems.append(f"{where}: resource {res!r} uses a policy variable; spell the tenant prefix out")
        elif lists:
            if res != bucket_res:
                problems.append(
                    f"{where}: {LIST_ACTION} resource must be exactly {bucket_res!r}, got {res!r}"
                )
        elif not res.startswith(objects):
            problems.append(f"{where}: resource {res!r} is not under {objects!r}")
    if lists:
        problems += _list_condition_problems(
            st.get("Condition"), where, tenant_prefix(tenant_id, base_prefix)
        )
    return problems


def _list_condition_problems(condition: Any, where: str, prefix: str) -> list[str]:
    # Other conditions AND with this one, so they can only narrow the listing further.
    if not isinstance(condition, dict):
        return [f"{where}: {LIST_ACTION} without an s3:prefix condition lists every tenant's keys"]
    values: list[str] = []
    for operator in PREFIX_OPERATORS:
        block = condition.get(operator)
        if isinstance(block, dict):
            for key, value in block.items():
                if key.lower() == "s3:prefix":  # condition keys ignore case
                    values += _strings(value)
    if not values:
        return [
            f"{where}: {LIST_ACTION} needs a StringLike or StringEquals condition on s3:prefix "
            f"(IfExists/ForAnyValue variants do not bound it)"
        ]
    return [
        f"{where}: s3:prefix value {v!r} is not under {prefix!r}"
        for v in values
        if not v.startswith(prefix) or "${" in v
    ]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, dict | bytes):
        return [v for v in value if isinstance(v, str)]
    return []
