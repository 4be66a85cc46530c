"""Fixtures the backend tests share: a platform signer, a local object store, and the
edge_agent backend publishing signed desired-state documents into that store."""

from __future__ import annotations

import pytest

from edge_sync.identity import PlatformSigner
from edge_sync.objectstore import LocalObjectStore
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.desired_publisher import DesiredStatePublisher
from edgeplat.desired_records import LakehouseDesiredRecords
from tests.support.desired import embedded_records


@pytest.fixture
def signer() -> PlatformSigner:
    return PlatformSigner.generate()


@pytest.fixture
def store(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store", fsync=False)


@pytest.fixture
def records(tmp_path) -> LakehouseDesiredRecords:
    return embedded_records(tmp_path / "lake")


@pytest.fixture
def backend(store, signer, records) -> EdgeAgentBackend:
    return EdgeAgentBackend(DesiredStatePublisher(store, signer, records=records))
