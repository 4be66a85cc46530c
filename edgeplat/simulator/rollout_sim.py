"""Rollouts on a vectorised simulated fleet, in memory: hundreds of launches a minute.

For calibration (tests) and time-to-verdict figures (bench) the rollout's own policy runs
unchanged, with none of its I/O: ``decide`` on a ``RolloutState`` folded from the events it
records, ``assign_phases`` for placement under the rollout's salt, ``evaluate_phase`` on the
cohorts' per-device aggregates. What is simulated instead of the lakehouse and the backend:

* devices (numpy arrays, not processes): a per-device error rate spread around the release's
  (gamma, shape ``spread``: CV 50% at 4, as ``tests/rollouts/test_gates.py``), Poisson requests,
  binomial errors, Poisson crashes, a per-device CPU level, memory around 300 MB; a share of them offline for the
  whole run (they never report nor acknowledge, and are marked unreachable after
  ``device_timeout``);
* the data path: rows become visible when a device uploads, every ``upload_every`` minutes
  at its own offset, and right after it applies a new desired state (its acknowledgement),
  as ``DemoFleet`` devices do; time moves in ticks of ``tick_minutes`` (the promotion
  sensor's look), so a row is visible at the end of the tick of its upload;
* the cohorts as ``cohorts.samples_many`` builds them: canary rows on the new release from
  the gate window's start, baseline rows of devices not sent it, at most ``BASELINE_MAX``.

``SimOutcome`` says how the rollout ended and when: minutes from the phase-0 deploy to the
rollback, or to the first promotion, and how many devices beyond phase 0 ever ran the release.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from edgeplat.rollouts.cohorts import BASELINE_MAX
from edgeplat.rollouts.commands import command
from edgeplat.rollouts.decide import Observation, decide, new_events
from edgeplat.rollouts.events import TERMINAL, Kind, RolloutState, Status, created_event
from edgeplat.rollouts.gates import evaluate_phase
from edgeplat.rollouts.selection import assign_phases, rollout_salt
from edgeplat.rollouts.spec import RolloutSpec
from edgeplat.simulator.rollout_fleet import DEMO_START


@dataclass
class SimFleet:
    """A fleet as arrays: who the devices are, who is offline, how each one runs (see module doc)."""

    devices: int
    offline_fraction: float = 0.1
    seed: int = 0
    spread: float = 4.0
    requests_per_min: float = 20.0
    base_error: float = 0.01
    crash_per_hour: float = 0.02
    upload_every: int | None = 30
    tenants: tuple[str, ...] = ("acme", "globex")
    platforms: tuple[str, ...] = ("greengrass", "iot_edge")
    tags: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"channel": ("stable", "beta"), "site": ("plant-a", "plant-b", "plant-c")}
    )
    tenant: np.ndarray = field(init=False)
    online: np.ndarray = field(init=False)
    factor: np.ndarray = field(init=False)
    cpu: np.ndarray = field(init=False)
    offset: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        n = self.devices
        i = np.arange(n)
        self.ids = [f"dev-{k:05d}" for k in range(n)]
        self.tenant = np.asarray(self.tenants, dtype=object)[i % len(self.tenants)]
        self.platform = np.asarray(self.platforms, dtype=object)[
            (i // len(self.tenants)) % len(self.platforms)
        ]
        # tag values cycle independently of the tenant and platform (strides 4, 12, ...)
        self.tag_values = {}
        stride = len(self.tenants) * len(self.platforms)
        for name, values in sorted(self.tags.items()):
            self.tag_values[name] = np.asarray(values, dtype=object)[(i // stride) % len(values)]
            stride *= len(values)
        self.online = rng.random(n) >= self.offline_fraction
        self.factor = rng.gamma(self.spread, 1 / self.spread, n)
        self.cpu = rng.normal(25.0, 5.0, n)
        self.offset = rng.integers(0, self.upload_every or 1, n)

    def _tag_json(self, idx: np.ndarray) -> list[str]:
        """The devices' tags as the ``devices`` table holds them (JSON text), one dumps per combination."""
        names = sorted(self.tag_values)
        combos = zip(*(self.tag_values[k][idx] for k in names), strict=True)
        cache: dict[tuple, str] = {}
        return [
            cache.get(c) or cache.setdefault(c, json.dumps(dict(zip(names, map(str, c), strict=True))))
            for c in combos
        ]

    def targets(self, spec: RolloutSpec) -> tuple[np.ndarray, pa.Table]:
        """The spec's target devices (a mask, and rows shaped as ``cohorts.target_devices``)."""
        mask = np.isin(self.tenant, list(spec.target.tenants)) & np.isin(self.platform, spec.platforms)
        for tag, value in spec.target.tags.items():
            values = [value] if isinstance(value, str) else list(value)
            have = self.tag_values.get(tag)
            mask &= np.isin(have, values) if have is not None else False
        idx = np.flatnonzero(mask)
        table = pa.table(
            {
                "tenant_id": pa.array(self.tenant[idx].tolist(), pa.string()),
                "device_id": pa.array([self.ids[k] for k in idx], pa.string()),
                "platform": pa.array(self.platform[idx].tolist(), pa.string()),
                "tags": pa.array(self._tag_json(idx), pa.string()),
                "status": pa.array(np.where(self.online[idx], "online", "offline").tolist(), pa.string()),
            }
        )
        return mask, table


@dataclass
class SimOutcome:
    """How one simulated rollout ended."""

    rollout_id: str
    status: str
    phase: int
    deployed_phase: int
    cause: str  # of the rollback: gate, inconclusive, deadline; "" when none
    rolled_back_at: float | None  # minutes after the phase-0 deploy
    promoted_at: float | None  # minutes after the phase-0 deploy to the first promotion
    beyond_phase_0: int  # devices outside phase 0 that ever ran the release
    looks: int  # gate evaluations
    events: list[str] = field(default_factory=list)

    @property
    def rolled_back(self) -> bool:
        return self.rolled_back_at is not None


class _Cohorts:
    """Per-device counts since the gate window's start: recorded on the device, and visible centrally."""

    def __init__(self, n: int) -> None:
        self.names = ("samples", "requests", "errors", "crashes", "cpu_sum", "mem_sum")
        self.recorded = {k: np.zeros(n) for k in self.names}
        self.visible = {k: np.zeros(n) for k in self.names}

    def reset(self) -> None:
        for d in (self.recorded, self.visible):
            for v in d.values():
                v[:] = 0


def simulate_rollout(
    spec: RolloutSpec,
    fleet: SimFleet,
    *,
    error_mult: float = 1.0,
    rollout_id: str | None = None,
    sequential: bool = True,
    tick_minutes: int = 5,
    max_hours: float = 12.0,
    until_phase: int | None = None,
    seed: int | None = None,
) -> SimOutcome:
    """Run one rollout of ``spec`` on ``fleet`` (the new release has ``error_mult`` x the error rate).

    ``until_phase``: stop once that phase is deployed (the later phases are not simulated).
    Manual approvals are given as soon as requested; ``sequential=False`` evaluates the gates
    the way they were before (a fixed-sample test at every look).
    """
    rid = rollout_id or f"{spec.name}-{uuid.uuid4().hex[:8]}"
    digest = hashlib.blake2b(rid.encode(), digest_size=8).digest()
    rng = np.random.default_rng(seed if seed is not None else int.from_bytes(digest, "little"))
    start = DEMO_START
    mask, table = fleet.targets(spec)
    idx = np.flatnonzero(mask)
    n = len(idx)
    keys = [
        f"{t}/{d}"
        for t, d in zip(
            table.column("tenant_id").to_pylist(), table.column("device_id").to_pylist(), strict=True
        )
    ]
    online = fleet.online[idx]
    p_old = np.clip(fleet.base_error * fleet.factor[idx], 0, 1)
    p_new = np.clip(p_old * error_mult, 0, 1)
    crash = fleet.crash_per_hour * fleet.factor[idx] / 60
    cpu = fleet.cpu[idx]
    offset = fleet.offset[idx]
    rows = pa.table({"device_id": pa.array(keys, pa.string()), "tenant_id": table.column("tenant_id")})
    if spec.selection.stratify_by and spec.selection.stratify_by.startswith("tag:"):
        tag = spec.selection.stratify_by[4:]
        values = fleet.tag_values.get(tag, np.full(len(fleet.tenant), "", dtype=object))
        rows = rows.append_column(tag, pa.array([str(v) for v in values[idx]], pa.string()))
    salt = rollout_salt(spec.name, rid, spec.selection.salt)
    assignment = assign_phases(
        rows,
        [p.percent for p in spec.phases],
        salt,
        spec.selection.stratify_by,
        None,
        [p.min_devices for p in spec.phases],
    )
    baseline_pick = np.argsort(rng.random(n))  # a stable random order for the BASELINE_MAX cap

    log = [created_event(spec, rid, start, "sim")]
    state = RolloutState.from_events(log)
    sent = np.zeros(n, bool)  # sent the release (deploy)
    sent_at = np.full(n, -1.0)  # minute sent
    on_new = np.zeros(n, bool)
    ever_new = np.zeros(n, bool)
    reported_new = np.zeros(n, bool)  # what the lakehouse believes each device runs
    staged_pending = np.zeros(n, bool)
    data = _Cohorts(n)
    first_deploy: float | None = None
    rolled_at = promoted_at = None
    cause = ""
    looks = 0
    window = None
    minutes = 0.0
    step = timedelta(minutes=tick_minutes)
    now = start
    while minutes <= max_hours * 60:
        # --- observe
        s = state
        pending: set[str] = set()
        since: dict[str, datetime] = {}
        if s.status == Status.DEPLOYING and s.deployed:
            waiting = sent & ~reported_new
        elif s.status == Status.ROLLING_BACK:
            waiting = sent & reported_new
        elif s.status == Status.STAGING:
            waiting = staged_pending
        else:
            waiting = np.zeros(n, bool)
        for k in np.flatnonzero(waiting):
            pending.add(keys[k])
            if sent_at[k] >= 0:
                since[keys[k]] = start + timedelta(minutes=float(sent_at[k]))
        report = None
        if s.deployed_phase >= 0 and s.gate_window_start is not None and s.status != Status.ROLLING_BACK:
            if window != s.gate_window_start:  # a new window: evidence counts from here
                data.reset()
                window = s.gate_window_start
            samples = _samples(data, sent, cpu, baseline_pick)
            report = evaluate_phase(s.spec, s.phase, samples, s.gate_window_start, sequential=sequential)
            looks += report is not None
        obs = Observation(frozenset(pending), since, report, s.phase)
        # --- decide, act, record
        decisions = decide(s, obs, now)
        events = new_events(s, decisions, now)
        for ev in events:
            if ev.kind == Kind.DEPLOY_PHASE:
                assert ev.phase is not None
                new = assignment.in_phase(ev.phase) & ~sent
                sent |= new
                sent_at[new] = minutes
                if first_deploy is None:
                    first_deploy = minutes
            elif ev.kind == Kind.STAGE:
                staged_pending = ~online.copy()
            elif ev.kind == Kind.ROLLBACK and rolled_at is None:
                rolled_at = minutes - (first_deploy or 0.0)
                cause = str(ev.inputs.get("cause", ""))
            elif ev.kind == Kind.PROMOTE and promoted_at is None:
                promoted_at = minutes - (first_deploy or 0.0)
            elif ev.kind == Kind.MARK_UNREACHABLE and s.status == Status.STAGING:
                staged_pending[:] = False
            state.apply(ev)
            log.append(ev)
        for d in decisions:
            if d.kind == Kind.WAIT and state.status == Status.AWAITING_APPROVAL:
                waiting_phase = sorted(state.approval_requested - set(state.approvals))
                if waiting_phase:
                    ev = command(
                        state,
                        "approve",
                        "sim",
                        now,
                        "simulated operator",
                        waiting_phase[0],
                        f"{rid}:{waiting_phase[0]}",
                    )
                    state.apply(ev)
                    log.append(ev)
        if state.status in TERMINAL or (until_phase is not None and state.deployed_phase >= until_phase):
            break
        # --- the devices: pull, run a tick, upload
        rolling_back = state.status in (Status.ROLLING_BACK, Status.ROLLED_BACK, Status.ABORTED)
        want_new = sent & ~rolling_back
        changed = online & (on_new != want_new)
        on_new[online] = want_new[online]
        ever_new |= on_new
        _record(data, rng, online, on_new, p_old, p_new, crash, cpu, fleet.requests_per_min, tick_minutes)
        if fleet.upload_every:
            before = np.floor((minutes - offset) / fleet.upload_every)
            after = np.floor((minutes + tick_minutes - offset) / fleet.upload_every)
            uploads = online & ((after > before) | changed)
        else:
            uploads = online.copy()
        for k in data.names:
            data.visible[k][uploads] = data.recorded[k][uploads]
        reported_new[uploads] = on_new[uploads]
        minutes += tick_minutes
        now += step
    beyond = int(np.sum(ever_new & ~assignment.in_phase(0)))
    return SimOutcome(
        rid,
        str(state.status),
        state.phase,
        state.deployed_phase,
        cause,
        rolled_at,
        promoted_at,
        beyond,
        looks,
        [f"{e.kind}({e.phase}) +{(e.at - start).total_seconds() / 60:.0f}m: {e.reason}" for e in log],
    )


def _record(
    data: _Cohorts,
    rng: np.random.Generator,
    online: np.ndarray,
    on_new: np.ndarray,
    p_old: np.ndarray,
    p_new: np.ndarray,
    crash: np.ndarray,
    cpu: np.ndarray,
    requests_per_min: float,
    minutes: int,
) -> None:
    """``minutes`` of one-a-minute health rows on every online device."""
    n = len(online)
    req = rng.poisson(requests_per_min * minutes, n) * online
    err = rng.binomial(req, np.where(on_new, p_new, p_old))
    r = data.recorded
    r["samples"] += minutes * online
    r["requests"] += req
    r["errors"] += err
    r["crashes"] += rng.poisson(crash * minutes) * online
    r["cpu_sum"] += (cpu * minutes + rng.normal(0, 3.0 * math.sqrt(minutes), n)) * online
    r["mem_sum"] += (300.0 * minutes + rng.normal(0, 5.0 * math.sqrt(minutes), n)) * online


def _samples(data: _Cohorts, sent: np.ndarray, cpu: np.ndarray, baseline_pick: np.ndarray) -> dict:
    """The cohorts' per-device aggregates, as ``cohorts.samples_many`` returns them."""
    v = data.visible
    has = v["samples"] > 0
    canary = sent & has
    base = ~sent & has
    if base.sum() > BASELINE_MAX:  # the same cap the lakehouse query applies
        order = baseline_pick[base[baseline_pick]]
        base = np.zeros_like(base)
        base[order[:BASELINE_MAX]] = True
    keep = canary | base
    s = v["samples"][keep]
    return {
        "cohort": np.where(canary[keep], "canary", "baseline"),
        "samples": s,
        "hours": s / 60.0,
        "requests": v["requests"][keep],
        "errors": v["errors"][keep],
        "crash_count": v["crashes"][keep],
        "heartbeats": s,
        "expected_heartbeats": s,
        "cpu_pct": v["cpu_sum"][keep] / s,
        "mem_mb": v["mem_sum"][keep] / s,
    }
