"""Fixtures for the central sync tests: a real keyring, registry, local object store and lakehouse."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fleet import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)
