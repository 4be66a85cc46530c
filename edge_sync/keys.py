"""Envelope encryption keys: the ``KeyService`` protocol and the local file keyring.

Each batch is encrypted under a fresh 32-byte data key. The key service hands out that
data key together with a *wrapped* copy (the data key encrypted under the tenant's master
key) and a ``key_id`` naming the tenant key and its version. The batch stores only the
wrapped copy and the key id; both are opaque to the batch format, so a Vault transit
implementation (``vault:transit/<key>:v<N>``, transit's ``datakey/wrapped`` endpoint) can
replace :class:`LocalKeyring` without touching the format.

:class:`LocalKeyring` is the embedded default: one JSON file per tenant
(``<dir>/<tenant>.json``, mode 0600) holding numbered 32-byte master keys. Data keys are
wrapped with AES-256-GCM under the current version, with the tenant id and key id as
associated data, so a wrapped key moved to another tenant or relabelled with another
version fails to unwrap. Rotation adds a version; old versions stay readable until
``set_min_decryption_version`` retires them (the same model as Vault transit).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_sync.ids import validate_id
from edge_sync.private_files import private_dir, read_private_bytes

DATA_KEY_BYTES = 32
_NONCE_BYTES = 12
_LOCAL_KEY_ID = re.compile(r"local:(?P<tenant>[^:]+):v(?P<version>[1-9][0-9]*)")


class KeyServiceError(Exception):
    """A key operation failed; ``reason`` is machine-readable.

    Reasons: ``tenant_mismatch`` (a key of another tenant), ``unknown_key`` (no such
    tenant key or version), ``below_min_version`` (retired by min_decryption_version),
    ``bad_key_id`` (not this service's key id format), ``unwrap_failed`` (the wrapped key
    does not authenticate), ``bad_request`` (invalid argument).
    """

    reason = "key_error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class TenantMismatch(KeyServiceError):
    """A key id of one tenant was presented for another tenant."""

    reason = "tenant_mismatch"


class KeyUnavailable(KeyServiceError):
    """The key version is unknown or retired (reason ``unknown_key`` / ``below_min_version``)."""

    reason = "unknown_key"


class UnwrapFailed(KeyServiceError):
    """The wrapped data key did not authenticate under the named master key."""

    reason = "unwrap_failed"


@dataclass(frozen=True)
class DataKey:
    """A fresh data key: ``plaintext`` (32 bytes, never stored), its ``wrapped`` copy and ``key_id``."""

    plaintext: bytes = field(repr=False)
    wrapped: bytes
    key_id: str


@runtime_checkable
class KeyService(Protocol):
    """What the batch format needs from a key service (local keyring, Vault transit)."""

    def generate_data_key(self, tenant_id: str) -> DataKey:
        """A new random 32-byte data key for ``tenant_id``, wrapped under its current master key."""
        ...

    def unwrap(self, tenant_id: str, key_id: str, wrapped: bytes) -> bytes:
        """The plaintext data key; raises :class:`KeyServiceError` (with a ``reason``) on failure."""
        ...


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


class LocalKeyring:
    """File-based per-tenant master keys (the embedded default ``KeyService``).

    Safe for several threads and processes on one host: every change to a tenant file
    happens under an exclusive ``flock`` and is written atomically (temp file + rename).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._read_cache: dict[str, tuple[tuple[int, int, int], dict | None]] = {}

    # -- KeyService ----------------------------------------------------------------------
    def generate_data_key(self, tenant_id: str) -> DataKey:
        validate_id("tenant", tenant_id)
        ring = self._load(tenant_id)
        if ring is None:
            with self._locked(tenant_id):
                ring = self._load(tenant_id) or self._create(tenant_id)
        version = ring["current"]
        key_id = f"local:{tenant_id}:v{version}"
        plaintext = secrets.token_bytes(DATA_KEY_BYTES)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        master = base64.b64decode(ring["keys"][str(version)])
        wrapped = nonce + AESGCM(master).encrypt(nonce, plaintext, _aad(tenant_id, key_id))
        return DataKey(plaintext=plaintext, wrapped=wrapped, key_id=key_id)

    def unwrap(self, tenant_id: str, key_id: str, wrapped: bytes) -> bytes:
        validate_id("tenant", tenant_id)
        m = _LOCAL_KEY_ID.fullmatch(key_id or "")
        if not m:
            raise KeyServiceError(
                f"key id {key_id!r} is not a local keyring id ('local:<tenant>:v<N>'); "
                "read this batch with the key service that wrote it",
                reason="bad_key_id",
            )
        if m["tenant"] != tenant_id:
            raise TenantMismatch(
                f"key id {key_id!r} belongs to tenant {m['tenant']!r}, not {tenant_id!r}: "
                "a batch of one tenant cannot be opened with another tenant's key"
            )
        version = int(m["version"])
        ring = self._load_for_read(tenant_id)
        if ring is None or str(version) not in ring["keys"]:
            raise KeyUnavailable(
                f"no master key version {version} for tenant {tenant_id!r} in {self.directory}; "
                "the keyring is missing or was not copied from the writer"
            )
        if version < ring["min_decryption_version"]:
            raise KeyUnavailable(
                f"key {key_id!r} is below tenant {tenant_id!r}'s min_decryption_version "
                f"{ring['min_decryption_version']}; lower it to read this batch",
                reason="below_min_version",
            )
        if len(wrapped) < _NONCE_BYTES + DATA_KEY_BYTES + 16:
            raise UnwrapFailed(f"wrapped key for {key_id!r} is {len(wrapped)} bytes, too short")
        master = base64.b64decode(ring["keys"][str(version)])
        try:
            key = AESGCM(master).decrypt(
                wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _aad(tenant_id, key_id)
            )
        except InvalidTag:
            raise UnwrapFailed(
                f"wrapped data key does not authenticate under {key_id!r}: it was tampered with or "
                "wrapped by another keyring"
            ) from None
        return key

    # -- administration ------------------------------------------------------------------
    def rotate(self, tenant_id: str) -> int:
        """Add a new master key version and make it current; returns the new version."""
        validate_id("tenant", tenant_id)
        with self._locked(tenant_id):
            ring = self._load(tenant_id) or self._create(tenant_id)
            version = max(int(v) for v in ring["keys"]) + 1
            ring["keys"][str(version)] = _b64(secrets.token_bytes(DATA_KEY_BYTES))
            ring["current"] = version
            self._store(tenant_id, ring)
        return version

    def set_min_decryption_version(self, tenant_id: str, version: int) -> None:
        """Retire every master key version below ``version`` (batches under them stop opening)."""
        validate_id("tenant", tenant_id)
        with self._locked(tenant_id):
            ring = self._load(tenant_id)
            if ring is None:
                raise KeyUnavailable(f"tenant {tenant_id!r} has no keyring in {self.directory}")
            if not 1 <= int(version) <= ring["current"]:
                raise KeyServiceError(
                    f"min_decryption_version must be between 1 and the current version {ring['current']}, "
                    f"got {version}",
                    reason="bad_request",
                )
            ring["min_decryption_version"] = int(version)
            self._store(tenant_id, ring)

    def current_version(self, tenant_id: str) -> int | None:
        """The version new data keys are wrapped under, or None if the tenant has no keyring yet."""
        ring = self._load(validate_id("tenant", tenant_id))
        return None if ring is None else int(ring["current"])

    def min_decryption_version(self, tenant_id: str) -> int | None:
        ring = self._load(validate_id("tenant", tenant_id))
        return None if ring is None else int(ring["min_decryption_version"])

    # -- files ---------------------------------------------------------------------------
    def _path(self, tenant_id: str) -> Path:
        return self.directory / f"{tenant_id}.json"

    @contextlib.contextmanager
    def _locked(self, tenant_id: str) -> Iterator[None]:
        private_dir(self.directory, tighten=True)
        lock_path = self.directory / f".{tenant_id}.lock"
        with self._lock:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _load_for_read(self, tenant_id: str) -> dict | None:
        """``_load``, parsed once per version of the file (an ingest unwraps a key per batch).

        Every change is an atomic rename of a new file (``_store``), so (inode, mtime, size)
        changes with it and a rotation is seen by the next unwrap. Callers must not modify it.
        """
        try:
            st = self._path(tenant_id).stat()
        except FileNotFoundError:
            return None
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._read_cache.get(tenant_id)
        if hit is not None and hit[0] == version:
            return hit[1]
        ring = self._load(tenant_id)
        self._read_cache[tenant_id] = (version, ring)
        return ring

    def _load(self, tenant_id: str) -> dict | None:
        try:
            ring = json.loads(read_private_bytes(self._path(tenant_id), "keyring file"))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise KeyServiceError(
                f"keyring file {self._path(tenant_id)} is not valid JSON ({exc}); restore it from backup",
                reason="bad_keyring",
            ) from None
        if ring.get("tenant_id") != tenant_id:
            raise TenantMismatch(
                f"keyring file {self._path(tenant_id)} belongs to tenant {ring.get('tenant_id')!r}"
            )
        return ring

    def _create(self, tenant_id: str) -> dict:
        ring = {
            "tenant_id": tenant_id,
            "current": 1,
            "min_decryption_version": 1,
            "keys": {"1": _b64(secrets.token_bytes(DATA_KEY_BYTES))},
        }
        self._store(tenant_id, ring)
        return ring

    def _store(self, tenant_id: str, ring: dict) -> None:
        path = self._path(tenant_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(ring, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)


def _aad(tenant_id: str, key_id: str) -> bytes:
    return f"edge-sync/datakey\x00{tenant_id}\x00{key_id}".encode()
