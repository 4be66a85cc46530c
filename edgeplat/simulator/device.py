"""What one simulated device does over simulated time: sample, report health, edit, sync.

:class:`DeviceState` is everything a device carries between steps (its random stream,
metric walks, counters, what it runs); it is plain data, so a worker process can run the
device and hand the state back. :class:`DeviceRunner` runs devices through a window of
simulated minutes with their real agent (``agent_adapter.SimAgent``), in time order:

* telemetry every ``telemetry_interval_s`` (``metrics_per_sample`` rows per sample);
* once a minute a ``health`` row drawn from the installed release's profile, logs, an
  occasional alert (and one per application crash), device state edits (``put``) and
  central state edits (published to the device's desired-state document);
* every ``sync_interval_min`` a ``sync_once`` (offline during outages), which may crash
  mid-upload with probability ``crash_rate``; the agent restarts and resumes next sync.

Device wall time is simulated time plus the device's skew; central edits are stamped by
a central HLC on simulated time (one per device: devices are independent, so a run split
across workers gives the same result as a single process).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_sync.desired import Release, StateEdit
from edge_sync.hlc import CENTRAL_NODE, HybridLogicalClock
from edge_sync.identity import DeviceIdentity
from edgeplat.desired_publisher import DesiredStatePublisher
from edgeplat.simulator.agent_adapter import SimAgent, SimulatedCrash
from edgeplat.simulator.config import CRASH_POINTS, SimulationConfig
from edgeplat.simulator.fleet import SimDevice
from edgeplat.simulator.parts import Parts, device_files, load_device
from edgeplat.simulator.profiles import ReleaseProfiles, draw_health

# name, start, drift per sample, noise, resolution (None drift: a monotonic counter)
METRICS: tuple[tuple[str, float, float | None, float, float], ...] = (
    ("temperature_c", 21.0, 0.02, 0.05, 0.1),
    ("cpu_pct", 0.0, 0.0, 3.0, 1.0),  # centred on the release profile's cpu_pct
    ("mem_mb", 0.0, 0.0, 1.0, 1.0),  # centred on the release profile's mem_mb
    ("humidity_pct", 45.0, 0.05, 0.2, 0.1),
    ("voltage_v", 230.0, 0.01, 0.3, 0.01),
    ("vibration_g", 0.2, 0.0, 0.04, 0.001),
    ("rssi_dbm", -67.0, 0.1, 2.0, 1.0),
    ("packets_total", 0.0, None, 40.0, 1.0),
)
# State records both sides edit (namespace config: see edge_sync/state_rules.yaml for the rules).
EDIT_KEYS = ("sampling", "thresholds", "display")
EDIT_FIELDS = ("threshold", "mode", "label", "calibration", "firmware_pin", "sample_s")
MODES = ("eco", "normal", "burst")
LOG_MESSAGES = {
    "info": ("sensor bus poll ok", "uplink rtt {n} ms", "config reloaded", "sample batch {n} stored"),
    "warning": ("sensor {n} slow to answer", "retrying uplink ({n})", "queue above {n} rows"),
    "error": ("request failed: timeout after {n} ms", "handler raised ValueError ({n})"),
}
ALERT_CODES = (
    ("warning", "temp_high"),
    ("warning", "disk_low"),
    ("info", "link_flap"),
    ("critical", "sensor_fault"),
)


def json_text(value: Any) -> str:
    """State values as the cache stores them (``DeviceCache.put``'s encoding)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass
class DeviceState:
    """A device's state between steps (picklable)."""

    rng: np.random.Generator
    walks: np.ndarray
    next_sample_ms: int  # simulated time of the next telemetry sample
    minute: int = 0  # next simulated minute to run
    heartbeat: int = 0
    app_crashes: int = 0
    version: str | None = None
    slot: str | None = None
    revision: int = 0
    queue: int = 0
    syncs: int = 0
    offline_syncs: int = 0
    upload_crashes: int = 0
    rows_sent: int = 0
    bytes_sent: int = 0
    started: bool = False
    drained: bool = False
    central_hlc: int = 0
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def new(cls, config: SimulationConfig, dev: SimDevice) -> DeviceState:
        rng = np.random.default_rng([config.seed, dev.index, 0xDE51CE])
        walks = np.array([m[1] * (1 + rng.normal(0, 0.02)) for m in METRICS])
        return cls(
            rng=rng,
            walks=walks,
            next_sample_ms=config.start_ms + dev.phase_s * 1000 % int(config.telemetry_interval_s * 1000),
        )


@dataclass
class WindowOutput:
    """What a device did in one window that the fleet collects: state edits for the truth and the sink."""

    device_edits: list[dict[str, Any]] = field(default_factory=list)
    central_edits: list[dict[str, Any]] = field(default_factory=list)
    minutes: int = 0


class DeviceRunner:
    """Runs devices through windows of simulated time in this process (see the module doc)."""

    def __init__(
        self, parts: Parts, config: SimulationConfig, profiles: ReleaseProfiles, *, keep_open: bool = False
    ) -> None:
        self.parts, self.config, self.profiles = parts, config, profiles
        self.keep_open = keep_open
        self.platform_key = parts.signer.public_key_bytes()
        self._agents: dict[str, SimAgent] = {}
        self._creds: dict[str, tuple[DeviceIdentity, bytes]] = {}

    # -- agents --------------------------------------------------------------------------------
    def remember(self, dev: SimDevice, identity: DeviceIdentity, key: bytes) -> None:
        """Keep a just-provisioned device's identity and cache key (saves reading them back)."""
        self._creds[dev.device_id] = (identity, key)

    def _open(self, dev: SimDevice, st: DeviceState) -> SimAgent:
        agent = self._agents.get(dev.device_id)
        if agent is not None:
            return agent
        creds = self._creds.get(dev.device_id)
        if creds is None:
            creds = self._creds[dev.device_id] = load_device(self.parts, dev.tenant_id, dev.device_id)
        identity, key = creds
        agent = SimAgent(
            tenant_id=dev.tenant_id,
            device_id=dev.device_id,
            cache_path=device_files(self.parts, dev.tenant_id, dev.device_id).cache,
            cache_key=key,
            identity=identity,
            store=self.parts.store,
            key_service=self.parts.keyring,
            platform_key=self.platform_key,
            max_cache_bytes=self.config.cache_max_bytes,
        )
        agent.now_ms = self._sim_ms(st.minute) + dev.skew_ms
        if not st.started:
            agent.install_initial(self.config.release)
            st.version, st.slot, st.revision = agent.release()
            st.started = True
        if self.keep_open:
            self._agents[dev.device_id] = agent
        return agent

    def _release(self, dev: SimDevice, agent: SimAgent) -> None:
        if not self.keep_open:
            agent.close()

    def close(self) -> None:
        for agent in self._agents.values():
            agent.close()
        self._agents.clear()

    # -- running ---------------------------------------------------------------------------------
    def _sim_ms(self, minute: int) -> int:
        return self.config.start_ms + minute * 60_000

    def run(
        self,
        dev: SimDevice,
        st: DeviceState,
        until_minute: int,
        *,
        drain: bool = False,
        on_minute: Callable[[int], None] | None = None,
    ) -> WindowOutput:
        """Run ``dev`` from its next minute up to ``until_minute`` (exclusive); then drain if asked."""
        out = WindowOutput()
        agent = self._open(dev, st)
        try:
            while st.minute < until_minute:
                agent = self._minute(dev, st, agent, out)
                out.minutes += 1
                if on_minute is not None:
                    on_minute(1)
            if drain:
                agent = self._drain(dev, st, agent)
            st.stats = agent.stream_stats()
        finally:
            self._release(dev, agent)
        return out

    def _minute(self, dev: SimDevice, st: DeviceState, agent: SimAgent, out: WindowOutput) -> SimAgent:
        m = st.minute
        tick = self._sim_ms(m) + (dev.phase_s % 60) * 1000
        self._samples(dev, st, agent, until_ms=tick)
        agent.now_ms = tick + dev.skew_ms
        self._health(dev, st, agent)
        self._logs_and_alerts(st, agent)
        self._device_edits(dev, st, agent, out)
        self._central_edits(dev, st, tick, out)
        if (m - dev.phase_s // 60) % self.config.sync_interval_min == 0:
            agent = self._sync(dev, st, agent, online=not dev.offline_at(m))
        self._samples(dev, st, agent, until_ms=self._sim_ms(m + 1))
        st.minute = m + 1
        return agent

    def _samples(self, dev: SimDevice, st: DeviceState, agent: SimAgent, *, until_ms: int) -> None:
        step = int(self.config.telemetry_interval_s * 1000)
        k = self.config.metrics_per_sample
        profile = self.profiles.get(st.version)
        centre = np.array([0.0] * len(METRICS))
        centre[1], centre[2] = profile.cpu_pct * dev.factor, profile.mem_mb
        while st.next_sample_ms < until_ms:
            wall = st.next_sample_ms + dev.skew_ms
            agent.now_ms = wall
            noise = st.rng.normal(0.0, 1.0, k)
            for i in range(k):
                name, _start, drift, sd, res = METRICS[i]
                if drift is None:
                    st.walks[i] += st.rng.poisson(sd)
                    value = st.walks[i]
                else:
                    if drift:
                        st.walks[i] += st.rng.normal(0.0, drift)
                    value = centre[i] + st.walks[i] + noise[i] * sd
                value = round(round(value / res) * res, 3)
                agent.record("telemetry", {"metric": name, "value": float(value), "ts": wall})
            st.queue += k
            st.next_sample_ms += step

    def _health(self, dev: SimDevice, st: DeviceState, agent: SimAgent) -> None:
        draw = draw_health(self.profiles.get(st.version), st.rng, dev.factor)
        st.app_crashes += draw.crashes
        st.heartbeat += 1
        agent.record(
            "health",
            {
                "version": st.version,
                "slot": st.slot,
                "desired_revision": st.revision,
                "error_rate": draw.error_rate,
                "requests": draw.requests,
                "errors": draw.errors,
                "crash_count": st.app_crashes,
                "cpu_pct": draw.cpu_pct,
                "mem_mb": draw.mem_mb,
                "heartbeat": st.heartbeat,
                "queue_depth": st.queue,
            },
        )
        st.queue += 1
        if draw.crashes:
            agent.record(
                "alerts",
                {
                    "severity": "critical",
                    "code": "app_crash",
                    "message": f"{st.version} crashed {draw.crashes}x (total {st.app_crashes})",
                },
            )
            st.queue += 1

    def _logs_and_alerts(self, st: DeviceState, agent: SimAgent) -> None:
        rng, c = st.rng, self.config
        p_error = min(0.5, 10 * self.profiles.get(st.version).error_rate)
        for _ in range(int(rng.poisson(c.log_rate_per_min))):
            u = rng.random()
            level = "error" if u < p_error else "warning" if u < p_error + 0.1 else "info"
            templates = LOG_MESSAGES[level]
            text = templates[int(rng.integers(len(templates)))].format(n=int(rng.integers(1, 1000)))
            agent.record("logs", {"level": level, "message": text})
            st.queue += 1
        for _ in range(int(rng.poisson(c.alert_rate_per_hour / 60))):
            severity, code = ALERT_CODES[int(rng.integers(len(ALERT_CODES)))]
            agent.record("alerts", {"severity": severity, "code": code, "message": f"{code} on {st.version}"})
            st.queue += 1

    def _edit(self, rng: np.random.Generator) -> tuple[str, str, Any]:
        key = EDIT_KEYS[int(rng.integers(len(EDIT_KEYS)))]
        name = EDIT_FIELDS[int(rng.integers(len(EDIT_FIELDS)))]
        if name == "mode":
            value: Any = MODES[int(rng.integers(len(MODES)))]
        elif name in ("label", "firmware_pin"):
            value = f"{name}-{int(rng.integers(100))}"
        elif name == "sample_s":
            value = int(rng.choice([5, 10, 30, 60]))
        else:
            value = round(float(rng.uniform(0, 100)), 1)
        return key, name, value

    def _device_edits(self, dev: SimDevice, st: DeviceState, agent: SimAgent, out: WindowOutput) -> None:
        for _ in range(int(st.rng.poisson(self.config.device_edit_rate_per_hour / 60))):
            key, name, value = self._edit(st.rng)
            hlc = agent.put("config", key, {name: value})
            st.queue += 1
            out.device_edits.append(
                _edit_row(dev, "config", key, name, json_text(value), hlc, dev.device_id, "device")
            )

    def _central_edits(self, dev: SimDevice, st: DeviceState, now_ms: int, out: WindowOutput) -> None:
        n = int(st.rng.poisson(self.config.central_edit_rate_per_hour / 60))
        if not n:
            return
        clock = HybridLogicalClock(CENTRAL_NODE, wall_ms=lambda: now_ms, last=st.central_hlc)
        edits = []
        for _ in range(n):
            key, name, value = self._edit(st.rng)
            edits.append(
                StateEdit(namespace="config", key=key, field=name, value=json_text(value), hlc=clock.now())
            )
        publisher = DesiredStatePublisher(
            self.parts.store, self.parts.signer, clock, records=self.parts.desired_records
        )
        publisher.add_state_edits(dev.tenant_id, dev.device_id, edits)
        st.central_hlc = clock.last
        out.central_edits.extend(
            _edit_row(dev, e.namespace, e.key, e.field, e.value, e.hlc, e.node_id, e.origin) for e in edits
        )

    def _sync(
        self, dev: SimDevice, st: DeviceState, agent: SimAgent, *, online: bool, crashes: bool = True
    ) -> SimAgent:
        crash_at = None
        if crashes and self.config.crash_rate and st.rng.random() < self.config.crash_rate:
            crash_at = CRASH_POINTS[int(st.rng.integers(len(CRASH_POINTS)))]
        try:
            report = agent.sync(online=online, crash_at=crash_at if online else None)
        except SimulatedCrash:
            st.upload_crashes += 1
            agent.crashed()
            self._agents.pop(dev.device_id, None)
            agent = self._open(dev, st)  # the agent restarts; it resumes the upload at its next sync
        else:
            st.syncs += 1
            st.offline_syncs += int(report.offline)
            st.rows_sent += report.rows_sent
            st.bytes_sent += report.bytes_sent
            downlink = report.downlink or {}
            if downlink.get("status") != "applied":  # nothing changed on the device but the upload
                st.queue = max(0, st.queue - report.rows_sent)
                return agent
        # after an applied document or a restart, read back what the agent now runs and holds
        st.version, st.slot, st.revision = agent.release()
        st.queue = sum(s["pending"] for s in agent.stream_stats().values())
        return agent

    def _drain(self, dev: SimDevice, st: DeviceState, agent: SimAgent) -> SimAgent:
        """Online until the cache is empty (at most ``drain_rounds`` syncs, a minute apart, no crashes)."""
        end = self._sim_ms(st.minute)
        for i in range(self.config.drain_rounds):
            agent.now_ms = end + i * 60_000 + dev.skew_ms
            agent = self._sync(dev, st, agent, online=True, crashes=False)
            if st.queue == 0:
                st.drained = True
                break
        return agent

    def publish_initial_release(self, dev: SimDevice) -> None:
        clock = HybridLogicalClock(CENTRAL_NODE, wall_ms=lambda: self.config.start_ms)
        DesiredStatePublisher(
            self.parts.store, self.parts.signer, clock, records=self.parts.desired_records
        ).set_release(dev.tenant_id, dev.device_id, Release(version=self.config.release, slot="a"))


def _edit_row(
    dev: SimDevice, namespace: str, key: str, field_: str, value: str, hlc: int, node_id: str, origin: str
) -> dict[str, Any]:
    return {
        "tenant_id": dev.tenant_id,
        "device_id": dev.device_id,
        "namespace": namespace,
        "key": key,
        "field": field_,
        "value": value,
        "hlc": int(hlc),
        "node_id": node_id,
        "origin": origin,
    }
