"""The simulated fleet over time: :class:`SimulatedFleet` (steppable) and :func:`simulate` (one run).

Devices are independent between steps, so a step runs device after device (each device
through the whole window, opening its cache once, not once per minute: opening an encrypted
DuckDB cache is the dominant fixed cost of a device), optionally spread over worker processes.
The central side of the simulation (release assignments, central state edits) goes through
``DesiredStatePublisher`` documents the device agents pull, exactly as in production.

Every device runs the real agent, so a simulation costs what its devices' caches and syncs
cost: a large fleet over hours takes minutes of CPU (docs/decisions.md, "Simulator runs
the real agent"). Fleets up to ``keep_open_max`` devices keep their caches open between
steps so stepping minute by minute stays cheap.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sync.hlc import CENTRAL_NODE, HybridLogicalClock
from edge_sync.identity import LocalDeviceRegistry, PlatformSigner
from edge_sync.keys import KeyService
from edge_sync.objectstore import ObjectStore
from edgeplat.backends.base import DeviceRef
from edgeplat.desired_publisher import DesiredStatePublisher
from edgeplat.desired_records import DesiredRecords
from edgeplat.simulator.config import SimulationConfig
from edgeplat.simulator.device import DeviceRunner, DeviceState, WindowOutput
from edgeplat.simulator.fleet import SimDevice, build_fleet
from edgeplat.simulator.parts import LocalPartsSpec, Parts, default_parts, provision
from edgeplat.simulator.profiles import ReleaseProfile, ReleaseProfiles
from edgeplat.simulator.truth import build_truth, stream_rows

CentralEditSink = Callable[[list[dict[str, Any]]], None]
Progress = Callable[[int], None]  # called with simulated device-minutes just completed
CHUNK = 4  # devices per worker task


@dataclass
class SimulationResult:
    """Ground truth (the ``--truth`` JSON) and a summary of the run (the ``--json`` output)."""

    truth: dict[str, list[dict[str, Any]]]
    summary: dict[str, Any]


class SimulatedFleet:
    """A fleet of simulated devices that can be stepped through simulated time.

    ``advance(minutes)`` runs every device's agent (sampling, health, edits, syncs with
    desired-state pulls) for that long; change release profiles or publish release
    assignments (``publisher()``) in between, and the devices' health follows the version
    they installed. ``finish()`` drains the caches (unless ``leave_offline``) and returns
    the :class:`SimulationResult`.
    """

    def __init__(
        self,
        config: SimulationConfig,
        *,
        store: ObjectStore | None = None,
        keyring: KeyService | None = None,
        registry: LocalDeviceRegistry | None = None,
        signer: PlatformSigner | None = None,
        desired_records: DesiredRecords | None = None,
        home: str | Path | None = None,
        profiles: ReleaseProfiles | None = None,
        central_edit_sink: CentralEditSink | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.parts: Parts = default_parts(
            home,
            store=store,
            keyring=keyring,
            registry=registry,
            signer=signer,
            desired_records=desired_records,
        )
        self.profiles = profiles or ReleaseProfiles()
        self.central_edit_sink = central_edit_sink
        self.progress = progress
        self.devices: list[SimDevice] = build_fleet(config)
        self.states = [DeviceState.new(config, d) for d in self.devices]
        self._spec: LocalPartsSpec | None = self.parts.spec if config.workers > 1 else None
        if config.workers > 1 and self._spec is None:
            raise ValueError(
                "workers > 1 needs the local store, keyring, registry and a signer file (the "
                "embedded default); with other parts run with workers=1"
            )
        keep_open = config.workers == 1 and config.devices <= config.keep_open_max
        self._runner = DeviceRunner(self.parts, config, self.profiles, keep_open=keep_open)
        self._pool: ProcessPoolExecutor | None = None
        self._edits: list[dict[str, Any]] = []
        self._worker_rss_mb = 0.0
        self._central_clock = HybridLogicalClock(CENTRAL_NODE, wall_ms=lambda: self.now_ms)
        self._started = time.monotonic()
        self._finished = False
        for dev in self.devices:
            identity, key = provision(self.parts, dev.tenant_id, dev.device_id)
            self._runner.remember(dev, identity, key)
            self._runner.publish_initial_release(dev)

    # -- what callers look at -------------------------------------------------------------------
    @property
    def now_minute(self) -> int:
        return min((s.minute for s in self.states), default=0)

    @property
    def now_ms(self) -> int:
        """Simulated (central, unskewed) time now, in epoch milliseconds."""
        return self.config.start_ms + self.now_minute * 60_000

    def device_refs(self) -> list[DeviceRef]:
        return [d.ref for d in self.devices]

    def set_release_profile(self, version: str, **fields: Any) -> ReleaseProfile:
        """How ``version`` behaves from now on (error_rate, crash_rate, cpu_pct, mem_mb, requests_per_min)."""
        return self.profiles.set(version, **fields)

    def publisher(self) -> DesiredStatePublisher:
        """A desired-state publisher whose central clock follows simulated time (for release assignments)."""
        return DesiredStatePublisher(
            self.parts.store, self.parts.signer, self._central_clock, records=self.parts.desired_records
        )

    def installed(self) -> dict[tuple[str, str], tuple[str | None, str | None, int]]:
        """(tenant, device) -> (version, slot, applied desired revision) as of each device's last sync."""
        return {
            (d.tenant_id, d.device_id): (s.version, s.slot, s.revision)
            for d, s in zip(self.devices, self.states, strict=True)
        }

    # -- stepping ---------------------------------------------------------------------------------
    def advance(self, minutes: int) -> dict[str, Any]:
        """Run every device ``minutes`` simulated minutes further; returns a short step summary."""
        if minutes < 0:
            raise ValueError(f"advance needs minutes >= 0, got {minutes}")
        return self._step(int(minutes), drain=False)

    def finish(self, *, drain: bool | None = None) -> SimulationResult:
        """Drain every cache (default: unless ``leave_offline``), close the devices, return the result."""
        drain = (not self.config.leave_offline) if drain is None else drain
        if drain and not all(s.drained for s in self.states):
            self._step(0, drain=True)
        result = self.result()
        self.close()
        return result

    def _step(self, minutes: int, *, drain: bool) -> dict[str, Any]:
        until = self.now_minute + minutes
        jobs = list(zip(self.devices, self.states, strict=True))
        outputs: list[WindowOutput] = []
        if self._spec is None:
            for dev, st in jobs:
                outputs.append(self._runner.run(dev, st, until, drain=drain, on_minute=None))
                if self.progress is not None:
                    self.progress(minutes)
        else:
            pool = self._get_pool()
            chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
            futures = [
                pool.submit(_run_chunk, self._spec, self.config, self.profiles, c, until, drain)
                for c in chunks
            ]
            for chunk, fut in zip(chunks, futures, strict=True):
                done, rss_mb = fut.result()
                self._worker_rss_mb = max(self._worker_rss_mb, rss_mb)
                for (dev, _old), (st, out) in zip(chunk, done, strict=True):
                    self.states[dev.index] = st
                    outputs.append(out)
                if self.progress is not None:
                    self.progress(minutes * len(chunk))
        central = [e for o in outputs for e in o.central_edits]
        self._edits.extend(e for o in outputs for e in o.device_edits)
        self._edits.extend(central)
        if central and self.central_edit_sink is not None:
            self.central_edit_sink(central)
        return {
            "minute": self.now_minute,
            "device_edits": sum(len(o.device_edits) for o in outputs),
            "central_edits": len(central),
        }

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.config.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    # -- results ------------------------------------------------------------------------------------
    def truth(self) -> dict[str, list[dict[str, Any]]]:
        streams = [
            r
            for d, s in zip(self.devices, self.states, strict=True)
            for r in stream_rows(d.tenant_id, d.device_id, s.stats)
        ]
        return build_truth(streams, self._edits)

    def summary(self, truth: dict[str, Any] | None = None) -> dict[str, Any]:
        truth = truth or self.truth()
        by_stream: dict[str, Counter] = {}
        for r in truth["streams"]:
            c = by_stream.setdefault(r["stream"], Counter())
            c.update({k: r[k] for k in ("generated", "evicted", "pending")})
        totals = Counter()
        for c in by_stream.values():
            totals.update(c)
        states = self.states
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "devices": len(self.devices),
            "tenants": self.config.tenants,
            "platforms": dict(Counter(d.platform for d in self.devices)),
            "simulated_minutes": self.now_minute,
            "rows": {
                "generated": totals["generated"],
                "delivered": totals["generated"] - totals["evicted"] - totals["pending"],
                "evicted": totals["evicted"],
                "pending": totals["pending"],
            },
            "streams": {s: dict(c) for s, c in sorted(by_stream.items())},
            "state_edits": dict(Counter(e["origin"] for e in truth["state_edits"])),
            "syncs": sum(s.syncs for s in states),
            "offline_syncs": sum(s.offline_syncs for s in states),
            "upload_crashes": sum(s.upload_crashes for s in states),
            "app_crashes": sum(s.app_crashes for s in states),
            "bytes_sent": sum(s.bytes_sent for s in states),
            "devices_with_pending": sum(1 for s in states if any(v["pending"] for v in s.stats.values())),
            "devices_offline_at_end": sum(1 for d in self.devices if d.offline_at(self.now_minute)),
            "max_abs_skew_s": max((abs(d.skew_ms) for d in self.devices), default=0) / 1000,
            "versions": dict(Counter(s.version or "unknown" for s in states)),
            "release_profiles": self.profiles.as_dict(),
            "elapsed_s": round(time.monotonic() - self._started, 2),
            "peak_rss_mb": round(rss, 1),
            "worker_peak_rss_mb": round(self._worker_rss_mb, 1),  # per worker process (0 without workers)
            "workers": self.config.workers,
            "object_store": self.parts.store.url,
        }

    def result(self) -> SimulationResult:
        truth = self.truth()
        return SimulationResult(truth=truth, summary=self.summary(truth))

    def close(self) -> None:
        self._runner.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> SimulatedFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Fleet = SimulatedFleet

_RUNNERS: dict[LocalPartsSpec, DeviceRunner] = {}


def _run_chunk(
    spec: LocalPartsSpec,
    config: SimulationConfig,
    profiles: ReleaseProfiles,
    jobs: list[tuple[SimDevice, DeviceState]],
    until: int,
    drain: bool,
) -> tuple[list[tuple[DeviceState, WindowOutput]], float]:
    """Worker process: run a few devices through the window; the states travel back, with this process's peak RSS."""
    runner = _RUNNERS.get(spec)
    if runner is None:
        runner = _RUNNERS[spec] = DeviceRunner(spec.build(), config, profiles)
    runner.config, runner.profiles = config, profiles
    done = [(st, runner.run(dev, st, until, drain=drain)) for dev, st in jobs]
    return done, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def simulate(config: SimulationConfig, **fleet_options: Any) -> SimulationResult:
    """Run ``config`` from start to end (then drain, unless ``leave_offline``) and return the result.

    ``fleet_options`` are :class:`SimulatedFleet`'s keywords (store, keyring, home, sinks...)."""
    with SimulatedFleet(config, **fleet_options) as fleet:
        fleet._step(config.minutes, drain=not config.leave_offline)
        return fleet.finish(drain=False)
