"""Fixtures of the alert engine tests: a real lakehouse (``Fleet``) and loopback sink receivers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.fleet import Fleet


@pytest.fixture
def lake_fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path, clock=lambda: time.time_ns() // 1_000_000)
