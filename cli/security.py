"""``edgeplat security``: tenant object-store credentials, provisioned, rotated and checked.

Operator commands. They use the operator's privileged credentials from the standard
environment, never from the command line (which other users can read in ``ps``):

- Vault: ``VAULT_ADDR`` and ``VAULT_TOKEN`` (or ``BAO_ADDR``/``BAO_TOKEN``), a token that may
  write the platform's KV mount and manage AppRoles (not the central ingest's AppRole);
- AWS IAM: the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile,
  ...), for an identity that may manage users under ``/edgeplat/tenants/``;
  ``check-device-scopes`` reads the tenant's device role and AWS IoT role alias and policy
  (no Vault).

Exit codes: 0 done / scoped, 1 a check found problems, 2 bad input or refused.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import boto3
import hvac

from cli.common import CliError, dumps
from edge_sync.vault_admin import VaultAdmin
from edgeplat.security.device_scope_audit import DeviceScopeAudit, DeviceScopeCheck
from edgeplat.security.storage_policy import StoragePolicyError
from edgeplat.security.tenant_storage import StorageCheck, StorageTarget, TenantStorageAdmin


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "security",
        help="tenant storage credentials",
        description="Provision, rotate and check tenant credentials.",
    )
    ssub = p.add_subparsers(dest="security_command", metavar="SUBCOMMAND", required=True)
    for name, handler, text in (
        (
            "provision-storage",
            provision,
            "create the tenant's scoped S3 credential and put it in Vault (idempotent)",
        ),
        ("rotate-storage", rotate, "issue a new S3 key for the tenant, then delete the old one"),
        (
            "check-storage",
            check,
            "verify the tenant's S3 credential reaches only tenant=<T>/ (exit 1 if not)",
        ),
    ):
        s = ssub.add_parser(name, help=text, description=text)
        s.add_argument("--tenant", required=True, help="tenant id")
        add_storage_arguments(s)
        s.add_argument("--json", action="store_true", help="print JSON for scripts")
        s.set_defaults(handler=handler)
    text = (
        "verify the tenant's device role, role alias and IoT policy reach one device's prefix (exit 1 if not)"
    )
    s = ssub.add_parser("check-device-scopes", help=text, description=text)
    s.add_argument("--tenant", required=True, help="tenant id")
    add_storage_arguments(s)
    s.add_argument(
        "--iot-endpoint-url",
        default=os.environ.get("EDGEPLAT_IOT_ENDPOINT"),
        help="AWS IoT API endpoint (default: $EDGEPLAT_IOT_ENDPOINT, else AWS's)",
    )
    s.add_argument("--json", action="store_true", help="print JSON for scripts")
    s.set_defaults(handler=check_device_scopes)


def add_storage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store-url",
        default=os.environ.get("EDGEPLAT_OBJECTS_URL"),
        help="s3://bucket/prefix of device batches (default: $EDGEPLAT_OBJECTS_URL)",
    )
    p.add_argument(
        "--endpoint-url",
        default=os.environ.get("EDGEPLAT_S3_ENDPOINT"),
        help="S3 API endpoint the devices use, written into their secret (default: $EDGEPLAT_S3_ENDPOINT; AWS)",
    )
    p.add_argument(
        "--iam-endpoint-url",
        default=os.environ.get("EDGEPLAT_IAM_ENDPOINT"),
        help="IAM API endpoint (default: $EDGEPLAT_IAM_ENDPOINT, else AWS's)",
    )
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    p.add_argument(
        "--allow-list", action="store_true", help="let devices list their tenant prefix (s3:prefix bound)"
    )


def vault_admin() -> Any:
    """A ``VaultAdmin`` on the operator's token from the environment."""
    addr = os.environ.get("VAULT_ADDR") or os.environ.get("BAO_ADDR")
    token = os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN")
    if not addr or not token:
        raise CliError(
            "set VAULT_ADDR and VAULT_TOKEN (an operator token that may write the platform's KV mount and "
            "manage AppRoles) in the environment; they are never taken from the command line"
        )
    return VaultAdmin(hvac.Client(url=addr, token=token))


def storage_admin(args: argparse.Namespace, vault: Any | None = None) -> Any:
    """A ``TenantStorageAdmin`` for the storage arguments."""
    if not args.store_url:
        raise CliError("give --store-url s3://bucket/prefix (or set EDGEPLAT_OBJECTS_URL)")
    try:
        target = StorageTarget.from_url(
            args.store_url, endpoint_url=args.endpoint_url, region=args.region, allow_list=args.allow_list
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    iam = _aws_client("iam", args.iam_endpoint_url, args.region)
    return TenantStorageAdmin(iam, vault or vault_admin(), target)


def _aws_client(service: str, endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 client of a session of its own: credentials are read from the environment now, never
    from boto3's process-wide default session, which keeps the first ones it resolved."""
    return boto3.session.Session().client(service, endpoint_url=endpoint_url, region_name=region)


def _refused(exc: Exception) -> CliError:
    return CliError(str(exc))


def _granted(args: argparse.Namespace, act: str, describe) -> int:
    """Run ``TenantStorageAdmin.<act>`` for the tenant and print the grant (``--json`` or ``describe``)."""
    admin = storage_admin(args)
    try:
        grant = getattr(admin, act)(args.tenant)
    except (StoragePolicyError, ValueError) as exc:
        raise _refused(exc) from None
    print(dumps(grant.as_dict()) if args.json else describe(grant))
    return 0


def provision(args: argparse.Namespace) -> int:
    def describe(grant) -> str:
        what = "issued new key" if grant.issued else "kept the key already in Vault"
        return (
            f"tenant {grant.tenant_id}: IAM user {grant.iam_user}, {what} {grant.access_key_id}, "
            f"Vault secret tenants/{grant.tenant_id}/shared/objectstore version {grant.kv_version}"
        )

    return _granted(args, "provision", describe)


def rotate(args: argparse.Namespace) -> int:
    def describe(grant) -> str:
        old = ", ".join(grant.deleted_keys) or "none"
        return (
            f"tenant {grant.tenant_id}: new key {grant.access_key_id} in Vault (version {grant.kv_version}); "
            f"deleted: {old}. Devices use it after their next secret render."
        )

    return _granted(args, "rotate", describe)


def check(args: argparse.Namespace) -> int:
    admin = storage_admin(args)
    try:
        result = admin.check(args.tenant)
    except ValueError as exc:
        raise _refused(exc) from None
    return _verdict(
        args,
        result,
        f"OK, key {result.access_key_id} of {result.iam_user} reaches only its prefix "
        f"({len(result.policies)} policies checked)",
        "NOT SCOPED",
    )


def check_device_scopes(args: argparse.Namespace) -> int:
    if not args.store_url:
        raise CliError("give --store-url s3://bucket/prefix (or set EDGEPLAT_OBJECTS_URL)")
    try:
        target = StorageTarget.from_url(args.store_url, region=args.region)
        iam = _aws_client("iam", args.iam_endpoint_url, args.region)
        iot = _aws_client("iot", args.iot_endpoint_url, args.region)
        result = DeviceScopeAudit(iam, iot, target).check(args.tenant)
    except ValueError as exc:
        raise _refused(exc) from None
    return _verdict(
        args,
        result,
        f"OK, role {result.role} (alias {result.role_alias}, IoT policy {result.iot_policy}) reaches only "
        "tenant=<T>/device=<thing name>/",
        "NOT SCOPED TO ONE DEVICE",
    )


def _verdict(args: argparse.Namespace, result: StorageCheck | DeviceScopeCheck, ok: str, not_ok: str) -> int:
    """Print a deployed-credential check (JSON, or one line / the problems); exit 1 when it failed."""
    if args.json:
        print(dumps(result.as_dict()))
    elif result.ok:
        print(f"tenant {result.tenant_id}: {ok}")
    else:
        print(f"tenant {result.tenant_id}: {not_ok} ({len(result.problems)} problems):")
        for problem in result.problems:
            print(f"  - {problem}")
    return 0 if result.ok else 1
