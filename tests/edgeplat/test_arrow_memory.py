"""The central processes' pyarrow pool: jemalloc by default, the user's choice when they made one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "from edgeplat.arrow_memory import prefer_jemalloc; print(prefer_jemalloc())"


def _pool(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_jemalloc_unless_a_pool_was_chosen():
    import pyarrow as pa

    if "jemalloc" not in pa.supported_memory_backends():
        pytest.skip("this pyarrow has no jemalloc")
    assert _pool() == "jemalloc"
    assert _pool(ARROW_DEFAULT_MEMORY_POOL="system") == "system"
