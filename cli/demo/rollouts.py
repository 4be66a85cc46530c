"""The demo's rollouts: a bad release caught in its first phase and a good one taken to 100%.

Both run on a :class:`~edgeplat.simulator.rollout_fleet.DemoFleet` of simulated devices that
pull and verify the signed desired-state documents the ``edge_agent`` backend writes and
report health through the platform's data path (device identities, signed and encrypted
``health`` batches, the central ingest: :class:`~edgeplat.simulator.batch_uplink.BatchUplink`).
Time is simulated (minutes per step), so bakes of an hour take seconds. The good rollout's
manual approval goes through the CLI's code path, an ``approve_phase`` run on the shared
instance, so it shows in the UI with who and why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg

from assets.sync.common import sync_env
from cli.environment import instance, lakehouse
from cli.rollout import approve as cli_approve
from cli.runs import run_partition
from edge_sync.keys import KeyService
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.lakehouse import Lakehouse
from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.events import TERMINAL, Kind, Status
from edgeplat.rollouts.plots import plot_rollout
from edgeplat.rollouts.spec import RolloutSpec, load_spec
from edgeplat.rollouts.store import RolloutStore
from edgeplat.settings import paths
from edgeplat.simulator.batch_uplink import BatchUplink
from edgeplat.simulator.rollout_fleet import DemoFleet
from edgeplat.sync.env import SyncEnv
from pipelines.resources import resources_for

# Demo devices upload every UPLOAD_EVERY simulated minutes (a cellular fleet's cadence) and
# right after applying a new desired state. Every upload is a real signed batch to write,
# verify and ingest, and the demo compresses hours of a large fleet into minutes: the cadence
# bounds how many batches that takes.
UPLOAD_EVERY = 120
DEMO_DEVICES = 2000  # the demo gates need 15 canaries in the 1% phase (10 per tenant here)


# ---------------------------------------------------------------------- the demo


def demo_spec(
    name: str,
    version: str,
    *,
    manual_at: int | None = None,
    percents: tuple[float, ...] = (1, 10, 50, 100),
    min_devices: int = 15,
    bake: str = "1h",
    first_phase_min_devices: int | None = None,
) -> RolloutSpec:
    """A canary spec for the demo fleet (tenants acme and globex, both platforms).
    ``first_phase_min_devices``: a floor on phase 0's canaries, for fleets too small for 1% to hold enough."""
    phases = []
    for i, p in enumerate(percents):
        ph: dict[str, Any] = {"percent": p, "bake": bake}
        if i == 0 and first_phase_min_devices:
            ph["min_devices"] = first_phase_min_devices
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
            # Shares per tenant: phase 0 holds at least ceil(1% of each tenant's devices). Plain hash
            # thresholds hold a binomial number of devices, at times below the gates' min_devices.
            # The fleet salt picks the same canaries at every launch, so the seeded demo tells the
            # same story each run.
            "selection": {"salt": "fleet", "stratify_by": "tenant"},
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
    sync_env: SyncEnv | None = None,
    devices: int = 2000,
    approve: Approver | None = None,
    on_tick: Callable[[str], None] | None = None,
    plots_dir: Path | None = None,
    step_minutes: int = 5,
    max_steps: int = 400,
    on_launch: Callable[[str], None] | None = None,
    upload_every: int | None = UPLOAD_EVERY,
    batch_workers: int = 0,
    device_key_service: KeyService | None = None,
) -> dict[str, Any]:
    """Run the bad and the good rollout on a demo fleet; returns ``{"fleet": ..., "rollouts": [...]}``.

    ``sync_env``: the devices report through batches and this env's ingest (the demo); without
    it their rows go straight into the lakehouse (the tests' fast path, see ``DirectUplink``).
    ``on_launch(rollout_id)`` runs right after each launch (e.g. to register the Dagster partition).
    ``device_key_service``: what the devices wrap their data keys with (default: ``sync_env``'s)."""
    lake.ensure_schema()
    store = RolloutStore(lake)
    ctl = Controller(store, backend)
    uplink = (
        None
        if sync_env is None
        else BatchUplink(sync_env, workers=batch_workers, key_service=device_key_service)
    )
    fleet = DemoFleet(lake, backend, uplink, devices=devices, upload_every=upload_every)
    try:
        fleet.set_release_profile("2.2.0", error_rate=0.03)  # 3x the baseline's 1%
        fleet.set_release_profile("2.1.0", error_rate=0.01)
        fleet.advance(60)  # an hour of baseline health before anything ships
        out = []
        with store.session():  # one lakehouse connection for every tick of the demo
            for spec, manual in demo_rollouts(devices):
                out.append(
                    _run_one(
                        ctl,
                        store,
                        fleet,
                        spec,
                        manual,
                        approve,
                        on_tick,
                        plots_dir,
                        step_minutes,
                        max_steps,
                        on_launch,
                    )
                )
    finally:
        fleet.close()
    info: dict[str, Any] = {
        "devices": devices,
        "simulator": "edgeplat.simulator.rollout_fleet.DemoFleet",
        "data_path": "batches + ingest" if sync_env is not None else "direct inserts",
        "upload_every_minutes": upload_every,
        "uploads": fleet.uploads,
        "simulated_minutes": int((fleet.now - fleet.start).total_seconds() // 60),
    }
    if sync_env is not None:
        info.update(uplink.summary())
    return {"fleet": info, "rollouts": out}


def demo_rollouts(devices: int) -> tuple[tuple[RolloutSpec, bool], ...]:
    """The bad and the good rollout's specs (with whether to approve by hand). A fleet smaller
    than the demo's (tests) gives phase 0 a floor of the gates' 15 devices, so the gates can
    still reach a verdict there; the full fleet's 1% already holds 20."""
    floor = 15 if devices < DEMO_DEVICES else None
    return (
        (demo_spec("inference-2-2-0", "2.2.0", first_phase_min_devices=floor), False),
        (demo_spec("inference-2-1-0", "2.1.0", manual_at=2, first_phase_min_devices=floor), True),
    )


def _run_one(
    ctl: Controller,
    store: RolloutStore,
    fleet: DemoFleet,
    spec: RolloutSpec,
    manual: bool,
    approve: Approver | None,
    on_tick: Callable[[str], None] | None,
    plots_dir: Path | None,
    step_minutes: int,
    max_steps: int,
    on_launch: Callable[[str], None] | None,
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
        plots = [str(p) for p in plot_rollout(store.lake, rid, plots_dir)]
    bad = (
        spec.release.version in fleet.profiles
        and fleet.profiles[spec.release.version].get("error_rate", 0) > 0.01
    )
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
    *,
    devices: int = DEMO_DEVICES,
    on_tick: Callable[[str], None] | None = None,
    device_key_service: KeyService | None = None,
) -> dict[str, Any]:
    """The demo on the code location's own lakehouse, backend and Dagster instance (``edgeplat demo``).

    Keep ``devices`` at 2,000 or more: the demo gates need 15 canaries in the 1% phase.
    ``device_key_service``: the simulated devices' key service where the central one may only
    decrypt (the production demo's stand-in, see ``cli.demo.production.device_key_service``).
    """
    lake = lakehouse()
    wanted = ("fleet_backend", "lakehouse", "object_store", "key_service", "device_registry", "state_rules")
    # resolved as a run resolves them: production settings arrive through dg.EnvVar
    with dg.build_resources({k: r for k, r in resources_for().items() if k in wanted}) as res:
        backend = res.fleet_backend.get()
        # the SyncEnv the sync job builds from the same resources: store, key service, device registry
        env = sync_env(res.lakehouse, res.object_store, res.key_service, res.device_registry, res.state_rules)

        def approve(rid: str, phase: int, who: str, why: str, at: datetime) -> None:
            cli_approve(rid, who, why, phase, at.isoformat())

        inst = instance()
        out = run_rollout_demo(
            lake,
            backend,
            sync_env=env,
            devices=devices,
            approve=approve,
            on_tick=on_tick,
            plots_dir=paths().plots,
            batch_workers=2,
            device_key_service=device_key_service,
            on_launch=lambda rid: inst.add_dynamic_partitions("rollouts", [rid]),
        )
    for r in out["rollouts"]:  # materialize each rollout's assets and gate checks so the UI shows them
        r["refresh_run_id"] = run_partition("rollout_refresh", r["rollout_id"])
    out["fleet"]["approval_path"] = "edgeplat rollout approve (approve_phase job)"
    return out


def run_rollouts(
    say: Callable[[str], None], *, devices: int = DEMO_DEVICES, device_key_service: KeyService | None = None
) -> list[dict[str, Any]]:
    """The two demo rollouts, once per state directory; later calls show the saved outcome."""
    marker = paths().home / "demo" / "rollouts.json"
    if marker.exists():
        say(f"rollouts already ran in this state directory ({marker}); showing their outcome")
        return json.loads(marker.read_text())
    say(
        f"rolling out a bad release (3x error rate) and a good one on {devices:,} simulated devices "
        "reporting through signed batches and the ingest"
    )
    out = run_demo_in_home(devices=devices, device_key_service=device_key_service)["rollouts"]
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(out, default=str))
    return out


_DEMO_ROLLOUTS = demo_rollouts(DEMO_DEVICES)
