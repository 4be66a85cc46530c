"""Fixtures the edge_sync tests share: a tenant keyring, the device identity that signs batches and
a good batch of it (the batch-format tests), and a device ``env`` with its cache open (uploader,
agent, downlink)."""

from __future__ import annotations

import pytest

from edge_sync.identity import DeviceIdentity
from edge_sync.keys import LocalKeyring
from tests.support.batches import D, T, make_table, write
from tests.support.device import make_env


@pytest.fixture
def keyring(tmp_path):
    return LocalKeyring(tmp_path / "keys")


@pytest.fixture
def ident():
    return DeviceIdentity.generate(T, D)


@pytest.fixture
def good(keyring, ident):
    """A valid telemetry batch of ``ident`` (23 rows, seqs 100 to 144)."""
    return write(make_table("telemetry"), keyring, ident, stream="telemetry")


@pytest.fixture
def env(tmp_path):
    e = make_env(tmp_path)
    yield e
    e.cache.close()
