"""The device agent's configuration file (``device.toml``): the pydantic model and its loaders.

See ``edge_sync/packaging/device.example.toml`` for a commented example. Relative paths
are resolved against the folder of the config file. ``load_config`` raises
``ConfigError`` whose message names every bad field (as a dotted path) and the fix. The
functions at the end turn a config into the agent's parts (cache key, identity, platform
key, key service, rules), with errors that name the field to fix.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_sync.identity import DeviceIdentity
from edge_sync.ids import THING_NAME_PATTERN, validate_id
from edge_sync.keys import KeyService, LocalKeyring
from edge_sync.live_publisher import LiveConfig
from edge_sync.private_files import InsecureFileError, private_dir, read_private_bytes
from edge_sync.rules import RulesError, RuleSet, default_rules, load_rules

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """``device.toml`` is missing, not TOML, or has invalid fields (each named in the message)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CacheKeyConfig(_Section):
    """Where the 32-byte cache encryption key comes from: a local key file or a Vault KV secret.

    ``file``: ``path`` holds the key as 32 raw bytes, 64 hex characters or base64.
    ``vault``: the KV v2 secret ``secret_path`` field ``field`` holds it (hex or base64);
    ``runtime_copy`` (a tmpfs path) keeps a copy so the agent can start while Vault is down.
    """

    source: Literal["file", "vault"] = "file"
    path: Path | None = None
    secret_path: str | None = None
    field: str = "cache_key"
    runtime_copy: Path | None = None

    @model_validator(mode="after")
    def _needs(self) -> CacheKeyConfig:
        if self.source == "file" and self.path is None:
            raise ValueError("source 'file' needs path = \"/etc/edge-sync/cache.key\" (32-byte key file)")
        if self.source == "vault" and not self.secret_path:
            raise ValueError("source 'vault' needs secret_path = \"devices/<device-id>\" (a KV v2 secret)")
        return self


class KeysConfig(_Section):
    """The key service for batch data keys: a local keyring folder or Vault transit."""

    source: Literal["local", "vault"] = "local"
    keyring_dir: Path | None = None
    transit_mount: str = "transit"

    @model_validator(mode="after")
    def _needs(self) -> KeysConfig:
        if self.source == "local" and self.keyring_dir is None:
            raise ValueError("source 'local' needs keyring_dir = \"/etc/edge-sync/keyring\"")
        return self


class VaultConfig(_Section):
    """Vault (or OpenBao) AppRole login for the device; secret id and role id are read from files."""

    addr: str
    role_id_path: Path
    secret_id_path: Path
    verify: bool | str = True
    timeout_s: float = Field(default=10.0, gt=0)


class IotCredentialsConfig(_Section):
    """The AWS IoT credentials provider (``object_store.credentials = "iot"``, see docs/security.md).

    ``endpoint``: ``aws iot describe-endpoint --endpoint-type iot:CredentialProvider``;
    ``role_alias``: the tenant's alias (``edgeplat-d-<tenant>``); ``cert_path``/``key_path``:
    the device certificate registered with AWS IoT and attached to the thing named like the
    device; ``ca_path``: the CA of the endpoint (Amazon Root CA 1; the system store if unset).
    Credentials are fetched again ``refresh_before_s`` before they expire.
    """

    endpoint: str
    role_alias: str = Field(pattern=r"^[\w=,@-]{1,128}$")
    cert_path: Path
    key_path: Path
    ca_path: Path | None = None
    refresh_before_s: float = Field(default=300.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)


class ObjectStoreConfig(_Section):
    """``url``: ``s3://bucket/prefix``, ``file:///path`` or a plain path; ``options`` go to the backend.

    ``credentials = "vault"``: the S3 URL and a key that can only reach this tenant's prefix
    come from the tenant's KV v2 secret ``tenants/<T>/shared/objectstore`` (provisioned with
    ``edgeplat security provision-storage``), rendered 0600 into ``runtime_dir`` (a tmpfs
    path) and re-read before every sync, so a rotated key is picked up; ``url`` is not used.

    ``credentials = "iot"``: temporary credentials of the tenant's device role from the AWS
    IoT credentials provider (``[object_store.iot]``), which reach only this device's prefix
    of ``url`` (an ``s3://`` URL).
    """

    url: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    credentials: Literal["config", "vault", "iot"] = "config"
    runtime_dir: Path | None = None
    iot: IotCredentialsConfig | None = None

    @model_validator(mode="after")
    def _source(self) -> ObjectStoreConfig:
        if self.credentials == "iot" and (self.iot is None or not (self.url or "").startswith("s3://")):
            raise ValueError(
                'credentials = "iot" needs url = "s3://bucket/prefix" and an [object_store.iot] section '
                "with endpoint, role_alias, cert_path and key_path"
            )
        if self.credentials == "config" and not self.url:
            raise ValueError('needs url = "s3://bucket/prefix" or a folder (or credentials = "vault")')
        if self.credentials == "vault" and self.runtime_dir is None:
            raise ValueError(
                'credentials = "vault" needs runtime_dir = "/run/edge-sync" (where the credential is rendered)'
            )
        return self


class DurabilityConfig(_Section):
    max_rows: int = Field(default=10_000, ge=1)
    max_ms: int = Field(default=1000, ge=0)


class BandwidthConfig(_Section):
    """0 means unlimited."""

    bytes_per_second: int = Field(default=0, ge=0)
    burst_bytes: int = Field(default=0, ge=0)
    bytes_per_sync: int = Field(default=0, ge=0)


class InstallConfig(_Section):
    """The A/B slot installer (``edge_sync.slot_installer``): releases go into ``root``.

    Without this section the agent only records the release it was asked to run (devices
    whose software Greengrass or IoT Edge deploys). Downloads share ``[bandwidth]``.
    """

    root: Path
    min_free_bytes: int = Field(default=64 * 1024 * 1024, ge=0)  # kept free after an install
    chunk_bytes: int = Field(default=1024 * 1024, ge=4096)  # one ranged read; the resume granularity


class UploadConfig(_Section):
    max_rows_per_batch: int = Field(default=5000, ge=1)
    max_span_s: int = Field(default=3600, ge=1)


class AgentConfig(_Section):
    """One device's ``device.toml``."""

    tenant_id: str
    device_id: str
    cache_path: Path
    identity_path: Path
    platform_public_key_path: Path
    object_store: ObjectStoreConfig
    cache_key: CacheKeyConfig
    keys: KeysConfig = Field(default_factory=lambda: KeysConfig(source="vault"))
    vault: VaultConfig | None = None
    max_cache_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    durability: DurabilityConfig = Field(default_factory=DurabilityConfig)
    bandwidth: BandwidthConfig = Field(default_factory=BandwidthConfig)
    upload: UploadConfig = Field(default_factory=UploadConfig)
    install: InstallConfig | None = None
    sync_interval_s: float = Field(default=60.0, gt=0)
    max_backoff_s: float = Field(default=600.0, gt=0)
    socket_path: Path | None = None
    rules_path: Path | None = None
    live: LiveConfig | None = None  # the MQTT live path (edge_sync/live_publisher.py); off when absent
    # What the device is enrolled as (the central inventory's edge_agent claim, in every manifest)
    platform: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$")
    tags: dict[str, str] = Field(default_factory=dict, max_length=32)

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, v: str) -> str:
        return validate_id("tenant", v)

    @field_validator("device_id")
    @classmethod
    def _device(cls, v: str) -> str:
        return validate_id("device", v)

    @model_validator(mode="after")
    def _vault_needed(self) -> AgentConfig:
        uses = [
            name
            for name, on in (
                ("keys.source", self.keys.source == "vault"),
                ("cache_key.source", self.cache_key.source == "vault"),
                ("object_store.credentials", self.object_store.credentials == "vault"),
                ("live.credentials", self.live is not None and self.live.credentials == "vault"),
            )
            if on
        ]
        if self.object_store.credentials == "iot" and not THING_NAME_PATTERN.fullmatch(self.device_id):
            raise ValueError(
                f"object_store.credentials = 'iot' needs a device id that is an AWS IoT thing name "
                f"([a-zA-Z0-9:_-], no '.'); {self.device_id!r} is not: the thing is named like the device"
            )
        if uses and self.vault is None:
            raise ValueError(
                f"{' and '.join(uses)} = 'vault' needs a [vault] section with addr, role_id_path and "
                "secret_id_path (or use keys.source = 'local' with keyring_dir)"
            )
        return self

    def resolve(self, base: Path) -> AgentConfig:
        """A copy with every relative path made absolute against ``base`` (the config file's folder)."""

        def fix(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p))

        data = self.model_copy(deep=True)
        for name in ("cache_path", "identity_path", "platform_public_key_path", "socket_path", "rules_path"):
            setattr(data, name, fix(getattr(data, name)))
        data.cache_key.path = fix(data.cache_key.path)
        data.cache_key.runtime_copy = fix(data.cache_key.runtime_copy)
        data.keys.keyring_dir = fix(data.keys.keyring_dir)
        if data.vault is not None:
            data.vault.role_id_path = fix(data.vault.role_id_path)
            data.vault.secret_id_path = fix(data.vault.secret_id_path)
        url = data.object_store.url
        if url and "://" not in url and not Path(url).is_absolute():
            data.object_store.url = str(base / url)
        data.object_store.runtime_dir = fix(data.object_store.runtime_dir)
        if data.object_store.iot is not None:
            for name in ("cert_path", "key_path", "ca_path"):
                setattr(data.object_store.iot, name, fix(getattr(data.object_store.iot, name)))
        if data.live is not None:
            for name in ("ca_path", "cert_path", "key_path", "password_path", "runtime_dir"):
                setattr(data.live, name, fix(getattr(data.live, name)))
        if data.install is not None:
            data.install.root = fix(data.install.root)
        return data


_FIXES = {
    "missing": "add it (see edge_sync/packaging/device.example.toml)",
    "extra_forbidden": "remove it (unknown field; check the spelling against device.example.toml)",
}


def _format(exc: ValidationError, source: str) -> str:
    lines = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        fix = _FIXES.get(e["type"])
        lines.append(f"{loc}: {msg}" + (f" -> {fix}" if fix else ""))
    return f"invalid config {source}:\n  " + "\n  ".join(lines)


def parse_config(
    data: dict[str, Any], *, source: str = "device.toml", base: Path | None = None
) -> AgentConfig:
    """Validate a parsed config document; relative paths resolve against ``base``."""
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, source)) from None
    return config.resolve(base or Path.cwd())


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and validate ``device.toml``."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {p} does not exist; copy edge_sync/packaging/device.example.toml and edit it"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    return parse_config(data, source=str(p), base=p.resolve().parent)


def decode_key_text(raw: bytes, what: str, size: int = 32) -> bytes:
    """A key given as ``size`` raw bytes, hex text or base64 text; ``ConfigError`` naming ``what`` otherwise."""
    if len(raw) == size:
        return raw
    text = raw.strip().decode("ascii", errors="replace")
    candidates = []
    with contextlib.suppress(ValueError):
        candidates.append(bytes.fromhex(text))
    with contextlib.suppress(ValueError):
        candidates.append(base64.b64decode(text, validate=True))
    for c in candidates:
        if len(c) == size:
            return c
    raise ConfigError(
        f"{what} must be a {size}-byte key as raw bytes, {2 * size} hex characters or base64; "
        f"got {len(raw)} bytes that decode to none of these"
    )


# ----------------------------------------------------------------------------- parts from the config
def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The platform's raw Ed25519 public key from a file: 32 raw bytes, hex, base64 or a PEM public key."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"platform_public_key_path: {p} does not exist; provision the platform public key there"
        ) from None
    if raw.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(raw)
        except ValueError as exc:
            raise ConfigError(f"platform_public_key_path: {p} is not a valid PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(
                f"platform_public_key_path: {p} holds a {type(key).__name__}, not an Ed25519 key"
            )
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return decode_key_text(raw, f"platform_public_key_path ({p})")


def device_identity(config: AgentConfig) -> DeviceIdentity:
    """The device's signing identity; it must belong to the configured tenant and device."""
    try:
        identity = DeviceIdentity.load(config.identity_path)
    except FileNotFoundError:
        raise ConfigError(
            f"identity_path: {config.identity_path} does not exist; enrol the device "
            "(DeviceIdentity.generate(...).save(path)) and register its public key"
        ) from None
    except InsecureFileError as exc:
        raise ConfigError(str(exc)) from None
    if (identity.tenant_id, identity.device_id) != (config.tenant_id, config.device_id):
        raise ConfigError(
            f"identity_path: {config.identity_path} is the identity of {identity.tenant_id}/{identity.device_id}, "
            f"not of tenant_id/device_id {config.tenant_id}/{config.device_id}: fix one of them"
        )
    return identity


def vault_session(config: AgentConfig) -> Any:
    """A ``VaultSession`` for the [vault] section (hvac is imported only here)."""
    from edge_sync.vault import VaultSession

    v = config.vault
    assert v is not None
    try:
        role_id = read_private_bytes(v.role_id_path, "vault.role_id_path").decode().strip()
        secret_id = read_private_bytes(v.secret_id_path, "vault.secret_id_path").decode().strip()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"vault: {exc.filename} does not exist; write the device's AppRole credentials there"
        ) from None
    except InsecureFileError as exc:
        raise ConfigError(str(exc)) from None
    # the session writes the secret ids it renews back to the same file
    return VaultSession(
        v.addr, role_id, secret_id, verify=v.verify, timeout=v.timeout_s, secret_id_path=v.secret_id_path
    )


def cache_key(config: AgentConfig, vault: Any) -> bytes:
    """The 32-byte cache key from the key file, or from Vault (falling back to its runtime copy)."""
    ck = config.cache_key
    if ck.source == "file":
        assert ck.path is not None
        try:
            return decode_key_text(
                read_private_bytes(ck.path, "cache_key.path"), f"cache_key.path ({ck.path})"
            )
        except FileNotFoundError:
            raise ConfigError(
                f"cache_key.path: {ck.path} does not exist; provision the device's cache key"
            ) from None
        except InsecureFileError as exc:
            raise ConfigError(str(exc)) from None
    from edge_sync.vault import VaultUnavailable

    try:
        secret = vault.read_secret(ck.secret_path)
    except VaultUnavailable:
        if ck.runtime_copy is not None and ck.runtime_copy.exists():
            log.warning("Vault unreachable: opening the cache with the runtime copy of its key")
            return decode_key_text(
                read_private_bytes(ck.runtime_copy, "cache_key.runtime_copy"),
                f"cache_key.runtime_copy ({ck.runtime_copy})",
            )
        raise
    if ck.field not in secret:
        raise ConfigError(
            f"cache_key.field: secret {ck.secret_path!r} has no field {ck.field!r} (has {sorted(secret)})"
        )
    key = decode_key_text(str(secret[ck.field]).encode(), f"cache_key (vault {ck.secret_path}#{ck.field})")
    if ck.runtime_copy is not None:
        private_dir(ck.runtime_copy.parent)
        fd = os.open(ck.runtime_copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        with os.fdopen(fd, "wb") as f:
            f.write(key.hex().encode())
    return key


def key_service(config: AgentConfig, vault: Any) -> KeyService:
    """The batch data-key service: the local keyring or Vault transit."""
    if config.keys.source == "local":
        assert config.keys.keyring_dir is not None
        return LocalKeyring(config.keys.keyring_dir)
    from edge_sync.vault_keys import VaultTransitKeyService

    return VaultTransitKeyService(vault, mount=config.keys.transit_mount)


def state_rules(path: Path | None) -> RuleSet:
    """The state conflict rules: ``path`` (``rules_path``), else the file edge_sync ships.

    The device merges central edits as the platform merges its edits, so a missing or
    unreadable rules file is an error naming the file and the fix, never a quiet fallback.
    """
    try:
        return load_rules(path) if path is not None else default_rules()
    except RulesError as exc:
        raise ConfigError(f"rules_path: {exc}" if path is not None else str(exc)) from None


def iot_store(config: AgentConfig) -> Any:
    """The S3 store signing with IoT credentials-provider credentials (``object_store.credentials = "iot"``).

    Nothing is fetched here: the first request fetches, so an agent starts and records offline.
    """
    from edge_sync.iot_credentials import IotCredentialSource, IotCredentialsProvider

    iot, url = config.object_store.iot, config.object_store.url
    assert iot is not None and url is not None
    try:
        provider = IotCredentialsProvider(
            iot.endpoint,
            iot.role_alias,
            config.device_id,
            cert_path=iot.cert_path,
            key_path=iot.key_path,
            ca_path=iot.ca_path,
            timeout_s=iot.timeout_s,
        )
    except ValueError as exc:
        raise ConfigError(f"object_store.iot: {exc}") from None
    return IotCredentialSource(provider, iot.refresh_before_s).store(url, **config.object_store.options)
