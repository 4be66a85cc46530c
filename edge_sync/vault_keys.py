"""``KeyService`` on Vault transit: per-tenant master keys that never leave Vault.

The device asks transit for a data key with ``datakey/plaintext/tenant-<tenant>``: Vault
returns the 32-byte plaintext (to encrypt the batch locally, then forget) and the same key
wrapped under the tenant key (``vault:v<N>:...``, stored with the batch). The ``wrapped``
variant of that endpoint returns only the ciphertext, which would leave the device unable
to encrypt anything, so the device policy grants ``datakey/plaintext`` and nothing that
decrypts. The central ingest unwraps with ``decrypt/tenant-<tenant>``.

Key ids read ``vault:<mount>/tenant-<tenant>:v<N>``; ``N`` is the transit key version
that wrapped the data key, so after a rotation old batches still open until
``min_decryption_version`` retires their version.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import TypeVar

import hvac
from hvac import exceptions as hvac_exc

from edge_sync.keys import (
    DATA_KEY_BYTES,
    DataKey,
    KeyServiceError,
    KeyUnavailable,
    TenantMismatch,
    UnwrapFailed,
)
from edge_sync.vault import UNAVAILABLE_ERRORS, VaultSession, VaultUnavailable, vault_error_message
from edge_sync.vault_admin import TRANSIT_MOUNT, tenant_key_name

T = TypeVar("T")

_KEY_ID = re.compile(r"vault:(?P<mount>[^/:]+)/(?P<key>[^:]+):v(?P<version>[1-9][0-9]*)")
_CIPHERTEXT = re.compile(r"vault:v(?P<version>[1-9][0-9]*):[A-Za-z0-9+/=]+")


class VaultTransitKeyService:
    """Data keys wrapped by the tenant's transit key (``edge_sync.keys.KeyService``).

    Give it a :class:`VaultSession` (device or central AppRole; the token is kept valid)
    or a ready ``hvac.Client`` (operator tools, tests). Transient outages raise
    :class:`VaultUnavailable`, not ``KeyServiceError``: the batch is fine, retry later.
    """

    def __init__(self, session_or_client: VaultSession | hvac.Client, mount: str = TRANSIT_MOUNT) -> None:
        if not isinstance(session_or_client, VaultSession | hvac.Client):
            raise TypeError(
                f"VaultTransitKeyService needs a VaultSession or hvac.Client, got {type(session_or_client).__name__}"
            )
        self._vault = session_or_client
        self.mount = mount

    def __repr__(self) -> str:
        return f"VaultTransitKeyService(mount={self.mount!r}, vault={self._vault!r})"

    def key_id(self, tenant_id: str, version: int) -> str:
        """The key id naming version ``version`` of the tenant's transit key."""
        return f"vault:{self.mount}/{_key_name(tenant_id)}:v{version}"

    def generate_data_key(self, tenant_id: str) -> DataKey:
        key = _key_name(tenant_id)
        try:
            resp = self._call(
                lambda c: c.secrets.transit.generate_data_key(
                    key, key_type="plaintext", bits=DATA_KEY_BYTES * 8, mount_point=self.mount
                )
            )
        except hvac_exc.Forbidden:
            raise KeyServiceError(
                f"this Vault token may not create data keys with {self.mount}/{key}: "
                "a device can only use its own tenant's key",
                reason="permission_denied",
            ) from None
        except hvac_exc.InvalidRequest as exc:
            raise KeyUnavailable(
                f"transit key {self.mount}/{key} is not usable ({vault_error_message(exc)}); "
                f"provision the tenant with VaultAdmin.ensure_tenant({tenant_id!r})"
            ) from None
        data = resp["data"]
        wrapped = data["ciphertext"]
        m = _CIPHERTEXT.fullmatch(wrapped)
        if m is None:
            raise KeyServiceError(
                f"transit returned an unexpected ciphertext format from {key}", reason="bad_response"
            )
        plaintext = base64.b64decode(data["plaintext"])
        return DataKey(
            plaintext=plaintext,
            wrapped=wrapped.encode("ascii"),
            key_id=self.key_id(tenant_id, int(m["version"])),
        )

    def unwrap(self, tenant_id: str, key_id: str, wrapped: bytes) -> bytes:
        key = _key_name(tenant_id)
        m = _KEY_ID.fullmatch(key_id or "")
        if m is None or m["mount"] != self.mount:
            raise KeyServiceError(
                f"key id {key_id!r} is not a Vault transit key id of mount {self.mount!r} "
                f"('vault:{self.mount}/tenant-<tenant>:v<N>'); read this batch with the key service that wrote it",
                reason="bad_key_id",
            )
        if m["key"] != key:
            raise TenantMismatch(
                f"key id {key_id!r} names transit key {m['key']!r}, not tenant {tenant_id!r}'s key {key!r}: "
                "a batch of one tenant cannot be opened with another tenant's key"
            )
        try:
            ciphertext = wrapped.decode("ascii")
        except (UnicodeDecodeError, AttributeError):
            raise UnwrapFailed(f"wrapped key for {key_id!r} is not a transit ciphertext") from None
        c = _CIPHERTEXT.fullmatch(ciphertext)
        if c is None:
            raise UnwrapFailed(
                f"wrapped key for {key_id!r} is not a transit ciphertext ('vault:v<N>:<base64>')"
            )
        if c["version"] != m["version"]:
            raise UnwrapFailed(
                f"wrapped key is under version v{c['version']} but the key id says v{m['version']}: "
                "the key id was relabelled"
            )
        try:
            resp = self._call(
                lambda cl: cl.secrets.transit.decrypt_data(key, ciphertext, mount_point=self.mount)
            )
        except hvac_exc.Forbidden:
            raise KeyServiceError(
                f"this Vault token may not unwrap with {self.mount}/{key}: only the central ingest policy "
                "allows transit decrypt",
                reason="permission_denied",
            ) from None
        except hvac_exc.InvalidRequest as exc:
            raise _decrypt_error(exc, key_id, tenant_id) from None
        plaintext = base64.b64decode(resp["data"]["plaintext"])
        if len(plaintext) != DATA_KEY_BYTES:
            raise UnwrapFailed(
                f"unwrapped key for {key_id!r} is {len(plaintext)} bytes, not {DATA_KEY_BYTES}"
            )
        return plaintext

    def _call(self, fn: Callable[[hvac.Client], T]) -> T:
        if isinstance(self._vault, VaultSession):
            return self._vault.call(fn)
        try:
            return fn(self._vault)
        except UNAVAILABLE_ERRORS as exc:
            raise VaultUnavailable(
                f"Vault at {self._vault.url} is unavailable: {type(exc).__name__}"
            ) from None


def _key_name(tenant_id: str) -> str:
    try:
        return tenant_key_name(tenant_id)
    except ValueError as exc:
        raise KeyServiceError(str(exc), reason="bad_request") from None


def _decrypt_error(exc: hvac_exc.VaultError, key_id: str, tenant_id: str) -> KeyServiceError:
    msg = vault_error_message(exc)
    # Transit reports these as 400s told apart only by message (Vault and OpenBao agree).
    if "disallowed by policy" in msg or "too old" in msg:
        return KeyUnavailable(
            f"key {key_id!r} is below tenant {tenant_id!r}'s min_decryption_version ({msg}); "
            "lower it with VaultAdmin.set_min_decryption_version to read this batch",
            reason="below_min_version",
        )
    if "too new" in msg or "key not found" in msg:
        return KeyUnavailable(f"no transit key version for {key_id!r} ({msg})", reason="unknown_key")
    return UnwrapFailed(
        f"wrapped data key does not decrypt under {key_id!r} ({msg}): tampered or mislabelled"
    )
