"""pyarrow's memory pool for the platform's central processes: jemalloc, unless one was chosen.

The ingest holds a chunk's decoded tables while the next chunk decodes and the previous one
commits. pyarrow's default pool (mimalloc) hands that freed memory back and faults it in
again, which makes the ingest slower than with jemalloc (evidence: docs/decisions.md,
"jemalloc for the central processes"). Setting ``ARROW_DEFAULT_MEMORY_POOL`` (``mimalloc``,
``jemalloc``, ``system``) overrides this choice.
"""

from __future__ import annotations

import contextlib
import os

import pyarrow as pa


def prefer_jemalloc() -> str:
    """Make jemalloc pyarrow's default pool if it is built in and no pool was chosen; the pool in use."""
    if (
        not os.environ.get("ARROW_DEFAULT_MEMORY_POOL")
        and pa.default_memory_pool().backend_name != "jemalloc"
    ):
        with contextlib.suppress(NotImplementedError):  # a pyarrow built without it keeps its default
            pa.set_memory_pool(pa.jemalloc_memory_pool())
    return pa.default_memory_pool().backend_name
