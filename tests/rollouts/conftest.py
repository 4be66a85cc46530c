"""Fixtures for the rollout wiring tests: a temporary lakehouse, the edge_agent backend, a demo fleet.

``make_fleet(batches=True, ...)`` reports through device identities, signed batches and the
central ingest (``BatchUplink``); by default the fleet takes the fast direct path and every
device reports every step, for tests that tick rollouts many times.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edge_sync.identity import LocalDeviceRegistry, PlatformSigner
from edge_sync.keys import LocalKeyring
from edge_sync.objectstore import LocalObjectStore
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.desired_publisher import DesiredStatePublisher
from edgeplat.desired_records import LakehouseDesiredRecords
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.simulator.batch_uplink import BatchUplink
from edgeplat.simulator.rollout_fleet import DemoFleet
from edgeplat.sync.env import SyncEnv


def make_lake(root: Path) -> Lakehouse:
    (root / "data").mkdir(parents=True, exist_ok=True)
    lake = Lakehouse(LakehouseConfig(f"sqlite:{root}/catalog.sqlite", f"{root}/data/"))
    lake.ensure_schema()
    return lake


@pytest.fixture
def lake(tmp_path: Path) -> Lakehouse:
    return make_lake(tmp_path / "lake")


@pytest.fixture
def backend(tmp_path: Path, lake: Lakehouse) -> EdgeAgentBackend:
    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    return EdgeAgentBackend(
        DesiredStatePublisher(store, PlatformSigner.generate(), records=LakehouseDesiredRecords(lake))
    )


@pytest.fixture
def sync_env(tmp_path: Path, lake: Lakehouse, backend: EdgeAgentBackend) -> SyncEnv:
    """The central side of the batch path: the backend's object store, a keyring and a device registry."""
    return SyncEnv(
        lake, backend.store, LocalKeyring(tmp_path / "keys"), LocalDeviceRegistry(tmp_path / "registry")
    )


@pytest.fixture
def make_fleet(lake: Lakehouse, backend: EdgeAgentBackend, sync_env: SyncEnv) -> Callable[..., DemoFleet]:
    fleets: list[DemoFleet] = []

    def make(*, batches: bool = False, **kw) -> DemoFleet:
        if batches:
            fleet = DemoFleet(lake, backend, BatchUplink(sync_env), **kw)
        else:
            fleet = DemoFleet(lake, backend, **{"upload_every": None, **kw})
        fleets.append(fleet)
        return fleet

    yield make
    for f in fleets:
        f.close()
