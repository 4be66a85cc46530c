"""Fixtures for the rollout wiring tests: a temporary lakehouse, the edge_agent backend, a stub fleet."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edge_sync.identity import PlatformSigner
from edge_sync.objectstore import LocalObjectStore
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.desired_publisher import DesiredStatePublisher
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.rollouts.demo import StubFleet


def make_lake(root: Path) -> Lakehouse:
    (root / "data").mkdir(parents=True, exist_ok=True)
    lake = Lakehouse(LakehouseConfig(f"sqlite:{root}/catalog.sqlite", f"{root}/data/"))
    lake.ensure_schema()
    return lake


@pytest.fixture
def lake(tmp_path: Path) -> Lakehouse:
    return make_lake(tmp_path / "lake")


@pytest.fixture
def backend(tmp_path: Path) -> EdgeAgentBackend:
    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    return EdgeAgentBackend(DesiredStatePublisher(store, PlatformSigner.generate()))


@pytest.fixture
def make_fleet(lake: Lakehouse, backend: EdgeAgentBackend) -> Callable[..., StubFleet]:
    fleets: list[StubFleet] = []

    def make(**kw) -> StubFleet:
        fleet = StubFleet(lake, backend, **kw)
        fleets.append(fleet)
        return fleet

    yield make
    for f in fleets:
        f.close()
