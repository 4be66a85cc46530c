"""Rollouts under test: a canary spec over two tenants (and its blue/green variant), the
spec the gate tests use (canaries sized by the phase's min_devices), a simulated crash, the phase each device was
assigned, and a device running the real downlink on a real cache."""

from __future__ import annotations

from pathlib import Path

from edge_sync.cache import DeviceCache
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.rollouts.spec import RolloutSpec, load_spec
from edgeplat.rollouts.store import RolloutStore
from edgeplat.rollouts.world import assignments
from tests.support.downlink import recording_downlink


def small_spec(**over) -> RolloutSpec:
    data = {
        "name": "r1",
        "release": {
            "name": "app",
            "version": "3.0.0",
            "greengrass": {"component": "com.acme.App", "version": "3.0.0"},
            "iot_edge": {"module": "app", "image": "acr.example.io/app:3.0.0"},
        },
        "target": {"tenants": ["acme", "globex"]},
        "strategy": {
            "type": "canary",
            "phases": [
                {"percent": 10, "bake": "30m"},
                {"percent": 50, "bake": "30m"},
                {"percent": 100, "bake": "15m"},
            ],
        },
        "gates": [{"metric": "error_rate", "max_ratio": 1.5, "min_devices": 10, "min_samples": 300}],
        "gate_interval": "5m",
        "max_inconclusive": 6,
        "progress_deadline": "2h",
        "device_timeout": "20m",
    }
    data.update(over)
    return load_spec(data)


# Tests that judge what the gates decide need a canary phase that holds enough devices whatever
# the rollout id: the phase's min_devices sizes it (still by the hash order of a fresh id at every
# launch), not the luck of a hash draw nor a hand-picked id or salt.
SIZED_PHASES = [
    {"percent": 10, "min_devices": 20, "bake": "30m"},
    {"percent": 50, "bake": "30m"},
    {"percent": 100, "bake": "15m"},
]


def sized_spec(**over) -> RolloutSpec:
    """``small_spec`` whose first phase holds at least 20 devices, under a fresh salt per launch."""
    return small_spec(**{"strategy": {"type": "canary", "phases": SIZED_PHASES}, **over})


class Crash(Exception):
    """A simulated process death inside a tick."""


def bg_spec(**over):
    phases = [{"percent": 25, "bake": "10m"}, {"percent": 60, "bake": "10m"}, {"percent": 100, "bake": "10m"}]
    return small_spec(name="bg", strategy={"type": "blueGreen", "phases": phases}, gates=[], **over)


class Agent:
    """One device running the real downlink (verify, refuse stale, install, switch) on a real cache."""

    def __init__(self, root: Path, backend: EdgeAgentBackend, tenant: str, device: str) -> None:
        self.cache = DeviceCache.open(
            root / f"{tenant}-{device}.db",
            tenant_id=tenant,
            device_id=device,
            key=bytes(32),
            wall_ms=lambda: 1_800_000_000_000,
        )
        self.downlink, self.installer = recording_downlink(
            self.cache, backend.store, backend.publisher.signer.public_key_bytes()
        )

    def pull(self) -> None:
        result = self.downlink.pull()
        assert result.status in ("applied", "unchanged"), result


def phases_of(lake, store: RolloutStore, rid: str) -> dict[tuple[str, str], int]:
    with lake.session(read_only=True) as con:
        rows = assignments(con, store, rid).to_pylist()
    return {(r["tenant_id"], r["device_id"]): r["phase"] for r in rows}
