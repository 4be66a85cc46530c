"""Fixtures the batch-format tests share: a tenant keyring and the device identity that signs."""

from __future__ import annotations

import pytest

from edge_sync.identity import DeviceIdentity
from edge_sync.keys import LocalKeyring
from tests.support.batches import D, T


@pytest.fixture
def keyring(tmp_path):
    return LocalKeyring(tmp_path / "keys")


@pytest.fixture
def ident():
    return DeviceIdentity.generate(T, D)
