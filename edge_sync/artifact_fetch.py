"""Resumable, budgeted, verified downloads of release artifacts.

Each artifact downloads into ``<dir>/<sha256>.part`` in chunks; every chunk is appended and
fsynced before the next is asked for, so an interrupted download (network drop, agent
killed, the sync's allowance spent) resumes from the bytes already on disk. Chunks are
ranged reads: ``ObjectStore.get_range`` for ``store:`` URLs, an HTTP ``Range`` request for
``http(s)://`` (a server that ignores ranges still works, at the cost of resending).

The download spends the device's bandwidth budget (``edge_sync.bandwidth``): the rate limit
through a token bucket, and the per-sync allowance the caller passes in; when the allowance
runs out, :class:`~edge_sync.install_errors.InstallPending` says "resume next sync".

Once all bytes are there the file is hashed; a wrong size or SHA-256 deletes it and raises
:class:`~edge_sync.install_errors.InstallError` (``hash_mismatch``). A verified file is
renamed to ``<dir>/<sha256>``, which is only ever a complete, verified file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from edge_sync.bandwidth import BandwidthBudget, SyncAllowance, TokenBucket
from edge_sync.install_errors import InstallError, InstallPending
from edge_sync.objectstore import ObjectNotFound, ObjectStore, ObjectStoreError, StoreUnavailable
from edge_sync.release_manifest import Artifact

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
_HASH_BLOCK = 1 << 20
# What a dropped or refused connection raises: the download resumes at the next sync.
_INTERRUPTED = (StoreUnavailable, urllib.error.URLError, ConnectionError, TimeoutError, OSError)


class ArtifactFetcher:
    """Downloads artifacts into one folder, resuming partial files (see module doc)."""

    def __init__(
        self,
        store: ObjectStore,
        directory: str | os.PathLike[str],
        *,
        budget: BandwidthBudget | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        http_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.directory = Path(directory)
        self.chunk_bytes = chunk_bytes
        self.http_timeout_s = http_timeout_s
        self.budget = budget or BandwidthBudget()
        self._bucket = (
            TokenBucket(self.budget.bytes_per_second, self.budget.burst_bytes, clock=clock, sleep=sleep)
            if self.budget.bytes_per_second
            else None
        )

    def share_rate(self, bucket: TokenBucket | None) -> None:
        """Spend the rate of ``bucket`` (the uploader's), so uploads and downloads together keep to it."""
        if bucket is not None:
            self._bucket = bucket

    def allowance(self) -> SyncAllowance:
        """A fresh per-sync allowance (one per install attempt)."""
        return SyncAllowance(self.budget.bytes_per_sync)

    def done_path(self, artifact: Artifact) -> Path:
        return self.directory / artifact.sha256

    def part_path(self, artifact: Artifact) -> Path:
        return self.directory / f"{artifact.sha256}.part"

    def missing_bytes(self, artifact: Artifact) -> int:
        """Bytes still to download for ``artifact`` (0 once it is verified on disk)."""
        if self.done_path(artifact).exists():
            return 0
        try:
            return max(0, artifact.size - self.part_path(artifact).stat().st_size)
        except FileNotFoundError:
            return artifact.size

    def fetch(self, artifact: Artifact, allowance: SyncAllowance) -> Path:
        """The verified file of ``artifact``, downloading what is missing; see module doc for errors."""
        done = self.done_path(artifact)
        if done.exists():
            return done
        self.directory.mkdir(parents=True, exist_ok=True)
        part = self.part_path(artifact)
        have = part.stat().st_size if part.exists() else 0
        if have > artifact.size:  # not this artifact's bytes: start over
            part.unlink()
            have = 0
        with open(part, "ab") as f:
            while have < artifact.size:
                n = min(self.chunk_bytes, artifact.size - have)
                if not allowance.allows(n):
                    raise InstallPending(
                        f"{artifact.name}: {have} of {artifact.size} bytes downloaded; this sync's download "
                        "allowance is spent, resuming at the next sync"
                    )
                if self._bucket is not None:
                    self._bucket.take(n)
                try:
                    data = self._read(artifact.url, have, n)
                except ObjectNotFound as exc:
                    raise InstallError("artifact_missing", f"{artifact.name}: {exc}") from exc
                except _INTERRUPTED as exc:
                    raise InstallPending(
                        f"{artifact.name}: download interrupted at {have} of {artifact.size} bytes "
                        f"({type(exc).__name__}: {exc}); resuming at the next sync"
                    ) from exc
                except ObjectStoreError as exc:
                    raise InstallError("artifact_unreadable", f"{artifact.name}: {exc}") from exc
                if not data:
                    raise InstallError(
                        "hash_mismatch",
                        f"{artifact.name}: the source ended at {have} bytes, the manifest says {artifact.size}",
                    )
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                have += len(data)
                allowance.spend(len(data))
        self._verify(artifact, part)
        os.replace(part, done)
        _sync_dir(self.directory)
        return done

    def discard(self, artifact: Artifact) -> None:
        """Remove the artifact's downloaded bytes (after they were copied into a slot)."""
        for p in (self.done_path(artifact), self.part_path(artifact)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def _verify(self, artifact: Artifact, path: Path) -> None:
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            while block := f.read(_HASH_BLOCK):
                digest.update(block)
                size += len(block)
        if size != artifact.size or digest.hexdigest() != artifact.sha256:
            path.unlink()  # bad bytes are never resumed from
            raise InstallError(
                "hash_mismatch",
                f"{artifact.name}: downloaded {size} bytes with sha256 {digest.hexdigest()}, the signed manifest "
                f"says {artifact.size} bytes with sha256 {artifact.sha256}; deleted, not installed",
            )

    def _read(self, url: str, start: int, length: int) -> bytes:
        if url.startswith("store:"):
            return self.store.get_range(url.removeprefix("store:"), start, length)
        request = urllib.request.Request(url, headers={"Range": f"bytes={start}-{start + length - 1}"})
        try:
            with urllib.request.urlopen(request, timeout=self.http_timeout_s) as response:
                if response.status == 206:
                    return response.read(length)
                body = response.read()  # the server ignored the range: take our slice of it
                return body[start : start + length]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise ObjectNotFound(url) from exc
            if exc.code == 416:  # asked past the end: the source is shorter than the manifest says
                return b""
            if exc.code >= 500 or exc.code == 429:
                raise StoreUnavailable(f"GET {url}: HTTP {exc.code}") from exc
            raise ObjectStoreError(f"GET {url}: HTTP {exc.code} {exc.reason}") from exc


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
