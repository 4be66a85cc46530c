"""One controller tick for one rollout: fold its log, observe the fleet, decide, act, append.

Plain Python (no Dagster): the promotion sensor, the operator jobs, the CLI, the demo and
the tests all drive rollouts through ``Controller``. The executor rule of the state machine
holds throughout: for every new decision we *act* (backend call, idempotent per decision
key) and only then *append* its event. A crash between the two re-runs the same decision
with the same key on the next tick; the backend call repeats harmlessly and the event is
written once. A crash before the act loses nothing either: the decision is recomputed.

Acknowledgements come from the lakehouse (``devices.reported_version``, kept by the central
sync from health reports), not from backend status calls, so one tick costs a few queries
whatever the fleet size and whichever backend is behind it.

Blue/green: the ``stage`` decision stages the release on the inactive slot of the whole
target through ``FleetBackend.stage`` (its event carries the counts); each phase's deploy
then switches (``slot="inactive"``: the staged slot), and the rollback switches back to the
old slot, which is still installed, and withdraws the staged release from devices never
switched. A backend without A/B slots (``staging_unsupported``) cannot stage: the stage
event records that and why, and every phase installs on switch (its event says so too).
Staging is not acknowledged separately (the lakehouse has no staged version per device);
a device that has not staged by its switch installs then, and the switch's acknowledgement
is awaited as for any deploy.

A device is recorded as sent only when its backend accepted it (``DeployResult.failed``
lists the others: a throttled or failing platform, see ``backends.routing``); the rest are
sent again on a later tick (as late devices, and a rollback to devices it did not reach).

Devices that register after launch are placed by the same hash rule: at each tick inside
the maintenance window, target devices that fall into an already deployed phase are sent
the release (and, for blue/green, the rest of the target is staged).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from edgeplat.backends.base import FleetBackend, ReleaseSpec
from edgeplat.rollouts import cohorts
from edgeplat.rollouts.commands import command, spec_updated_event
from edgeplat.rollouts.decide import Decision, Observation, decide, in_window
from edgeplat.rollouts.events import TERMINAL, Event, Kind, RolloutState, Status, created_event
from edgeplat.rollouts.gates import GateReport, evaluate_phase
from edgeplat.rollouts.plan import RolloutPlan, plan_on_lake, require_decidable
from edgeplat.rollouts.platform_gate import installer_check, platform_check, with_platform_check
from edgeplat.rollouts.selection import Assignment
from edgeplat.rollouts.spec import RolloutSpec
from edgeplat.rollouts.store import RolloutStore
from edgeplat.rollouts.world import World

log = logging.getLogger(__name__)

# Fault hook for restart tests: called as hook(point, decision) at "before_act" and
# "after_act" (acted, not yet appended); raising there simulates a crash.
FaultHook = Callable[[str, Decision], None]


@dataclass
class TickResult:
    """What one tick saw and did."""

    rollout_id: str
    status: str
    phase: int
    decisions: list[Decision] = field(default_factory=list)
    appended: list[Event] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # action -> devices changed by the backend
    gates: GateReport | None = None
    log_size: int = 0  # events in the log after the tick
    # What a tick would act on (decision keys, "late-deploy:N", "late-stage:N"): filled by ``due_all``.
    due: list[str] = field(default_factory=list)
    # "tenant/device" -> why its backend did not accept this tick's action (sent again later)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def waiting(self) -> list[str]:
        return [d.reason for d in self.decisions if d.kind == Kind.WAIT]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "status": self.status,
            "phase": self.phase,
            "appended": [f"{e.kind}({e.phase}): {e.reason}" for e in self.appended],
            "waiting": self.waiting,
            "sent": self.sent,
            "gates": None if self.gates is None else str(self.gates.verdict),
        }


def new_rollout_id(spec: RolloutSpec, token: str | None = None) -> str:
    """``<name>-<8 hex>``: readable in the UI, unique per launch (``token``: e.g. a run id)."""
    suffix = (token or uuid.uuid4().hex).replace("-", "")[:8]
    return f"{spec.name}-{suffix}"


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


class Controller:
    """Drives rollouts stored in ``store`` through ``backend`` (see module doc)."""

    def __init__(
        self,
        store: RolloutStore,
        backend: FleetBackend,
        *,
        sample_seconds: float = cohorts.DEFAULT_SAMPLE_SECONDS,
        fault: FaultHook | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.sample_seconds = sample_seconds
        self.fault = fault

    # ------------------------------------------------------------------ operator entry points

    def launch(
        self,
        spec: RolloutSpec,
        *,
        actor: str,
        reason: str = "launched",
        rollout_id: str | None = None,
        source: dict[str, Any] | None = None,
        now: datetime | None = None,
        require_plan: bool = False,
    ) -> str:
        """Record a new rollout (idempotent for a given ``rollout_id``); returns its id.

        ``require_plan``: refuse (``plan.PlanError``, with the numbers and the fix) a spec whose
        phases cannot reach a gate verdict on the target as it is now; the CLI, the UI job and
        the GitOps sensor launch this way.
        """
        if require_plan:
            require_decidable(self.plan(spec))
        rid = rollout_id or new_rollout_id(spec)
        ev = created_event(spec, rid, _now(now), actor)
        ev = replace(ev, reason=reason or ev.reason, inputs={**ev.inputs, "source": source or {}})
        self.store.append(rid, [ev])
        return rid

    def plan(self, spec: RolloutSpec) -> RolloutPlan:
        """How ``spec``'s phases size up on the target devices the lakehouse holds now."""
        with self.store.session() as con:
            return plan_on_lake(con, spec, sample_seconds=self.sample_seconds)

    def command(
        self,
        rollout_id: str,
        kind: str,
        *,
        actor: str,
        reason: str = "",
        phase: int | None = None,
        request_id: str = "",
        inputs: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Event:
        """Append an operator command (approve, pause, resume, abort, fail_phase) with who and why.

        Raises ``CommandError`` when it does not apply. Does not act: the next tick does
        (the jobs run one right away).
        """
        with self.store.session():
            state = self.store.state(rollout_id)
            ev = command(state, kind, actor, _now(now), reason, phase, request_id)
            if inputs:
                ev = replace(ev, inputs={**ev.inputs, **inputs})
            self.store.append(rollout_id, [ev])
        return ev

    def update_spec(
        self,
        rollout_id: str,
        spec: RolloutSpec,
        *,
        actor: str,
        reason: str = "",
        request_id: str = "",
        inputs: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Event:
        """Change a running rollout's spec in place (``spec_updated``; safe fields only).

        Raises ``CommandError`` naming the fields when the change needs a new rollout.
        Idempotent per ``request_id`` (e.g. the git commit): a repeat returns the recorded event.
        """
        with self.store.session():
            state = self.store.state(rollout_id)
            if request_id:
                key = f"{state.rollout}:spec_updated:{request_id}"
                done = next((e for e in state.events if e.key == key), None)
                if done is not None:
                    return done
            ev = spec_updated_event(state, spec, actor, _now(now), reason, request_id, inputs)
            self.store.append(rollout_id, [ev])
        return ev

    # ------------------------------------------------------------------ ticks

    def tick_all(self, now: datetime | None = None) -> list[TickResult]:
        """One tick of every active rollout.

        Reads are batched: one query for every log, one per distinct target set, and one
        health aggregation for every rollout's cohorts together (one scan of ``health``).
        """
        return self._tick_active(_now(now), act=True)

    def due_all(self, now: datetime | None = None) -> list[TickResult]:
        """What a tick of every active rollout would do now, without doing it (``TickResult.due``).

        The promotion sensor reads this and requests a run for each rollout with work, so the
        backend calls happen in runs, with their logs and retries, never inside a sensor tick.
        """
        return self._tick_active(_now(now), act=False)

    def _tick_active(self, now: datetime, *, act: bool) -> list[TickResult]:
        with self.store.session() as con:
            ids = self.store.active_ids()
            logs = self.store.events_many(ids, con)
            states = {rid: RolloutState.from_events(logs[rid]) for rid in ids if logs.get(rid)}
            return self._tick_many(con, states, now, act=act)

    def tick(self, rollout_id: str, now: datetime | None = None) -> TickResult:
        """Fold, observe, decide, act, append for one rollout."""
        now = _now(now)
        with self.store.session() as con:
            state = RolloutState.from_events(self.store.events(rollout_id, con))
            return self._tick_many(con, {rollout_id: state}, now)[0]

    def _tick_many(
        self,
        con: duckdb.DuckDBPyConnection,
        states: dict[str, RolloutState],
        now: datetime,
        *,
        act: bool = True,
    ) -> list[TickResult]:
        targets: dict[str, pa.Table] = {}
        worlds: dict[str, World] = {}
        queries: list[cohorts.CohortQuery] = []
        live = [rid for rid, s in states.items() if s.status not in TERMINAL]
        sent = self.store.sent_many(live, con) if live else {}
        for rid in live:
            state = states[rid]
            try:
                worlds[rid] = w = World.load(con, self.store, rid, state, targets, sent[rid])
                q = self._gate_query(w, state, now)
                if q is not None:
                    queries.append(q)
            except Exception:  # one broken rollout must not stall the others
                log.exception("rollout %s: could not observe", rid)
        samples = cohorts.samples_many(con, queries, sample_seconds=self.sample_seconds) if queries else {}
        out = []
        for rid, state in states.items():
            if rid not in worlds:
                out.append(TickResult(rid, str(state.status), state.phase, log_size=len(state.events)))
                continue
            try:
                out.append(self._run(worlds[rid], state, samples.get(rid), now, act=act))
            except Exception:
                if len(states) == 1:
                    raise
                log.exception("rollout %s: tick failed", rid)
        return out

    def _gate_query(self, w: World, s: RolloutState, now: datetime) -> cohorts.CohortQuery | None:
        window = s.gate_window_start
        gates = s.spec.gates_for(s.phase) if s.phase >= 0 else []
        if s.deployed_phase < 0 or window is None or not gates or s.status == Status.ROLLING_BACK:
            return None
        members = cohorts.cohort_members(w.rollout_id, w.tenants, w.devices, w.platforms, w.sent_phase)
        return cohorts.CohortQuery(w.rollout_id, members, window, now, s.spec.release.version)

    def _run(
        self, world: World, state: RolloutState, samples: pa.Table | None, now: datetime, *, act: bool = True
    ) -> TickResult:
        result = TickResult(world.rollout_id, str(state.status), state.phase, log_size=len(state.events))
        obs = self._observe(world, state, samples)
        result.gates = obs.gates
        decisions = decide(state, obs, now)
        result.decisions = decisions
        todo = [d for d in decisions if d.kind != Kind.WAIT and d.key not in state.keys]
        idle = (Status.ROLLING_BACK, Status.PAUSED, Status.FAILED)
        # Devices that registered after a deploy fall into already-deployed phases by the
        # selection rule: send them the release too (inside the maintenance window only).
        late = self._late(world, state) if state.status not in idle and in_window(state.spec, now) else {}
        unreached = state.status == Status.ROLLING_BACK and any(
            k not in world.sent_rollback for k in world.sent_deploy
        )
        if not act:
            result.due = [d.key for d in todo] + [f"late-{what}:{n}" for what, n in sorted(late.items())]
            result.due += ["rollback-retry"] if unreached else []
            return result
        if unreached:
            self._retry_rollback(world, state, now, result)
        if late.get("stage"):
            self._stage(
                world, state, f"{state.rollout}:stage:late", now, result, skip=self._switched(world, state)
            )
        if late.get("deploy"):
            key = f"{state.rollout}:{state.deployed_phase}:late"
            self._deploy(
                world,
                state,
                world.assignment(state),
                state.deployed_phase,
                key,
                now,
                self._slot(state),
                result,
            )
        for d in todo:
            if self.fault:
                self.fault("before_act", d)
            extra = self._act(world, state, d, now, result)
            if self.fault:
                self.fault("after_act", d)
            ev = d.to_event(state.spec.name, now)
            if extra:
                ev = replace(ev, inputs={**ev.inputs, **extra})
            written = self.store.append(world.rollout_id, [ev])
            result.appended += written
            state.apply(ev)
        result.status, result.phase, result.log_size = str(state.status), state.phase, len(state.events)
        return result

    # ------------------------------------------------------------------ observe

    def _observe(self, w: World, s: RolloutState, samples: pa.Table | None) -> Observation:
        pending: set[str] = set()
        since: dict[str, datetime] = {}
        version = s.spec.release.version
        if s.status == Status.DEPLOYING and s.deployed:
            for dev, at in w.sent_deploy.items():
                if w.reported.get(dev) != version:
                    pending.add(dev)
                    since[dev] = at
        elif s.status == Status.ROLLING_BACK:
            for dev in w.sent_deploy:
                if w.reported.get(dev) == version:
                    pending.add(dev)
                    since[dev] = w.sent_rollback.get(dev, s.rollback_started_at or w.loaded_at)
        report = None
        window = s.gate_window_start
        if samples is not None and window is not None:
            report = evaluate_phase(s.spec, s.phase, samples, window)
        if s.status != Status.ROLLING_BACK and s.deployed_phase >= 0:
            # a device its platform or its installer reports broken on the release counts as
            # failed (platform_gate)
            if "platform_state" in w.targets.column_names:
                report = with_platform_check(
                    report, platform_check(w.targets, w.sent_deploy, version), window
                )
            report = with_platform_check(
                report, installer_check(w.agent_updates, w.sent_deploy, version), window
            )
        return Observation(frozenset(pending), since, report, s.phase)

    # ------------------------------------------------------------------ act

    def _act(
        self, w: World, s: RolloutState, d: Decision, now: datetime, result: TickResult
    ) -> dict[str, Any]:
        """Carry out a decision through the backend; returns inputs to add to its event."""
        if d.kind == Kind.STAGE:
            return self._stage(w, s, d.key, now, result)
        if d.kind == Kind.DEPLOY_PHASE:
            assert d.phase is not None
            assignment = w.assignment(s)
            n = self._deploy(w, s, assignment, d.phase, d.key, now, self._slot(s), result)
            extra: dict[str, Any] = {
                "thresholds": assignment.thresholds,
                "devices_sent": n,
                "devices_in_phase": int(assignment.in_phase(d.phase).sum()),
                **_failures(result),
            }
            if s.spec.strategy.type == "blueGreen" and not self._stages(s):
                extra.update(action="install", fallback_reason=self._no_staging_reason())
            return extra
        if d.kind == Kind.ROLLBACK:
            # Staged-only devices are passed too: the backend withdraws their staged release.
            devices = [w.ref(dev) for dev in {**w.sent_deploy, **w.sent_stage}]
            n = self._rollback(w, s, devices, d.key, now, result)
            return {"devices_sent": n, **_failures(result)}
        return {}

    def _stages(self, s: RolloutState) -> bool:
        """Whether this rollout stages (blue/green on a backend with A/B slots)."""
        return s.spec.strategy.type == "blueGreen" and self.backend.staging_unsupported is None

    def _slot(self, s: RolloutState) -> str | None:
        return "inactive" if self._stages(s) else None

    def _no_staging_reason(self) -> str:
        return f"{self.backend.name} backend cannot stage: {self.backend.staging_unsupported}; installing on switch"

    def _stage(
        self, w: World, s: RolloutState, key: str, now: datetime, result: TickResult, skip: Any = None
    ) -> dict[str, Any]:
        """Stage the release on every target device not staged yet (``skip``: a mask of devices
        not to stage); returns the counts for the event."""
        if not self._stages(s):
            return {
                "staging": "unsupported",
                "fallback": "install_on_switch",
                "fallback_reason": self._no_staging_reason(),
                "devices_in_target": len(w.keys),
                "devices_staged": 0,
            }
        a = w.assignment(s)
        todo = [
            (k, int(p))
            for i, (k, p) in enumerate(zip(w.keys, a.phase, strict=True))
            if k not in w.sent_stage and (skip is None or not skip[i])
        ]
        changed = skipped = 0
        if todo:
            refs = [w.ref(k) for k, _ in todo]
            self._configure(w.rollout_id, s)
            res = self.backend.stage(refs, ReleaseSpec.of(s.spec.release), rollout_id=w.rollout_id)
            changed, skipped = len(res.changed), len(res.skipped)
            refused = self._note_failed(res, result)
            rows = [
                (r.tenant_id, r.device_id, r.platform, p if p >= 0 else None)
                for r, (_, p) in zip(refs, todo, strict=True)
                if r.key not in refused
            ]
            self.store.record_sent(w.rollout_id, rows, "stage", key, now)
            for r, (k, _) in zip(refs, todo, strict=True):
                if r.key not in refused:
                    w.sent_stage[k] = now
            result.sent["stage"] = result.sent.get("stage", 0) + changed
        return {
            "staging": "staged",
            "devices_in_target": len(w.keys),
            "devices_staged": sum(k in w.sent_stage for k in w.keys),
            "devices_changed": changed,
            "devices_skipped": skipped,
        }

    @staticmethod
    def _switched(w: World, s: RolloutState) -> Any:
        """Mask of devices in phases already deployed (switched), or None before the first deploy."""
        return w.assignment(s).in_phase(s.deployed_phase) if s.deployed_phase >= 0 else None

    def _late(self, w: World, s: RolloutState) -> dict[str, int]:
        """Devices still to stage or deploy in phases the rollout has already reached (late registrations).

        Devices in phases already switched get the switch itself (install on switch), not a stage.
        """
        late: dict[str, int] = {}
        if self._stages(s) and (s.staged or s.status == Status.STAGING):
            switched = self._switched(w, s)
            late["stage"] = sum(
                k not in w.sent_stage and (switched is None or not switched[i]) for i, k in enumerate(w.keys)
            )
        if s.deployed:
            late["deploy"] = int((w.assignment(s).in_phase(s.deployed_phase) & ~w.sent_mask()).sum())
        return {what: n for what, n in late.items() if n}

    def _deploy(
        self,
        w: World,
        s: RolloutState,
        a: Assignment,
        phase: int,
        key: str,
        now: datetime,
        slot: str | None,
        result: TickResult,
    ) -> int:
        mask = a.in_phase(phase)
        todo = [
            (dev, int(p))
            for dev, p, m in zip(w.keys, a.phase, mask, strict=True)
            if m and dev not in w.sent_deploy
        ]
        if not todo:
            return 0
        release = ReleaseSpec.of(s.spec.release)
        # Backends take one phase per call; devices keep the phase they were first placed in.
        by_phase: dict[int, list[str]] = {}
        for dev, p in todo:
            by_phase.setdefault(p, []).append(dev)
        changed = accepted = 0
        self._configure(w.rollout_id, s)
        for p, devs in sorted(by_phase.items()):
            refs = [w.ref(dev) for dev in devs]
            res = self.backend.deploy(refs, release, rollout_id=w.rollout_id, phase=p, slot=slot)
            changed += len(res.changed)
            # only what the backend accepted is sent: the rest is sent again on a later tick
            refused = self._note_failed(res, result)
            ok = [(r, dev) for r, dev in zip(refs, devs, strict=True) if r.key not in refused]
            self.store.record_sent(
                w.rollout_id, [(r.tenant_id, r.device_id, r.platform, p) for r, _ in ok], "deploy", key, now
            )
            for _, dev in ok:
                w.sent_deploy[dev], w.sent_phase[dev] = now, p
            accepted += len(ok)
        result.sent["deploy"] = result.sent.get("deploy", 0) + changed
        return accepted

    def _rollback(
        self, w: World, s: RolloutState, devices: list[Any], key: str, now: datetime, result: TickResult
    ) -> int:
        """Roll ``devices`` back; record the ones the backend accepted. Returns how many."""
        self._configure(w.rollout_id, s)
        res = self.backend.rollback(devices, rollout_id=w.rollout_id, to=None)
        refused = self._note_failed(res, result)
        rows = [(r.tenant_id, r.device_id, r.platform, None) for r in devices if r.key not in refused]
        self.store.record_sent(w.rollout_id, rows, "rollback", key, now)
        for r in devices:
            if r.key not in refused:
                w.sent_rollback[f"{r.tenant_id}/{r.device_id}"] = now
        result.sent["rollback"] = result.sent.get("rollback", 0) + len(res.changed)
        return len(rows)

    def _retry_rollback(self, w: World, s: RolloutState, now: datetime, result: TickResult) -> None:
        """Devices a rollback did not reach (their backend failed) get it again."""
        todo = [w.ref(dev) for dev in {**w.sent_deploy, **w.sent_stage} if dev not in w.sent_rollback]
        if todo:
            self._rollback(w, s, todo, f"{s.rollout}:rollback:retry", now, result)

    def _configure(self, rollout_id: str, s: RolloutState) -> None:
        """Hand the rollout's spec to backends with per-rollout settings (Greengrass job policy)."""
        configure = getattr(self.backend, "configure_rollout", None)
        if callable(configure):
            configure(rollout_id, s.spec)

    @staticmethod
    def _note_failed(res: Any, result: TickResult) -> set[tuple[str, str]]:
        failed = dict(getattr(res, "failed", None) or {})
        for (t, dev), why in failed.items():
            result.failed[f"{t}/{dev}"] = why
        return set(failed)


def _failures(result: TickResult, limit: int = 50) -> dict[str, Any]:
    """For an event: how many devices' backends refused the action, and why (the first ``limit``)."""
    if not result.failed:
        return {}
    return {
        "devices_failed": len(result.failed),
        "failures": dict(sorted(result.failed.items())[:limit]),
    }
