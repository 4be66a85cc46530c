"""pyarrow's memory pool for the platform's central processes: jemalloc, unless one was chosen.

The ingest holds a chunk's decoded tables while the next chunk decodes and the previous one
commits. With pyarrow's default pool (mimalloc) the 10.9M-row ingest bench took 7.3 to
7.5 s and 1.6 to 2.2 s of system time, with jemalloc 6.4 to 6.6 s and 1.4 s, back to back
on one machine: mimalloc hands freed memory back and faults it in again. Setting
``ARROW_DEFAULT_MEMORY_POOL`` (``mimalloc``, ``jemalloc``, ``system``) overrides this choice.
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
