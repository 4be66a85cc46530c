"""Fixtures of the live path: a real Mosquitto broker, the central side on a real lakehouse
(``Fleet`` with the real wall clock), and a device agent publishing live to the broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_sync.live_publisher import LiveConfig, LivePublisher
from tests.support.device import agent_on
from tests.support.fleet import Fleet
from tests.support.mosquitto import Broker, running_mosquitto
from tests.support.processes import HOST
from tests.support.services import started


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with started("Mosquitto", running_mosquitto(tmp_path)) as b:
        yield b


@pytest.fixture
def central(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path / "central", clock=wall_ms)


@pytest.fixture
def device(tmp_path: Path, central: Fleet, broker: Broker):
    """An agent of tenant-a/dev-1 registered centrally, uploading to the fleet's store, publishing live."""
    (tmp_path / "dev").mkdir()
    agent, identity = agent_on(tmp_path / "dev", "tenant-a", "dev-1", central.keys, store=central.store)
    central.registry.register("tenant-a", "dev-1", identity.public_key_bytes())
    central.ids[("tenant-a", "dev-1")] = identity
    agent.attach_live(LivePublisher(identity, LiveConfig(host=HOST, port=broker.port, reconnect_max_s=1)))
    yield agent
    agent.close()
