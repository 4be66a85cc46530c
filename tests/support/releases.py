"""Signed releases for installer tests: artifacts in a store (or served over HTTP) and their manifest."""

from __future__ import annotations

import hashlib
import io
import tarfile

from edge_sync.identity import PlatformSigner
from edge_sync.objectstore import ObjectStore
from edge_sync.release_manifest import Artifact, HealthCheck, ReleaseManifest, encode, manifest_key

TENANT = "t1"


def tarball(files: dict[str, bytes | str], modes: dict[str, int] | None = None) -> bytes:
    """A .tar.gz of ``files`` (name -> content), executable where ``modes`` says."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = (modes or {}).get(name, 0o644)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def app_release(version: str, *, healthy: bool = True) -> bytes:
    """An application tarball whose ``check.sh`` exits 0 (healthy) or 1."""
    check = "#!/bin/sh\nexit 0\n" if healthy else "#!/bin/sh\necho broken >&2\nexit 1\n"
    return tarball({"VERSION": version, "check.sh": check}, {"check.sh": 0o755})


def publish(
    store: ObjectStore,
    signer: PlatformSigner,
    version: str,
    payload: bytes,
    *,
    tenant_id: str = TENANT,
    url: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    probation_s: float = 0.0,
    max_restarts: int = 3,
    check: bool = True,
) -> ReleaseManifest:
    """Put ``payload`` (a tarball) and its signed manifest in ``store``; ``url`` overrides where it is fetched."""
    key = f"tenant={tenant_id}/releases/{version}/app.tar.gz"
    store.put(key, payload)
    manifest = ReleaseManifest(
        tenant_id=tenant_id,
        version=version,
        artifacts=[
            Artifact(
                name="app.tar.gz",
                url=url or f"store:{key}",
                size=len(payload) if size is None else size,
                sha256=sha256 or hashlib.sha256(payload).hexdigest(),
                unpack=True,
            )
        ],
        health_check=HealthCheck(command=["./check.sh"], timeout_s=20) if check else None,
        probation_s=probation_s,
        max_restarts=max_restarts,
    )
    store.put(manifest_key(tenant_id, version), encode(manifest, signer))
    return manifest
