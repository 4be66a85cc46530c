"""The signed release manifest: which artifacts make a release and how to check it runs.

A desired-state document names a release by version only; what that version *is* lives in
one manifest per tenant and version, signed by the platform key (the same Ed25519 signer and
canonical JSON as desired state), at ``tenant=<T>/releases/<version>/release.json`` in the
object store the device already reads. Like a Greengrass component recipe or a Mender
artifact header, it lists each artifact with its URL, size and SHA-256, so a device installs
only bytes the platform signed for, wherever they were fetched from: ``store:<key>`` (a key
in the device's own object store) or ``https://`` (``http://`` is accepted too: the digest in
the signed manifest, not the transport, is what makes the bytes trusted).

``health_check`` is the command (an argv list, never a shell line) the agent runs in the
newly activated slot; ``probation_s`` is how long the release must stay healthy before it is
committed; ``max_restarts`` is how many agent restarts during probation count as a crash loop.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_sync.identity import PlatformSigner, SignatureError, verify_document
from edge_sync.ids import validate_id
from edge_sync.json_bounded import loads as bounded_loads
from edge_sync.objectstore import validate_key

FORMAT = 1
MAX_MANIFEST_BYTES = 256 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ManifestError(ValueError):
    """A release manifest that must not be installed; ``reason`` is machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Artifact(BaseModel):
    """One file of a release: where to fetch it, how big it is, its digest, whether to unpack it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # file name inside the slot
    url: str  # store:<key> | https://... | http://...
    size: int = Field(ge=0)
    sha256: str
    unpack: bool = False  # a .tar / .tar.gz extracted into the slot (safe members only)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not _NAME.match(v) or v in ("release.json",) or v.startswith(".installed"):
            raise ValueError(f"artifact name {v!r} must be a plain file name (letters, digits, . _ -)")
        return v

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, v: str) -> str:
        if not _SHA256.match(v):
            raise ValueError(f"sha256 {v!r} is not 64 lower-case hex digits")
        return v

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if v.startswith("store:"):
            validate_key(v.removeprefix("store:"))
        elif not v.startswith(("https://", "http://")):
            raise ValueError(f"artifact url {v!r} must be store:<key>, https://... or http://...")
        return v


class HealthCheck(BaseModel):
    """The command that says whether the activated release works (exit 0: healthy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)


class ReleaseManifest(BaseModel):
    """What one version of the application is, for one tenant (see module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = FORMAT
    tenant_id: str
    version: str
    artifacts: list[Artifact] = Field(min_length=1)
    health_check: HealthCheck | None = None
    probation_s: float = Field(default=300.0, ge=0)
    max_restarts: int = Field(default=3, ge=0)

    @property
    def total_bytes(self) -> int:
        return sum(a.size for a in self.artifacts)


def manifest_key(tenant_id: str, version: str) -> str:
    """Where the manifest of ``version`` lives in the tenant's object store."""
    key = f"tenant={validate_id('tenant', tenant_id)}/releases/{version}/release.json"
    try:
        return validate_key(key)
    except ValueError as exc:
        raise ValueError(f"release version {version!r} cannot name an object key: {exc}") from None


def encode(manifest: ReleaseManifest, signer: PlatformSigner) -> bytes:
    return json.dumps(signer.sign_document(manifest.model_dump(mode="json")), sort_keys=True).encode()


def decode(
    data: bytes, *, platform_keys: bytes | list[bytes], tenant_id: str, version: str
) -> ReleaseManifest:
    """Verify and parse the manifest of ``version`` for ``tenant_id``; :class:`ManifestError` otherwise."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError("oversized", f"release manifest is {len(data)} bytes, over {MAX_MANIFEST_BYTES}")
    try:
        signed: Any = bounded_loads(data)
    except ValueError as exc:
        raise ManifestError("bad_json", f"release manifest is not JSON: {exc}") from exc
    if not isinstance(signed, dict):
        raise ManifestError("bad_json", "release manifest is not a JSON object")
    try:
        body = verify_document(signed, platform_keys)
    except SignatureError as exc:
        raise ManifestError("bad_signature", f"release manifest signature does not verify: {exc}") from exc
    try:
        manifest = ReleaseManifest.model_validate(body)
    except ValueError as exc:
        raise ManifestError("bad_manifest", f"release manifest is malformed: {exc}") from exc
    if (manifest.tenant_id, manifest.version) != (tenant_id, version):
        raise ManifestError(
            "wrong_release",
            f"release manifest is for {manifest.tenant_id}/{manifest.version}, not {tenant_id}/{version}",
        )
    names = [a.name for a in manifest.artifacts]
    if len(set(names)) != len(names):
        raise ManifestError("bad_manifest", f"release manifest names an artifact twice: {names}")
    return manifest
