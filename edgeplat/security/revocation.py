"""Revoke a device in one step: Vault (login, tokens, policy) and the device registry (signatures).

Both halves are needed (docs/security.md, "Stolen device"): Vault alone stops new data keys
but not batches encrypted with a data key the device kept; the registry alone stops its
batches at ingest (``unknown_device``) but leaves it a working Vault login. Optionally the
tenant's shared object-store credential is rotated too, because the device holds a copy.

The registry goes first: it is the gate the ingest checks on every batch, and it is local,
so it cannot be stopped by an unreachable Vault. Every step is idempotent, so after a
failure (:class:`RevocationIncomplete`) the same call is simply run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_sync.identity import DeviceRegistry
from edge_sync.ids import validate_id
from edge_sync.vault_admin import VaultAdmin


@dataclass
class RevocationReport:
    """What one revocation did; ``changed`` is False when there was nothing left to revoke."""

    tenant_id: str
    device_id: str
    registry_keys_revoked: list[str] = field(default_factory=list)
    vault: str = "skipped"  # "revoked", "not enrolled" or "skipped" (no Vault configured)
    vault_tokens_revoked: int = 0
    storage_key_rotated: str | None = None  # the new access key id, when rotated

    @property
    def changed(self) -> bool:
        return (
            bool(self.registry_keys_revoked)
            or self.vault == "revoked"
            or self.storage_key_rotated is not None
        )

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "changed": self.changed}

    def summary(self) -> str:
        keys = ", ".join(self.registry_keys_revoked) or "none active"
        vault = self.vault + (
            f" ({self.vault_tokens_revoked} live tokens revoked)" if self.vault == "revoked" else ""
        )
        parts = [
            f"device {self.tenant_id}/{self.device_id}: registry keys revoked: {keys}",
            f"vault: {vault}",
        ]
        if self.storage_key_rotated:
            parts.append(f"tenant storage key rotated to {self.storage_key_rotated}")
        return "; ".join(parts)


class RevocationIncomplete(RuntimeError):
    """A step failed after earlier ones succeeded; ``report`` says what was done. Run it again."""

    def __init__(self, report: RevocationReport, step: str, cause: BaseException) -> None:
        self.report = report
        super().__init__(
            f"revocation of {report.tenant_id}/{report.device_id} stopped at {step} "
            f"({type(cause).__name__}: {cause}); done so far: {report.summary()}. It is idempotent: run it again"
        )


def revoke_device(
    tenant_id: str,
    device_id: str,
    *,
    registry: DeviceRegistry,
    vault: VaultAdmin | None,
    storage: Any | None = None,
) -> RevocationReport:
    """Revoke every registered key of the device, then its Vault identity; optionally rotate the
    tenant's object-store key (``storage``: a ``TenantStorageAdmin``).

    ``vault=None`` is for deployments without Vault (local keyring): only the registry is
    changed and the report says ``vault="skipped"``.
    """
    validate_id("tenant", tenant_id)
    validate_id("device", device_id)
    report = RevocationReport(tenant_id, device_id)
    step = "registry"
    try:
        for key_id, _ in registry.public_keys(tenant_id, device_id):
            registry.revoke(tenant_id, device_id, key_id)
            report.registry_keys_revoked.append(key_id)
        if vault is not None:
            step = "vault"
            if vault.device_enrolled(tenant_id, device_id):
                report.vault_tokens_revoked = vault.revoke_device(tenant_id, device_id)
                report.vault = "revoked"
            else:
                # the role is gone already; its policy and tokens too, unless an earlier run
                # stopped halfway: revoking again is cheap and makes sure
                report.vault_tokens_revoked = vault.revoke_device(tenant_id, device_id)
                report.vault = "revoked" if report.vault_tokens_revoked else "not enrolled"
        if storage is not None:
            step = "storage rotation"
            report.storage_key_rotated = storage.rotate(tenant_id).access_key_id
    except Exception as exc:
        raise RevocationIncomplete(report, step, exc) from exc
    return report
