"""``from_url``: the object store a URL names, a local folder or an S3 bucket.

Its own module because it needs both stores, and the S3 store builds on the interface in
``edge_sync.objectstore``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from edge_sync.objectstore import LocalObjectStore, ObjectStore
from edge_sync.objectstore_s3 import S3ObjectStore


def from_url(url: str | Path, **options: Any) -> ObjectStore:
    """An object store for ``s3://bucket/prefix`` (options go to ``S3ObjectStore``) or for
    ``file:///path`` / a plain path (options go to ``LocalObjectStore``)."""
    if isinstance(url, Path):
        return LocalObjectStore(url, **options)
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"object store URL {url!r} has no bucket: write s3://bucket/optional/prefix")
        return S3ObjectStore(parsed.netloc, parsed.path.strip("/"), **options)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"object store URL {url!r} names a host; write file:///absolute/path")
        return LocalObjectStore(Path(unquote(parsed.path)), **options)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return LocalObjectStore(Path(url), **options)
    raise ValueError(
        f"object store URL {url!r} has unsupported scheme {parsed.scheme!r}: use s3://bucket/prefix, "
        "file:///path or a plain path"
    )
