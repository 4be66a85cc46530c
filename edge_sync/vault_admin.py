"""Provisioning of the platform's Vault layout: engines, tenant keys, device enrolment.

This runs on the operator's or the central side with a privileged token; devices never
import it for anything but the naming helpers. The layout it creates:

- transit engine at ``transit``: one key per tenant, ``tenant-<tenant>`` (aes256-gcm96),
  used to wrap the per-batch data keys;
- KV v2 engine at ``edgeplat``: ``tenants/<tenant>/devices/<device>/<name>`` (one device)
  and ``tenants/<tenant>/shared/<name>`` (every device of the tenant);
- AppRole at ``approle``: one role and one policy per device, ``device.<tenant>.<device>``,
  and ``central.<name>`` roles for the central ingest.

A device policy allows only: data keys from its tenant's transit key, KV reads under its
own and its tenant's shared paths, looking up / renewing / revoking its own token, and
replacing its own AppRole secret id (generate, look up, destroy under its own role). It
cannot decrypt anything: unwrapping data keys is the central ingest's job.

A device's secret id expires (``DEVICE_SECRET_ID_TTL``) and allows a limited number of
logins (``DEVICE_SECRET_ID_USES``); the agent replaces it before either runs out
(``VaultSession.renew_secret_id``). A copied secret id is therefore worth little for long,
but a device offline for longer than the TTL must be enrolled again (docs/vault.md).
"""

from __future__ import annotations

import contextlib
from typing import Any

import hvac
from hvac import exceptions as hvac_exc

from edge_sync.ids import validate_id

TRANSIT_MOUNT = "transit"
KV_MOUNT = "edgeplat"
APPROLE_MOUNT = "approle"
CENTRAL_POLICY = "edgeplat-central-ingest"
# A device's AppRole secret id: valid for 30 days and 100 logins (a login per token max TTL,
# 24 h, plus restarts); the agent replaces it at half of either.
DEVICE_SECRET_ID_TTL = "720h"
DEVICE_SECRET_ID_USES = 100


def _vault_safe(kind: str, value: str) -> str:
    validate_id(kind, value)
    # Vault object names must end with a word character; '.' is escaped below but a
    # trailing '-' would be rejected by Vault with a less helpful message.
    if value.endswith("-"):
        raise ValueError(f"invalid {kind} id {value!r} for Vault: it must not end with '-'")
    return value


def _name_part(value: str) -> str:
    """Injective, lower-case, dot-free spelling of an id for role and policy names.

    Vault lower-cases policy names, so 'Acme' and 'acme' would collide, and '.' is our
    separator: lower-case letters, digits and '-' pass through, the rest is escaped.
    """
    out = []
    for ch in value:
        if ch.islower() or ch.isdigit() or ch == "-":
            out.append(ch)
        elif ch == "_":
            out.append("__")
        elif ch == ".":
            out.append("_d")
        else:  # upper-case letter (validate_id allows nothing else)
            out.append("_" + ch.lower())
    return "".join(out)


def lower_case_name(kind: str, value: str) -> str:
    """The id ``value`` (validated as ``kind``) spelled for systems that ignore case in names.

    Injective, so two ids never share a name; used for Vault roles and policies here and for
    IAM user names (which IAM also compares without case) by the tenant storage provisioning.
    """
    return _name_part(validate_id(kind, value))


def tenant_key_name(tenant_id: str) -> str:
    """Name of the tenant's transit key (transit key names are case-sensitive)."""
    return f"tenant-{_vault_safe('tenant', tenant_id)}"


def device_role_name(tenant_id: str, device_id: str) -> str:
    """Name of the device's AppRole role and of its policy: ``device.<tenant>.<device>``.

    One name per (tenant, device) pair and never the same for two pairs, so enrolling a
    device can never overwrite another tenant's role or policy.
    """
    t = _name_part(_vault_safe("tenant", tenant_id))
    d = _name_part(_vault_safe("device", device_id))
    return f"device.{t}.{d}"


def device_kv_path(tenant_id: str, device_id: str, name: str = "") -> str:
    """KV v2 path (relative to the mount) of a device's secret ``name``."""
    base = f"tenants/{_vault_safe('tenant', tenant_id)}/devices/{_vault_safe('device', device_id)}"
    return f"{base}/{name}" if name else base


def shared_kv_path(tenant_id: str, name: str = "") -> str:
    """KV v2 path (relative to the mount) of a secret shared by all of a tenant's devices."""
    base = f"tenants/{_vault_safe('tenant', tenant_id)}/shared"
    return f"{base}/{name}" if name else base


# Every platform token looks up, renews and revokes itself (the AppRole session's lifecycle).
_TOKEN_SELF = """path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
"""


def device_policy(tenant_id: str, device_id: str) -> str:
    """HCL policy of one device."""
    key = tenant_key_name(tenant_id)
    own = device_kv_path(tenant_id, device_id)
    shared = shared_kv_path(tenant_id)
    role = f"auth/{APPROLE_MOUNT}/role/{device_role_name(tenant_id, device_id)}"
    # datakey/plaintext, not datakey/wrapped: the device must hold the plaintext data key
    # to encrypt batches locally; it still cannot decrypt (unwrap) any wrapped key.
    return f"""
path "{TRANSIT_MOUNT}/datakey/plaintext/{key}" {{
  capabilities = ["update"]
}}
path "{KV_MOUNT}/data/{own}/*" {{
  capabilities = ["read"]
}}
path "{KV_MOUNT}/data/{shared}/*" {{
  capabilities = ["read"]
}}
{_TOKEN_SELF}path "{role}/secret-id" {{
  capabilities = ["update"]
}}
path "{role}/secret-id/lookup" {{
  capabilities = ["update"]
}}
path "{role}/secret-id/destroy" {{
  capabilities = ["update"]
}}
"""


def central_policy() -> str:
    """HCL policy of the central ingest: unwrap (decrypt) data keys of every tenant."""
    return f"""
path "{TRANSIT_MOUNT}/decrypt/tenant-*" {{
  capabilities = ["update"]
}}
{_TOKEN_SELF}"""


class VaultAdmin:
    """Creates and changes the platform layout through a privileged hvac client.

    Every ``ensure_*`` call is idempotent, so provisioning can be re-run safely.
    """

    def __init__(self, client: hvac.Client) -> None:
        self.client = client

    def __repr__(self) -> str:
        return f"VaultAdmin(url={self.client.url!r})"

    # -- engines and tenants -------------------------------------------------------------

    def ensure_engines(self) -> None:
        """Enable transit, KV v2 and AppRole at the platform's mount points if missing."""
        mounts = self.client.sys.list_mounted_secrets_engines()["data"]
        if f"{TRANSIT_MOUNT}/" not in mounts:
            self.client.sys.enable_secrets_engine("transit", path=TRANSIT_MOUNT)
        if f"{KV_MOUNT}/" not in mounts:
            self.client.sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "2"})
        elif mounts[f"{KV_MOUNT}/"].get("options", {}).get("version") != "2":
            raise RuntimeError(f"mount {KV_MOUNT!r} exists but is not KV version 2: move or upgrade it")
        auths = self.client.sys.list_auth_methods()["data"]
        if f"{APPROLE_MOUNT}/" not in auths:
            self.client.sys.enable_auth_method("approle", path=APPROLE_MOUNT)

    def ensure_tenant(self, tenant_id: str) -> str:
        """Create the tenant's transit key if missing; return its name."""
        name = tenant_key_name(tenant_id)
        try:
            self.client.secrets.transit.read_key(name, mount_point=TRANSIT_MOUNT)
        except hvac_exc.InvalidPath:
            self.client.secrets.transit.create_key(
                name, key_type="aes256-gcm96", exportable=False, mount_point=TRANSIT_MOUNT
            )
        return name

    def tenant_key_info(self, tenant_id: str) -> dict[str, Any]:
        """The transit key's metadata (latest_version, min_decryption_version, ...)."""
        return self.client.secrets.transit.read_key(tenant_key_name(tenant_id), mount_point=TRANSIT_MOUNT)[
            "data"
        ]

    def rotate_tenant_key(self, tenant_id: str) -> int:
        """Add a new version to the tenant's key; return it. Old versions still decrypt."""
        name = tenant_key_name(tenant_id)
        self.client.secrets.transit.rotate_key(name, mount_point=TRANSIT_MOUNT)
        return int(self.tenant_key_info(tenant_id)["latest_version"])

    def set_min_decryption_version(self, tenant_id: str, version: int) -> None:
        """Refuse to unwrap data keys wrapped under versions older than ``version``."""
        latest = int(self.tenant_key_info(tenant_id)["latest_version"])
        if not 1 <= version <= latest:
            raise ValueError(
                f"min_decryption_version {version} for tenant {tenant_id!r} must be within 1..{latest} "
                "(rotate the key first to go higher)"
            )
        self.client.secrets.transit.update_key_configuration(
            tenant_key_name(tenant_id), min_decryption_version=version, mount_point=TRANSIT_MOUNT
        )

    # -- secrets -------------------------------------------------------------------------

    def write_device_secret(self, tenant_id: str, device_id: str, name: str, data: dict[str, Any]) -> int:
        """Write a device's secret; return the new KV version."""
        return self._write(device_kv_path(tenant_id, device_id, _secret_name(name)), data)

    def write_shared_secret(self, tenant_id: str, name: str, data: dict[str, Any]) -> int:
        """Write a secret every device of the tenant can read; return the new KV version."""
        return self._write(shared_kv_path(tenant_id, _secret_name(name)), data)

    def read_shared_secret(self, tenant_id: str, name: str) -> tuple[dict[str, Any], int] | None:
        """``(data, version)`` of a tenant-shared secret's latest version, or None if there is none."""
        return self._read(shared_kv_path(tenant_id, _secret_name(name)))

    def read_device_secret(
        self, tenant_id: str, device_id: str, name: str
    ) -> tuple[dict[str, Any], int] | None:
        """``(data, version)`` of a device secret's latest version, or None if there is none."""
        return self._read(device_kv_path(tenant_id, device_id, _secret_name(name)))

    def _write(self, path: str, data: dict[str, Any]) -> int:
        resp = self.client.secrets.kv.v2.create_or_update_secret(path, secret=data, mount_point=KV_MOUNT)
        return int(resp["data"]["version"])

    def _read(self, path: str) -> tuple[dict[str, Any], int] | None:
        try:
            resp = self.client.secrets.kv.v2.read_secret_version(
                path, mount_point=KV_MOUNT, raise_on_deleted_version=True
            )
        except hvac_exc.InvalidPath:
            return None
        return dict(resp["data"]["data"] or {}), int(resp["data"]["metadata"]["version"])

    # -- devices -------------------------------------------------------------------------

    def enrol_device(
        self,
        tenant_id: str,
        device_id: str,
        token_ttl: str = "1h",
        token_max_ttl: str = "24h",
        secret_id_ttl: str = DEVICE_SECRET_ID_TTL,
        secret_id_num_uses: int = DEVICE_SECRET_ID_USES,
    ) -> tuple[str, str]:
        """Create the device's policy and AppRole; return ``(role_id, secret_id)``.

        The secret id serves ``secret_id_num_uses`` logins (the device logs in again whenever
        its token reaches its max TTL) for ``secret_id_ttl``; the agent replaces it before
        either runs out. Revoke the device to withdraw it and every secret id it made.
        """
        self.ensure_tenant(tenant_id)
        role = device_role_name(tenant_id, device_id)
        self.client.sys.create_or_update_policy(role, device_policy(tenant_id, device_id))
        return self._approle(
            role,
            role,
            secret_id_num_uses=secret_id_num_uses,
            secret_id_ttl=secret_id_ttl,
            token_ttl=token_ttl,
            token_max_ttl=token_max_ttl,
        )

    def device_enrolled(self, tenant_id: str, device_id: str) -> bool:
        """True while the device's AppRole role exists (it can log in with its secret id)."""
        try:
            self.client.auth.approle.read_role(
                device_role_name(tenant_id, device_id), mount_point=APPROLE_MOUNT
            )
        except hvac_exc.InvalidPath:
            return False
        return True

    def revoke_device(self, tenant_id: str, device_id: str) -> int:
        """Withdraw a device: no more logins, and its live tokens lose all access now.

        Deleting the policy takes effect at once (Vault resolves policies per request), the
        role deletion refuses every later login, and tokens already issued to the role are
        revoked by accessor. Returns the number of tokens revoked.
        """
        role = device_role_name(tenant_id, device_id)
        self.client.sys.delete_policy(role)
        with contextlib.suppress(hvac_exc.InvalidPath):
            self.client.auth.approle.delete_role(role, mount_point=APPROLE_MOUNT)
        return self._revoke_tokens_of_role(role)

    def _revoke_tokens_of_role(self, role: str) -> int:
        # Vault has no index from role to tokens; scanning accessors costs one lookup per live
        # token, acceptable for a rare operator action, and the policy deletion above has
        # already cut access in case the scan is interrupted.
        try:
            accessors = self.client.auth.token.list_accessors()["data"]["keys"]
        except hvac_exc.InvalidPath:
            return 0
        revoked = 0
        for accessor in accessors:
            try:
                info = self.client.auth.token.lookup_accessor(accessor)["data"]
            except (hvac_exc.InvalidPath, hvac_exc.InvalidRequest, hvac_exc.Forbidden):
                continue  # expired or revoked meanwhile
            meta = info.get("meta") or {}
            if (
                info.get("path", "").startswith(f"auth/{APPROLE_MOUNT}/login")
                and meta.get("role_name") == role
            ):
                self.client.auth.token.revoke_accessor(accessor)
                revoked += 1
        return revoked

    # -- central -------------------------------------------------------------------------

    def ensure_central_policy(self) -> str:
        """Write the central ingest policy; return its name."""
        self.client.sys.create_or_update_policy(CENTRAL_POLICY, central_policy())
        return CENTRAL_POLICY

    def enrol_central(
        self, name: str = "ingest", token_ttl: str = "1h", token_max_ttl: str = "24h"
    ) -> tuple[str, str]:
        """Create an AppRole ``central.<name>`` holding the central policy; return ``(role_id, secret_id)``."""
        role = f"central.{_name_part(_vault_safe('node', name))}"
        self.ensure_central_policy()
        return self._approle(role, CENTRAL_POLICY, token_ttl=token_ttl, token_max_ttl=token_max_ttl)

    def _approle(
        self, role: str, policy: str, *, secret_id_num_uses: int = 0, **ttls: str
    ) -> tuple[str, str]:
        """Create or update AppRole ``role`` whose service tokens hold ``policy`` alone (``ttls``:
        its TTL settings); return ``(role_id, secret_id)``. A node logs in again whenever its token
        reaches its max TTL, so its secret id serves ``secret_id_num_uses`` logins (0: unlimited)."""
        self.client.auth.approle.create_or_update_approle(
            role,
            bind_secret_id=True,
            secret_id_num_uses=secret_id_num_uses,
            **ttls,
            token_policies=[policy],
            token_no_default_policy=True,
            token_type="service",
            mount_point=APPROLE_MOUNT,
        )
        role_id = self.client.auth.approle.read_role_id(role, mount_point=APPROLE_MOUNT)["data"]["role_id"]
        secret_id = self.client.auth.approle.generate_secret_id(role, mount_point=APPROLE_MOUNT)["data"][
            "secret_id"
        ]
        return role_id, secret_id


def _secret_name(name: str) -> str:
    parts = name.split("/")
    if not name or any(not p or p in (".", "..") or "*" in p or "+" in p for p in parts):
        raise ValueError(
            f"invalid secret name {name!r}: use non-empty path segments without '.', '..', '*', '+'"
        )
    return name
