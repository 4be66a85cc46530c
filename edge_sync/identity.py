"""Ed25519 identities: device signing keys, the central device registry, the platform signer.

A device signs every batch it uploads with its :class:`DeviceIdentity`; the central side
looks up the device's registered public keys in a :class:`DeviceRegistry` (several at once
while a device rotates its key) and rejects batches no registered key verifies. In the other
direction the platform signs downlink documents (desired state, rollout decisions) with a
:class:`PlatformSigner` and devices verify them against the platform public key they were
provisioned with.

Signed documents use canonical JSON (sorted keys, no spaces, ASCII) so the signed bytes are
reproducible from the parsed document.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_sync.ids import validate_id
from edge_sync.private_files import private_dir, read_private_bytes

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32


class SignatureError(Exception):
    """A signature is missing, malformed or does not verify (the document was tampered with)."""


def canonical_json(obj: Any) -> bytes:
    """The one byte encoding of a JSON document that is signed: sorted keys, no spaces, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def key_fingerprint(public_key: bytes) -> str:
    """A short stable id for a raw Ed25519 public key (``ed25519:`` + 16 hex of its SHA-256)."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} raw bytes, got {len(public_key)}")
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:16]


def verify_signature(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``data`` by ``public_key`` (raw 32 bytes)."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _write_private(path: Path, text: str) -> None:
    """Write a secret file atomically with mode 0600 (never briefly world-readable)."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _pem_private(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _load_private_pem(text: str, path: Path) -> Ed25519PrivateKey:
    start = text.find("-----BEGIN")
    if start < 0:
        raise ValueError(
            f"{path} holds no PEM private key; regenerate it with DeviceIdentity.generate(...).save()"
        )
    key = serialization.load_pem_private_key(text[start:].encode("ascii"), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, expected an Ed25519 private key")
    return key


class DeviceIdentity:
    """A device's Ed25519 signing key, bound to its tenant and device id."""

    def __init__(self, tenant_id: str, device_id: str, private_key: Ed25519PrivateKey) -> None:
        self.tenant_id = validate_id("tenant", tenant_id)
        self.device_id = validate_id("device", device_id)
        self._key = private_key

    @classmethod
    def generate(cls, tenant_id: str, device_id: str) -> DeviceIdentity:
        return cls(tenant_id, device_id, Ed25519PrivateKey.generate())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the identity as a PEM private key (mode 0600) preceded by its tenant and device ids."""
        header = f"Tenant-Id: {self.tenant_id}\nDevice-Id: {self.device_id}\n"
        _write_private(Path(path), header + _pem_private(self._key))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DeviceIdentity:
        path = Path(path)
        text = read_private_bytes(path, "device identity").decode()
        begin = text.find("-----BEGIN")
        if begin < 0:
            raise ValueError(
                f"{path} holds no PEM private key; regenerate it with DeviceIdentity.generate(...).save()"
            )
        fields = dict(line.split(": ", 1) for line in text[:begin].splitlines() if ": " in line)
        if "Tenant-Id" not in fields or "Device-Id" not in fields:
            raise ValueError(
                f"{path} lacks the Tenant-Id/Device-Id header lines written by DeviceIdentity.save()"
            )
        return cls(fields["Tenant-Id"], fields["Device-Id"], _load_private_pem(text, path))

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def public_key_bytes(self) -> bytes:
        return _raw_public(self._key)

    @property
    def key_id(self) -> str:
        return key_fingerprint(self.public_key_bytes())

    def __repr__(self) -> str:
        return f"DeviceIdentity(tenant_id={self.tenant_id!r}, device_id={self.device_id!r}, key_id={self.key_id!r})"


@runtime_checkable
class DeviceRegistry(Protocol):
    """The central record of which public keys may sign for a device."""

    def register(self, tenant_id: str, device_id: str, public_key: bytes) -> str:
        """Add a public key (raw 32 bytes) for the device; returns its key id. Idempotent."""
        ...

    def revoke(self, tenant_id: str, device_id: str, key_id: str) -> None:
        """Stop accepting signatures by this key."""
        ...

    def public_keys(self, tenant_id: str, device_id: str) -> list[tuple[str, bytes]]:
        """The device's active keys as (key_id, raw public key); empty for an unknown device."""
        ...


class LocalDeviceRegistry:
    """A file-based :class:`DeviceRegistry`: ``<dir>/<tenant>.json`` per tenant.

    Changes happen under a per-tenant ``flock`` and an atomic rename, so several local
    processes (sensors, runs, the CLI) can share one registry.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._thread_lock = threading.Lock()
        # tenant -> (file identity, active keys per device): an ingest looks up every device of
        # a tenant, and parsing the whole file per lookup made that quadratic in the fleet size.
        self._active: dict[str, tuple[tuple[int, int, int], dict[str, list[tuple[str, bytes]]]]] = {}

    @contextlib.contextmanager
    def _lock(self, tenant_id: str) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._thread_lock:
            fd = os.open(
                self.directory / f".{validate_id('tenant', tenant_id)}.lock", os.O_RDWR | os.O_CREAT, 0o600
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def register(self, tenant_id: str, device_id: str, public_key: bytes) -> str:
        return self.register_many([(tenant_id, device_id, public_key)])[0]

    def register_many(self, keys: Iterable[tuple[str, str, bytes]]) -> list[str]:
        """Register (tenant, device, raw public key) triples; one locked write per tenant. Idempotent.

        ``register`` one by one rewrites the tenant's file per key: enrolling a fleet at once
        goes through here.
        """
        by_tenant: dict[str, list[tuple[str, str, bytes]]] = {}
        key_ids = []
        for tenant_id, device_id, public_key in keys:
            validate_id("device", device_id)
            key_ids.append(key_fingerprint(bytes(public_key)))
            by_tenant.setdefault(tenant_id, []).append((device_id, key_ids[-1], bytes(public_key)))
        now_ms = time.time_ns() // 1_000_000
        for tenant_id, entries in sorted(by_tenant.items()):
            with self._lock(tenant_id):
                doc = self._load(tenant_id)
                changed = False
                for device_id, key_id, public_key in entries:
                    held = doc["devices"].setdefault(device_id, {})
                    entry = held.get(key_id)
                    if entry is None or entry.get("revoked_ms") is not None:
                        held[key_id] = {
                            "public_key": base64.b64encode(public_key).decode("ascii"),
                            "registered_ms": now_ms,
                            "revoked_ms": None,
                        }
                        changed = True
                if changed:
                    self._store(tenant_id, doc)
        return key_ids

    def revoke(self, tenant_id: str, device_id: str, key_id: str) -> None:
        validate_id("device", device_id)
        with self._lock(tenant_id):
            doc = self._load(tenant_id)
            entry = doc["devices"].get(device_id, {}).get(key_id)
            if entry is None:
                raise KeyError(f"device {tenant_id}/{device_id} has no key {key_id!r}; nothing to revoke")
            entry["revoked_ms"] = time.time_ns() // 1_000_000
            self._store(tenant_id, doc)

    def public_keys(self, tenant_id: str, device_id: str) -> list[tuple[str, bytes]]:
        validate_id("device", device_id)
        return list(self._active_keys(tenant_id).get(device_id, []))

    def _active_keys(self, tenant_id: str) -> dict[str, list[tuple[str, bytes]]]:
        """Every device's active keys, parsed once per version of the tenant's file.

        Every change is a rename of a new file (``_store``), so (inode, mtime, size) changes
        with it: a revocation is seen by the next lookup, in this process or another.
        """
        path = self._path(tenant_id)
        try:
            st = path.stat()
            version = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            version = (0, 0, 0)
        hit = self._active.get(tenant_id)
        if hit is not None and hit[0] == version:
            return hit[1]
        active = {
            device: [
                (kid, base64.b64decode(e["public_key"]))
                for kid, e in sorted(keys.items())
                if e.get("revoked_ms") is None
            ]
            for device, keys in self._load(tenant_id)["devices"].items()
        }
        self._active[tenant_id] = (version, active)
        return active

    def _path(self, tenant_id: str) -> Path:
        return self.directory / f"{validate_id('tenant', tenant_id)}.json"

    def _load(self, tenant_id: str) -> dict:
        path = self._path(tenant_id)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return {"tenant_id": tenant_id, "devices": {}}
        if doc.get("tenant_id") != tenant_id:
            raise ValueError(
                f"registry file {path} belongs to tenant {doc.get('tenant_id')!r}, not {tenant_id!r}"
            )
        return doc

    def _store(self, tenant_id: str, doc: dict) -> None:
        path = self._path(tenant_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, sort_keys=True, indent=1))
        os.replace(tmp, path)


class PlatformSigner:
    """The platform's Ed25519 key for downlink documents (desired state, rollout decisions)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def generate(cls) -> PlatformSigner:
        return cls(Ed25519PrivateKey.generate())

    def save(self, path: str | os.PathLike[str]) -> None:
        _write_private(Path(path), _pem_private(self._key))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PlatformSigner:
        path = Path(path)
        return cls(_load_private_pem(read_private_bytes(path, "platform signing key").decode(), path))

    def public_key_bytes(self) -> bytes:
        return _raw_public(self._key)

    @property
    def key_id(self) -> str:
        return key_fingerprint(self.public_key_bytes())

    def sign_document(self, document: dict) -> dict:
        """Wrap ``document`` as ``{"document", "key_id", "signature"}`` signed over its canonical JSON."""
        if not isinstance(document, dict):
            raise TypeError(f"sign_document needs a dict, got {type(document).__name__}")
        signature = self._key.sign(canonical_json(document))
        return {
            "document": document,
            "key_id": self.key_id,
            "signature": base64.b64encode(signature).decode("ascii"),
        }

    @staticmethod
    def verify_document(signed: dict, public_key: bytes | list[bytes]) -> dict:
        return verify_document(signed, public_key)


def verify_document(signed: dict, public_key: bytes | list[bytes]) -> dict:
    """The document inside ``signed`` if one of the given raw public keys signed it; else :class:`SignatureError`."""
    if not isinstance(signed, dict) or not {"document", "signature"} <= signed.keys():
        raise SignatureError(
            "not a signed document: expected keys 'document' and 'signature' (from sign_document)"
        )
    document = signed["document"]
    if not isinstance(document, dict):
        raise SignatureError("signed document body is not a JSON object")
    try:
        signature = base64.b64decode(signed["signature"], validate=True)
    except (ValueError, TypeError):
        raise SignatureError("document signature is not valid base64") from None
    try:
        data = canonical_json(document)
    except ValueError as exc:
        raise SignatureError(f"document is not canonical JSON ({exc})") from None
    keys = [public_key] if isinstance(public_key, bytes | bytearray) else list(public_key)
    if not any(verify_signature(bytes(k), signature, data) for k in keys):
        raise SignatureError(
            f"document signature (key_id {signed.get('key_id')!r}) does not verify against "
            f"{len(keys)} platform key(s): the document was altered or signed by another key"
        )
    return document
