"""Fixtures the edge_sync tests share: a tenant keyring and the device identity that signs batches
(the batch-format tests), and a device ``env`` with its cache open (uploader, agent, downlink)."""

from __future__ import annotations

import pytest

from edge_sync.identity import DeviceIdentity
from edge_sync.keys import LocalKeyring
from tests.support.batches import D, T
from tests.support.device import make_env


@pytest.fixture
def keyring(tmp_path):
    return LocalKeyring(tmp_path / "keys")


@pytest.fixture
def ident():
    return DeviceIdentity.generate(T, D)


@pytest.fixture
def env(tmp_path):
    e = make_env(tmp_path)
    yield e
    e.cache.close()
