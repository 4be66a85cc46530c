"""``edgeplat device revoke``: withdraw a device in Vault and in the device registry at once.

``list``, ``show`` and ``register`` (the inventory) live in ``cli.device_inventory``.

Vault comes from ``VAULT_ADDR``/``VAULT_TOKEN`` (see ``edgeplat security``); without Vault
(the local keyring) pass ``--registry-only``. ``--rotate-storage`` also replaces the tenant's
shared S3 key, which the revoked device holds a copy of.
"""

from __future__ import annotations

import argparse
import os

from cli.common import CliError, dumps
from cli.device_inventory import add_commands as add_inventory_commands
from cli.environment import lakehouse
from cli.security import add_storage_arguments, storage_admin, vault_admin
from edge_sync.identity import DeviceRegistry, LocalDeviceRegistry
from edgeplat.device_registry import LakehouseDeviceRegistry
from edgeplat.security.revocation import RevocationIncomplete, revoke_device
from edgeplat.settings import environment, paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "device",
        help="device inventory and identity commands",
        description="The device inventory; device identities.",
    )
    dsub = p.add_subparsers(dest="device_command", metavar="SUBCOMMAND", required=True)
    r = dsub.add_parser(
        "revoke",
        help="revoke a device: registry keys (ingest refuses its batches) and Vault login/tokens",
        description="Revoke a device in one step; idempotent, reports what it changed.",
    )
    r.add_argument("--tenant", required=True)
    r.add_argument("--device", required=True)
    r.add_argument(
        "--registry-dir",
        default=None,
        help="device registry directory (default: $EDGEPLAT_REGISTRY_DIR, else the environment's: the "
        "lakehouse's device_keys table in production, the local state's folder otherwise)",
    )
    r.add_argument("--registry-only", action="store_true", help="no Vault in this deployment (local keyring)")
    r.add_argument("--rotate-storage", action="store_true", help="also rotate the tenant's shared S3 key")
    add_storage_arguments(r)
    r.add_argument("--json", action="store_true", help="print JSON for scripts")
    r.set_defaults(handler=revoke)
    add_inventory_commands(dsub)


def _registry(arg: str | None) -> DeviceRegistry:
    if arg:
        return LocalDeviceRegistry(arg)
    if os.environ.get("EDGEPLAT_REGISTRY_DIR"):
        return LocalDeviceRegistry(os.environ["EDGEPLAT_REGISTRY_DIR"])
    if environment() == "production":
        return LakehouseDeviceRegistry(lakehouse())
    return LocalDeviceRegistry(paths().registry)


def revoke(args: argparse.Namespace) -> int:
    if args.registry_only and args.rotate_storage:
        raise CliError("--rotate-storage needs Vault (the key lives there): drop --registry-only")
    vault = None if args.registry_only else vault_admin()
    storage = storage_admin(args, vault) if args.rotate_storage else None
    try:
        report = revoke_device(
            args.tenant,
            args.device,
            registry=_registry(args.registry_dir),
            vault=vault,
            storage=storage,
        )
    except RevocationIncomplete as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(dumps(report.as_dict()))
    else:
        print(report.summary() + ("" if report.changed else " (nothing left to revoke)"))
    return 0
