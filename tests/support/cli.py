"""The ``edgeplat`` console script of this environment, run in a child process on a given state
directory (``EDGEPLAT_HOME``), never the developer's own Dagster instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EDGEPLAT = str(Path(sys.executable).parent / "edgeplat")


def cli(*args: str, home: Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEPLAT_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    out = subprocess.run([EDGEPLAT, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out
