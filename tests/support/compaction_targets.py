"""Maintenance targets the compaction tests run in a spawned child.

They live apart from the tests so the child imports only this light module: under a loaded
machine, importing the ingest as well could outlast a short timeout before the target ran.
Each counts its attempts in files under the data path.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

from edgeplat.lakehouse import LakehouseConfig


def _attempt(config: LakehouseConfig) -> int:
    marks = Path(config.data_path) / "attempts"
    marks.mkdir(parents=True, exist_ok=True)
    n = len(list(marks.iterdir())) + 1
    (marks / str(n)).touch()
    return n


def crash_first(config: LakehouseConfig, keep: timedelta) -> dict[str, int]:
    if _attempt(config) == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # what a native crash looks like from outside
    return {"merge_adjacent_files": int(keep.days)}


def crash_always(config: LakehouseConfig, keep: timedelta) -> dict[str, int]:
    _attempt(config)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def fail(config: LakehouseConfig, keep: timedelta) -> dict[str, int]:
    _attempt(config)
    raise ValueError("the catalog is read-only")


def hang(config: LakehouseConfig, keep: timedelta) -> dict[str, int]:
    _attempt(config)
    (Path(config.data_path) / "child.pid").write_text(str(os.getpid()))
    time.sleep(600)
    raise AssertionError("unreachable")
