"""Publish a release for edge agents: its artifacts and the manifest the platform key signs.

The edge agent's slot installer (``edge_sync.slot_installer``) installs a version only from a
manifest signed by the platform key, at ``tenant=<T>/releases/<version>/release.json`` in the
tenant's object store (``edge_sync.release_manifest``). This writes it: each artifact is hashed
and either uploaded beside the manifest (the device then fetches it with its own store
credentials, ``store:<key>``) or named by an HTTPS URL where it already lives (a CDN, a
registry) with its size and digest taken from the local copy. A version is published once:
a different manifest for a version that exists is refused, since devices may be running it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_sync.identity import PlatformSigner
from edge_sync.objectstore import ObjectNotFound, ObjectStore
from edge_sync.release_manifest import (
    Artifact,
    HealthCheck,
    ManifestError,
    ReleaseManifest,
    decode,
    encode,
    manifest_key,
)

log = logging.getLogger(__name__)


class ReleaseExists(ValueError):
    """The version is already published with other contents; publish a new version instead."""


@dataclass(frozen=True)
class ArtifactFile:
    """A local file to publish: uploaded to the store, or already served at ``url`` (https)."""

    path: Path
    unpack: bool = False
    url: str | None = None


def publish_release(
    store: ObjectStore,
    signer: PlatformSigner,
    tenant_id: str,
    version: str,
    files: Sequence[ArtifactFile],
    *,
    health_check: Sequence[str] | None = None,
    health_timeout_s: float = 30.0,
    probation_s: float = 300.0,
    max_restarts: int = 3,
) -> ReleaseManifest:
    """Upload the artifacts and the signed manifest of ``version`` for ``tenant_id``; returns the manifest."""
    key = manifest_key(tenant_id, version)
    artifacts, uploads = [], []
    for f in files:
        data = f.path.read_bytes()
        if f.url is None:
            artifact_key = f"{key.rsplit('/', 1)[0]}/{f.path.name}"
            url = f"store:{artifact_key}"
            uploads.append((artifact_key, data))
        else:
            url = f.url
        artifacts.append(
            Artifact(
                name=f.path.name,
                url=url,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                unpack=f.unpack,
            )
        )
    manifest = ReleaseManifest(
        tenant_id=tenant_id,
        version=version,
        artifacts=artifacts,
        health_check=HealthCheck(command=list(health_check), timeout_s=health_timeout_s)
        if health_check
        else None,
        probation_s=probation_s,
        max_restarts=max_restarts,
    )
    existing = _published(store, signer, tenant_id, version)
    if existing is not None:
        if existing == manifest:
            return existing
        raise ReleaseExists(
            f"release {version} of tenant {tenant_id} is already published with other contents "
            f"({key}); devices may run it: publish the change as a new version"
        )
    for artifact_key, data in uploads:  # the artifacts first: a manifest never names a missing file
        store.put(artifact_key, data)
    store.put(key, encode(manifest, signer))
    log.info("published release %s for tenant %s: %d artifact(s)", version, tenant_id, len(artifacts))
    return manifest


def _published(
    store: ObjectStore, signer: PlatformSigner, tenant_id: str, version: str
) -> ReleaseManifest | None:
    try:
        raw = store.get(manifest_key(tenant_id, version))
    except ObjectNotFound:
        return None
    try:
        return decode(raw, platform_keys=[signer.public_key_bytes()], tenant_id=tenant_id, version=version)
    except ManifestError:
        return None  # not ours (or damaged): devices refuse it anyway, so replacing it is safe
