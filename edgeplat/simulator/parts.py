"""The platform pieces a simulation writes through, and how a simulated device is provisioned.

:class:`Parts` bundles the object store, key service, device registry and platform signer
(the embedded default comes from ``edgeplat.settings.paths()``). :func:`provision`
enrols one device the way a real one is enrolled: an Ed25519 identity registered under
(tenant, device) and saved under ``<devices>/<tenant>/<device>/identity.pem``, next to the
encrypted cache file ``cache.duckdb``.

Cache key: never stored beside the database. Each device has a 32-byte secret in the
keyring directory (``<keys>/device-secrets/<tenant>/<device>.secret``, mode 0600); the
cache key is HKDF-SHA256 of that secret with the info ``edgeplat-sim cache key v1
<tenant>/<device>``. Taking the keyring directory away (as a real device keeps its key in
a TPM or Vault) leaves the cache files unreadable; the derivation keeps the secret usable
for other per-device keys without ever using it twice.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge_sync.identity import DeviceIdentity, LocalDeviceRegistry, PlatformSigner
from edge_sync.keys import KeyService, LocalKeyring
from edge_sync.objectstore import LocalObjectStore, ObjectStore
from edge_sync.private_files import private_dir, read_private_bytes
from edgeplat.desired_records import DesiredRecords, LakehouseDesiredRecords
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.settings import Paths, paths

SECRET_BYTES = 32


@dataclass(frozen=True)
class LocalPartsSpec:
    """Directories that rebuild the local parts in another process (simulation workers)."""

    objects_root: str
    objects_fsync: bool
    keys_dir: str
    registry_dir: str
    signer_path: str
    devices_dir: str
    lake_catalog: str
    lake_data: str

    def build(self) -> Parts:
        return Parts(
            desired_records=LakehouseDesiredRecords(
                Lakehouse(LakehouseConfig(self.lake_catalog, self.lake_data))
            ),
            store=LocalObjectStore(self.objects_root, fsync=self.objects_fsync),
            keyring=LocalKeyring(self.keys_dir),
            registry=LocalDeviceRegistry(self.registry_dir),
            signer=PlatformSigner.load(self.signer_path),
            devices_dir=Path(self.devices_dir),
            keys_dir=Path(self.keys_dir),
            signer_path=Path(self.signer_path),
        )


@dataclass
class Parts:
    """What the simulated devices and the simulated central side use."""

    store: ObjectStore
    keyring: KeyService
    registry: LocalDeviceRegistry
    signer: PlatformSigner
    devices_dir: Path
    keys_dir: Path  # where per-device cache secrets live (the keyring directory by default)
    signer_path: Path | None = None
    # the central publisher's record of what it signed (simulated central edits and releases)
    desired_records: DesiredRecords | None = None

    @property
    def spec(self) -> LocalPartsSpec | None:
        """A spec that rebuilds these parts elsewhere, or None when they are not all local."""
        if not (
            isinstance(self.store, LocalObjectStore)
            and isinstance(self.keyring, LocalKeyring)
            and isinstance(self.registry, LocalDeviceRegistry)
            and self.signer_path is not None
            and isinstance(self.desired_records, LakehouseDesiredRecords)
            and self.desired_records.lake.config.s3 is None
        ):
            return None
        return LocalPartsSpec(
            objects_root=str(self.store.root),
            objects_fsync=self.store.fsync,
            keys_dir=str(self.keyring.directory),
            registry_dir=str(self.registry.directory),
            signer_path=str(self.signer_path),
            devices_dir=str(self.devices_dir),
            lake_catalog=self.desired_records.lake.config.catalog,
            lake_data=self.desired_records.lake.config.data_path,
        )


def load_or_create_signer(path: Path) -> PlatformSigner:
    """The platform signer at ``path``, created (mode 0600) on first use."""
    if path.exists():
        return PlatformSigner.load(path)
    private_dir(path.parent)
    signer = PlatformSigner.generate()
    signer.save(path)
    return signer


def default_parts(
    home: str | os.PathLike[str] | None = None,
    *,
    store: ObjectStore | None = None,
    keyring: KeyService | None = None,
    registry: LocalDeviceRegistry | None = None,
    signer: PlatformSigner | None = None,
    desired_records: DesiredRecords | None = None,
    fsync: bool = False,
) -> Parts:
    """The embedded default setup under ``home`` (default ``paths()``); any given part replaces its default.

    The default local store skips fsync: a simulation tests the protocol, not the disk (pass
    ``store=`` for a durable one).
    """
    p = Paths(Path(home).expanduser().resolve()) if home is not None else paths()
    p.objects.mkdir(parents=True, exist_ok=True)
    for d in (p.keys, p.devices):  # private keys, identities and cache secrets live below these
        private_dir(d, tighten=True)
    signer_path = None
    if signer is None:
        signer_path = p.keys / "platform.pem"
        signer = load_or_create_signer(signer_path)
    return Parts(
        store=store or LocalObjectStore(p.objects, fsync=fsync),
        keyring=keyring or LocalKeyring(p.keys),
        registry=registry or LocalDeviceRegistry(p.devices / "registry"),
        signer=signer,
        devices_dir=p.devices,
        keys_dir=Path(keyring.directory) if isinstance(keyring, LocalKeyring) else p.keys,
        signer_path=signer_path,
        desired_records=desired_records or local_desired_records(p),
    )


def local_desired_records(p: Paths) -> LakehouseDesiredRecords:
    """The publisher's records in the embedded lakehouse under the state directory ``p``."""
    return LakehouseDesiredRecords(Lakehouse(LakehouseConfig(f"sqlite:{p.catalog}", f"{p.lake_data}/")))


@dataclass(frozen=True)
class DeviceFiles:
    """Where one device's files are: identity and cache under the devices dir, secret in the keyring dir."""

    directory: Path
    identity: Path
    cache: Path
    secret: Path


def device_files(parts: Parts, tenant_id: str, device_id: str) -> DeviceFiles:
    d = parts.devices_dir / tenant_id / device_id
    return DeviceFiles(
        d,
        d / "identity.pem",
        d / "cache.duckdb",
        parts.keys_dir / "device-secrets" / tenant_id / f"{device_id}.secret",
    )


def cache_key(secret: bytes, tenant_id: str, device_id: str) -> bytes:
    """The device's 32-byte cache key, derived from its secret (see the module doc)."""
    info = f"edgeplat-sim cache key v1 {tenant_id}/{device_id}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _write_secret(path: Path) -> bytes:
    private_dir(path.parent)
    secret = secrets.token_bytes(SECRET_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret.hex().encode())
    return secret


def provision(parts: Parts, tenant_id: str, device_id: str) -> tuple[DeviceIdentity, bytes]:
    """Enrol a device (identity, registry entry, cache secret) or load an enrolled one.

    Returns the identity and the cache key. Refuses a device whose cache exists from an
    earlier run: its seqs would continue, and its rows would not match a fresh ground truth.
    """
    files = device_files(parts, tenant_id, device_id)
    if files.cache.exists():
        raise FileExistsError(
            f"simulated device {tenant_id}/{device_id} already has a cache at {files.cache} from an earlier "
            "run; simulate into a fresh EDGEPLAT_HOME (or home=) so seqs and ground truth start together"
        )
    private_dir(files.directory)
    identity = DeviceIdentity.generate(tenant_id, device_id)
    identity.save(files.identity)
    parts.registry.register(tenant_id, device_id, identity.public_key_bytes())
    secret = _write_secret(files.secret)
    return identity, cache_key(secret, tenant_id, device_id)


def load_device(parts: Parts, tenant_id: str, device_id: str) -> tuple[DeviceIdentity, bytes]:
    """The identity and cache key of a provisioned device (a worker process reopening it)."""
    files = device_files(parts, tenant_id, device_id)
    secret = bytes.fromhex(read_private_bytes(files.secret, "simulated device cache secret").decode().strip())
    return DeviceIdentity.load(files.identity), cache_key(secret, tenant_id, device_id)
