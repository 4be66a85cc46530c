"""The rollout demo: a bad release caught in its first phase and a good one taken to 100%.

``run_rollout_demo(lake, backend_parts, ...)`` is what ``edgeplat demo`` calls. Both
rollouts run on a fleet whose devices pull the signed desired-state documents the
``edge_agent`` backend writes and report health from per-version release profiles. Time is
simulated (minutes per step), so bakes of an hour take a fraction of a second.

The fleet is ``StubFleet``: a compact stand-in that writes the devices' health rows and
reported versions straight into the lakehouse (what the central sync would ingest). It
verifies and applies the real documents, so deploys, rollbacks and offline devices behave
as in the field; it is also what the rollout tests drive.

The good rollout's manual approval goes through ``approve`` (the CLI's code path: a
Dagster ``approve_phase`` run when ``approve`` is given by the caller, else the same
Controller command the job runs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from edge_sync.desired import DesiredStateError, decode, desired_key
from edge_sync.objectstore import ObjectNotFound
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.lakehouse import Lakehouse, retried
from edgeplat.lakehouse_schema import TABLES
from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.machine import TERMINAL, Kind, Status
from edgeplat.rollouts.spec import RolloutSpec, load_spec
from edgeplat.rollouts.store import RolloutStore

DEMO_START = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
OLD_VERSION = "2.0.0"


@dataclass
class StubDevice:
    """One device of the stub fleet: identity, installed version, and whether it is online."""

    tenant_id: str
    device_id: str
    platform: str
    tags: dict[str, str]
    version: str = OLD_VERSION
    slot: str = "a"
    applied_revision: int = 0
    online: bool = True
    factor: float = 1.0
    ran: set[str] = field(default_factory=set)


class StubFleet:
    """Devices that pull desired state from ``backend`` and write health into ``lake`` (see module doc).

    ``set_release_profile(version, error_rate=..., crash_rate=...)`` sets how a version
    behaves; unknown versions are healthy (1% errors).
    """

    def __init__(
        self,
        lake: Lakehouse,
        backend: EdgeAgentBackend,
        *,
        devices: int = 2000,
        tenants: tuple[str, ...] = ("acme", "globex"),
        platforms: tuple[str, ...] = ("greengrass", "iot_edge"),
        tags: dict[str, tuple[str, ...]] | None = None,
        seed: int = 7,
        start: datetime = DEMO_START,
        requests_per_min: float = 60.0,
    ) -> None:
        self.lake, self.backend = lake, backend
        self.rng = np.random.default_rng(seed)
        self.now = start
        self.requests_per_min = requests_per_min
        self.profiles: dict[str, dict[str, float]] = {}
        tags = tags if tags is not None else {"channel": ("stable", "beta")}
        self.devices = [
            StubDevice(
                tenants[i % len(tenants)],
                f"dev-{i:05d}",
                platforms[(i // len(tenants)) % len(platforms)],
                {k: v[i % len(v)] for k, v in sorted(tags.items())},
                factor=float(self.rng.gamma(20.0, 1 / 20.0)),
            )
            for i in range(devices)
        ]
        for d in self.devices:
            d.ran.add(d.version)
        self._seq: dict[str, int] = {}
        self._con = lake.connect()  # one connection for the fleet's life: attaching is the slow part
        self._write_devices(self.devices)

    def close(self) -> None:
        self._con.close()

    def _txn(self, unit: Callable[[Any], None]) -> None:
        retried(self._con, unit, what="stub fleet health")

    def set_release_profile(self, version: str, **profile: float) -> None:
        self.profiles[version] = {**self.profiles.get(version, {}), **profile}

    def set_online(self, device_ids: set[str], online: bool) -> None:
        for d in self.devices:
            if d.device_id in device_ids:
                d.online = online

    def ran(self, version: str) -> list[str]:
        """Devices (tenant/device) that have ever run ``version``."""
        return [f"{d.tenant_id}/{d.device_id}" for d in self.devices if version in d.ran]

    def running(self, version: str) -> int:
        return sum(d.version == version for d in self.devices)

    # ------------------------------------------------------------------ stepping

    def advance(self, minutes: int) -> None:
        """Pull desired state once, then report ``minutes`` one-minute health rows per online device."""
        changed = [d for d in self.devices if d.online and self._pull(d)]
        rows = self._health(minutes)
        self.now += timedelta(minutes=minutes)
        self._write(rows, changed)

    def _pull(self, d: StubDevice) -> bool:
        store, signer = self.backend.store, self.backend.publisher.signer
        try:
            data = store.get(desired_key(d.tenant_id, d.device_id))
        except ObjectNotFound:
            return False
        try:
            doc = decode(
                data, platform_keys=[signer.public_key_bytes()], tenant_id=d.tenant_id,
                device_id=d.device_id, applied_revision=d.applied_revision,
            )
        except DesiredStateError:
            return False  # stale or tampered: keep running what we run
        d.applied_revision = doc.revision
        version = doc.release.version if doc.release else OLD_VERSION
        if doc.release is not None:
            d.slot = doc.release.slot
        if version == d.version:
            return False
        d.version = version
        d.ran.add(version)
        return True

    def _health(self, minutes: int) -> pa.Table:
        online = [d for d in self.devices if d.online]
        n = len(online) * minutes
        if not n:
            return pa.table({})
        err = np.repeat(
            [min(1.0, self.profiles.get(d.version, {}).get("error_rate", 0.01) * d.factor) for d in online], minutes
        )
        crash = np.repeat(
            [self.profiles.get(d.version, {}).get("crash_rate", 0.02) * d.factor / 60 for d in online], minutes
        )
        cpu = np.repeat([self.profiles.get(d.version, {}).get("cpu_pct", 25.0) * d.factor for d in online], minutes)
        requests = self.rng.poisson(self.requests_per_min, n)
        errors = self.rng.binomial(requests, err)
        ts = [self.now + timedelta(minutes=m) for m in range(minutes)]
        seqs = []
        for d in online:
            s0 = self._seq.get(d.device_id, 0)
            seqs.extend(range(s0, s0 + minutes))
            self._seq[d.device_id] = s0 + minutes
        return pa.table(
            {
                "tenant_id": np.repeat([d.tenant_id for d in online], minutes),
                "device_id": np.repeat([d.device_id for d in online], minutes),
                "stream": pa.array(["health"] * n),
                "seq": pa.array(seqs, pa.int64()),
                "hlc": pa.array(seqs, pa.int64()),
                "node_id": np.repeat([d.device_id for d in online], minutes),
                "ts": pa.array(ts * len(online), pa.timestamp("us", tz="UTC")),
                "version": np.repeat([d.version for d in online], minutes),
                "slot": np.repeat([d.slot for d in online], minutes),
                "desired_revision": pa.array(np.repeat([d.applied_revision for d in online], minutes), pa.int64()),
                "error_rate": np.where(requests > 0, errors / np.maximum(requests, 1), 0.0),
                "requests": pa.array(requests, pa.int64()),
                "errors": pa.array(errors, pa.int64()),
                "crash_count": pa.array(self.rng.poisson(crash), pa.int64()),
                "cpu_pct": np.clip(self.rng.normal(cpu, 3.0), 0, 100),
                "mem_mb": self.rng.normal(300.0, 5.0, n),
                "heartbeat": pa.array(np.ones(n, dtype=np.int64)),
                "queue_depth": pa.array(self.rng.poisson(2.0, n), pa.int64()),
            }
        )

    def _write(self, health: pa.Table, changed: list[StubDevice]) -> None:
        cols = [c for c, _ in TABLES["health"].columns if c in health.column_names]

        def unit(con) -> None:
            if health.num_rows:
                con.register("_h", health)
                con.execute(f'INSERT INTO health ({", ".join(cols)}) SELECT {", ".join(cols)} FROM _h')
                con.unregister("_h")
            if changed:
                self._upsert_devices(con, changed)

        self._txn(unit)

    def _write_devices(self, devices: list[StubDevice]) -> None:
        self._txn(lambda con: self._upsert_devices(con, devices))

    def _upsert_devices(self, con, devices: list[StubDevice]) -> None:
        tbl = pa.table(
            {
                "tenant_id": [d.tenant_id for d in devices],
                "device_id": [d.device_id for d in devices],
                "platform": [d.platform for d in devices],
                "tags": [json.dumps(d.tags, sort_keys=True) for d in devices],
                "registered_at": pa.array([DEMO_START] * len(devices), pa.timestamp("us", tz="UTC")),
                "last_batch_at": pa.array([self.now] * len(devices), pa.timestamp("us", tz="UTC")),
                "status": ["online" if d.online else "offline" for d in devices],
                "reported_version": [d.version for d in devices],
                "reported_slot": [d.slot for d in devices],
                "updated_at": pa.array([self.now] * len(devices), pa.timestamp("us", tz="UTC")),
            }
        )
        con.register("_d", tbl)
        con.execute("DELETE FROM devices WHERE (tenant_id, device_id) IN (SELECT (tenant_id, device_id) FROM _d)")
        con.execute(f'INSERT INTO devices ({", ".join(tbl.column_names)}) SELECT * FROM _d')
        con.unregister("_d")


# ---------------------------------------------------------------------- the demo


def demo_spec(
    name: str, version: str, *, manual_at: int | None = None, percents: tuple[float, ...] = (1, 10, 50, 100),
    min_devices: int = 15, bake: str = "1h",
) -> RolloutSpec:
    """A canary spec for the demo fleet (tenants acme and globex, both platforms)."""
    phases = []
    for i, p in enumerate(percents):
        ph: dict[str, Any] = {"percent": p, "bake": bake}
        if manual_at == i:
            ph["approval"] = "manual"
        phases.append(ph)
    return load_spec(
        {
            "name": name,
            "release": {
                "name": "inference",
                "version": version,
                "greengrass": {"component": "com.acme.Inference", "version": version},
                "iot_edge": {"module": "inference", "image": f"acr.example.io/acme/inference:{version}"},
            },
            "target": {"tenants": ["acme", "globex"]},
            "strategy": {"type": "canary", "phases": phases},
            "gates": [
                {"metric": "error_rate", "max_ratio": 1.5, "min_devices": min_devices, "min_samples": 600},
                {"metric": "crash_count", "max": 1.0, "min_devices": min_devices, "min_samples": 600},
            ],
            "gate_interval": "5m",
            "max_inconclusive": 12,
            "progress_deadline": "4h",
            "device_timeout": "30m",
            "rollback": "automatic",
        }
    )


@dataclass
class DemoRollout:
    """The outcome of one demo rollout (the ``edgeplat demo --json`` entry)."""

    name: str
    rollout_id: str
    release: str
    outcome: str
    last_phase: int
    devices_updated_at_peak: int
    blast_radius: int
    decisions: list[dict[str, Any]]
    plots: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rollout_id": self.rollout_id,
            "release": self.release,
            "outcome": self.outcome,
            "last_phase": self.last_phase,
            "devices_updated_at_peak": self.devices_updated_at_peak,
            "blast_radius": self.blast_radius,
            "decision_log": self.decisions,
            "plots": self.plots,
        }


OUTCOME = {
    Status.COMPLETED: "completed",
    Status.ROLLED_BACK: "rolled_back",
    Status.ABORTED: "rolled_back",
    Status.PAUSED: "paused",
    Status.FAILED: "failed",
}

# approve(rollout_id, phase, who, why, at): the CLI code path (a Dagster approve_phase run).
Approver = Callable[[str, int, str, str, datetime], None]


def run_rollout_demo(
    lake: Lakehouse,
    backend: EdgeAgentBackend,
    *,
    devices: int = 2000,
    approve: Approver | None = None,
    on_tick: Callable[[str], None] | None = None,
    plots_dir: Path | None = None,
    step_minutes: int = 5,
    max_steps: int = 400,
    on_launch: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the bad and the good rollout on a stub fleet; returns ``{"fleet": ..., "rollouts": [...]}``.

    ``on_launch(rollout_id)`` runs right after each launch (e.g. to register the Dagster partition)."""
    lake.ensure_schema()
    store = RolloutStore(lake)
    ctl = Controller(store, backend)
    fleet = StubFleet(lake, backend, devices=devices)
    fleet.set_release_profile("2.2.0", error_rate=0.03)  # 3x the baseline's 1%
    fleet.set_release_profile("2.1.0", error_rate=0.01)
    fleet.advance(60)  # an hour of baseline health before anything ships
    out = []
    with store.session():  # one lakehouse connection for every tick of the demo
        for spec, manual in _DEMO_ROLLOUTS:
            out.append(_run_one(ctl, store, fleet, spec, manual, approve, on_tick, plots_dir, step_minutes,
                                max_steps, on_launch))
    fleet.close()
    return {"fleet": {"devices": devices, "simulator": "edgeplat.rollouts.demo.StubFleet"}, "rollouts": out}


_DEMO_ROLLOUTS = (
    (demo_spec("inference-2-2-0", "2.2.0"), False),
    (demo_spec("inference-2-1-0", "2.1.0", manual_at=2), True),
)


def _run_one(
    ctl: Controller, store: RolloutStore, fleet: StubFleet, spec: RolloutSpec, manual: bool,
    approve: Approver | None, on_tick: Callable[[str], None] | None, plots_dir: Path | None,
    step_minutes: int, max_steps: int, on_launch: Callable[[str], None] | None,
) -> dict[str, Any]:
    rid = ctl.launch(spec, actor="demo", reason="edgeplat demo", now=fleet.now, source={"kind": "demo"})
    if on_launch:
        on_launch(rid)
    peak = 0
    for _ in range(max_steps):
        res = ctl.tick(rid, fleet.now)
        for e in res.appended:
            if on_tick and e.kind != Kind.RECORD_GATES:
                on_tick(f"{spec.name}: {e.kind} phase {e.phase}: {e.reason}")
        state = store.state(rid)
        if state.status in TERMINAL or state.status == Status.FAILED:
            break
        if state.status == Status.AWAITING_APPROVAL and manual:
            for phase in sorted(state.approval_requested - set(state.approvals)):
                why = f"phase {phase - 1} healthy at {spec.phases[phase - 1].percent:g}%: go to {spec.phases[phase].percent:g}%"
                if approve is not None:
                    approve(rid, phase, "demo-operator", why, fleet.now)
                else:
                    ctl.command(rid, "approve", actor="demo-operator", reason=why, phase=phase, now=fleet.now)
                if on_tick:
                    on_tick(f"{spec.name}: approve phase {phase} by demo-operator: {why}")
            continue
        fleet.advance(step_minutes)
        peak = max(peak, fleet.running(spec.release.version))
    state = store.state(rid)
    plots: list[str] = []
    if plots_dir is not None:
        from edgeplat.rollouts.plots import plot_rollout

        plots = [str(p) for p in plot_rollout(store.lake, rid, plots_dir)]
    bad = spec.release.version in fleet.profiles and fleet.profiles[spec.release.version].get("error_rate", 0) > 0.01
    return DemoRollout(
        spec.name,
        rid,
        f"{spec.release.name} {spec.release.version}",
        OUTCOME.get(state.status, str(state.status)),
        state.deployed_phase,
        peak,
        len(fleet.ran(spec.release.version)) if bad else 0,
        [
            {"at": e.at.isoformat(), "kind": e.kind, "phase": e.phase, "actor": e.actor, "reason": e.reason}
            for e in state.events
            if e.kind != Kind.RECORD_GATES
        ],
        plots,
    ).as_dict()


def run_demo_in_home(
    *, devices: int = 2000, via_cli: bool = True, on_tick: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The demo on the code location's own lakehouse, backend and Dagster instance (``edgeplat demo``).

    Keep ``devices`` at 2,000 or more: the demo gates need 15 canaries in the 1% phase.

    ``via_cli``: the manual approval runs the ``approve_phase`` job through the CLI's code path
    (so it shows in the UI as a run with who and why).
    """
    from edgeplat.cli.common import lakehouse
    from edgeplat.settings import paths
    from pipelines.resources import resources_for

    lake = lakehouse()
    backend = resources_for()["fleet_backend"].get()
    approve: Approver | None = None
    if via_cli:
        from edgeplat.cli.rollout import approve as cli_approve

        def approve(rid: str, phase: int, who: str, why: str, at: datetime) -> None:
            cli_approve(rid, who, why, phase, at.isoformat())

    from edgeplat.cli.common import QUIET_LOGS, instance
    from edgeplat.cli.rollout import _definitions

    inst, defs = instance(), _definitions()
    out = run_rollout_demo(
        lake, backend, devices=devices, approve=approve, on_tick=on_tick, plots_dir=paths().plots,
        on_launch=lambda rid: inst.add_dynamic_partitions("rollouts", [rid]),
    )
    for r in out["rollouts"]:  # materialize each rollout's assets and gate checks so the UI shows them
        res = defs.resolve_job_def("rollout_refresh").execute_in_process(
            instance=inst, partition_key=r["rollout_id"], run_config=QUIET_LOGS, raise_on_error=False
        )
        r["refresh_run_id"] = res.run_id
    out["fleet"]["approval_path"] = "edgeplat rollout approve (approve_phase job)" if via_cli else "controller"
    return out
