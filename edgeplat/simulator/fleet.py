"""The simulated device population: tenants, platforms, tags, clock skew and outages.

Everything here is drawn once from the seed, before any device runs, so the population
does not depend on how the run is stepped or split across workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeplat.backends.base import DeviceRef
from edgeplat.simulator.config import SimulationConfig

_PREFIX = {"greengrass": "gg", "iot_edge": "iotedge"}


@dataclass(frozen=True)
class SimDevice:
    """One simulated device: who it is, where it runs, how wrong its clock is, when its link is down.

    ``outages`` are half-open ``[start, end)`` ranges of simulated minutes since the start;
    ``end`` is None for an outage that lasts past the end of the run (``leave_offline``).
    ``phase_s`` staggers the device's sampling and sync times so devices do not act in lock step.
    """

    index: int
    tenant_id: str
    device_id: str
    platform: str
    tags: tuple[tuple[str, str], ...]
    skew_ms: int
    phase_s: int
    outages: tuple[tuple[int, int | None], ...]
    factor: float  # device-to-device variation of health (mean 1)

    def offline_at(self, minute: int) -> bool:
        return any(start <= minute and (end is None or minute < end) for start, end in self.outages)

    @property
    def ref(self) -> DeviceRef:
        return DeviceRef(self.tenant_id, self.device_id, platform=self.platform, tags=dict(self.tags))


def tenant_id(i: int) -> str:
    return f"tenant-{i + 1:02d}"


def build_fleet(config: SimulationConfig) -> list[SimDevice]:
    """The fleet of ``config``: devices spread round-robin over tenants and platforms."""
    rng = np.random.default_rng([config.seed, 0xF1EE7])
    n = config.devices
    minutes = config.minutes
    skew = np.rint(rng.uniform(-config.clock_skew_s, config.clock_skew_s, n) * 1000).astype(np.int64)
    phases = rng.integers(0, config.sync_interval_min * 60, n)
    factors = rng.gamma(20.0, 1 / 20.0, n)
    offline = np.zeros(n, dtype=bool)
    n_off = int(round(config.offline_fraction * n))
    if n_off:
        offline[rng.choice(n, size=n_off, replace=False)] = True
    tag_keys = sorted(config.tags)
    devices = []
    for i in range(n):
        platform = config.platforms[i % len(config.platforms)]
        tags = tuple((k, str(config.tags[k][int(rng.integers(len(config.tags[k])))])) for k in tag_keys)
        outages: tuple[tuple[int, int | None], ...] = ()
        if offline[i]:
            if config.leave_offline:
                start = int(rng.integers(0, max(1, minutes // 2)))
                outages = ((start, None),)
            else:
                length = max(1, int(rng.exponential(config.outage_minutes)))
                start = int(rng.integers(0, minutes))
                outages = ((start, start + length),)
        devices.append(
            SimDevice(
                index=i,
                tenant_id=tenant_id(i % config.tenants),
                device_id=f"{_PREFIX[platform]}-{i:05d}",
                platform=platform,
                tags=tags,
                skew_ms=int(skew[i]),
                phase_s=int(phases[i]),
                outages=outages,
                factor=float(factors[i]),
            )
        )
    return devices
