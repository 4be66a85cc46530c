"""Release health profiles: how a release version behaves on a simulated device.

Each version has a :class:`ReleaseProfile` (error rate, application crash rate, CPU and
memory). A device draws its per-minute ``health`` row from the profile of the version it
has *installed* (what its agent applied from the desired state), with count noise (Poisson
requests, binomial errors, Poisson crashes) and a per-device factor, so a bad release shows
in the health data the rollout gates read, and a healthy one looks like the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ReleaseProfile:
    """How one release version behaves.

    ``error_rate``: fraction of requests that fail; ``crash_rate``: application crashes per
    device-hour; ``cpu_pct``/``mem_mb``: mean load; ``requests_per_min``: request volume
    (the denominator of ``error_rate``).
    """

    version: str
    error_rate: float = 0.01
    crash_rate: float = 0.02
    cpu_pct: float = 25.0
    mem_mb: float = 300.0
    requests_per_min: float = 120.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(
                f"release {self.version!r}: error_rate must be within 0..1, got {self.error_rate}"
            )
        for name in ("crash_rate", "cpu_pct", "mem_mb", "requests_per_min"):
            if getattr(self, name) < 0:
                raise ValueError(f"release {self.version!r}: {name} must be >= 0, got {getattr(self, name)}")


class ReleaseProfiles:
    """Profiles by version; a version never configured behaves like ``default`` (a healthy release)."""

    def __init__(self, default: ReleaseProfile | None = None) -> None:
        self.default = default or ReleaseProfile(version="*")
        self._by_version: dict[str, ReleaseProfile] = {}

    def set(self, version: str, **fields: Any) -> ReleaseProfile:
        """Set (or update) the profile of ``version``; unspecified fields keep their current value."""
        if not isinstance(version, str) or not version:
            raise ValueError("set_release_profile needs a non-empty version string")
        known = {"error_rate", "crash_rate", "cpu_pct", "mem_mb", "requests_per_min"}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown release profile field(s) {unknown}; known: {sorted(known)}")
        profile = replace(self.get(version), version=version, **fields)
        self._by_version[version] = profile
        return profile

    def get(self, version: str | None) -> ReleaseProfile:
        if version in self._by_version:
            return self._by_version[version]
        return replace(self.default, version=version or "unknown")

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            v: {k: getattr(p, k) for k in ("error_rate", "crash_rate", "cpu_pct", "mem_mb")}
            for v, p in sorted(self._by_version.items())
        }


@dataclass(frozen=True)
class HealthDraw:
    """One minute of a device's health: what the health row reports, plus new app crashes."""

    error_rate: float
    requests: int
    errors: int
    crashes: int
    cpu_pct: float
    mem_mb: float


def draw_health(profile: ReleaseProfile, rng: np.random.Generator, device_factor: float) -> HealthDraw:
    """One minute of health under ``profile``; ``device_factor`` (mean 1) makes devices differ a little."""
    requests = int(rng.poisson(profile.requests_per_min))
    p = min(1.0, profile.error_rate * device_factor)
    errors = int(rng.binomial(requests, p)) if requests else 0
    crashes = int(rng.poisson(profile.crash_rate * device_factor / 60.0))
    cpu = float(np.clip(rng.normal(profile.cpu_pct * device_factor, 3.0), 0.0, 100.0))
    mem = max(1.0, float(rng.normal(profile.mem_mb, 5.0)))
    return HealthDraw(
        error_rate=round(errors / requests, 4) if requests else 0.0,
        requests=requests,
        errors=errors,
        crashes=crashes,
        cpu_pct=round(cpu, 1),
        mem_mb=round(mem, 0),
    )
