"""The rollout state machine's policy: a pure ``decide(state, observation, now)``.

``decide`` returns what should happen next for a folded ``RolloutState``, given an
``Observation`` of the fleet (which devices have not acknowledged the current step, the gate
report) and the time. Nothing here performs I/O: the controller calls ``decide``, carries
out each decision, and appends its event.

Restart safety (architecture invariant 6): every recorded decision has an idempotency key
derived from the state (``"<rollout>:<phase>:<kind>"`` plus a counter where a kind can
repeat), so after a crash the same decision is recomputed with the same key, and
``new_events`` drops decisions whose key is already in the log. Executors must *act, then
append*: a crash between the two re-runs the action under the same key, so backend writes
must be idempotent per key (desired-state documents and deployments named by the key).

Policy, in order of precedence in ``decide``:

1. a rollback in progress finishes (it ignores the maintenance window);
2. ``abort`` rolls back now;
3. a failed gate or ``fail_phase`` rolls back (``rollback: automatic``, even while paused
   by an operator) or pauses (``rollback: pause``); a phase with a failed gate is never
   promoted: a resume restarts its bake and it needs a fresh PASS (an approval already
   given for the next phase stands);
4. the progress deadline (time to settle a deploy, or to get a verdict after the bake)
   rolls back (automatic) or fails the rollout (pause);
5. otherwise the step proceeds: deploys settle (devices that do not acknowledge within
   ``device_timeout`` are marked unreachable and do not block), phases bake, gates are
   recorded every ``gate_interval``, more than ``max_inconclusive`` consecutive inconclusive
   evaluations apply ``on_inconclusive`` (pause: an event with the reasons, an operator
   resumes or aborts, the rollout carries on by itself if the gates PASS meanwhile, and the
   progress deadline ends it if neither happens; extend:
   keep evaluating until the progress deadline; rollback: the rollback policy), manual
   phases wait for an approval, and new deploys only start inside the maintenance window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edgeplat.rollouts.events import CONTROLLER, TERMINAL, Event, Kind, RolloutState, Status, iso
from edgeplat.rollouts.gates import GateReport, Verdict
from edgeplat.rollouts.spec import RolloutSpec, format_duration


@dataclass(frozen=True)
class Decision:
    """What should happen next. Every kind except ``wait`` is recorded as an event."""

    kind: Kind
    phase: int | None = None
    reason: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    devices: tuple[str, ...] = ()

    def to_event(self, rollout: str, at: datetime, actor: str = CONTROLLER) -> Event:
        inputs = dict(self.inputs)
        if self.devices:
            inputs["devices"] = list(self.devices)
        return Event(str(self.kind), rollout, at, self.phase, actor, self.reason, inputs, self.key)


@dataclass(frozen=True)
class Observation:
    """What the sensor sees now, for the current step.

    ``pending``: devices targeted by the current step (phase deploy, blue/green stage or
    rollback) that have not acknowledged it; ``pending_since``: when each was targeted
    (default: the step's start; later for devices that registered after it). ``gates``: the
    report over the window starting at ``RolloutState.gate_window_start``, comparing the
    devices in phases ``<= RolloutState.deployed_phase`` (canary) with comparable devices not
    yet updated (baseline). ``phase``: ``RolloutState.phase`` when the observation was made;
    a mismatch makes it stale and it is ignored.
    """

    pending: frozenset[str] = frozenset()
    pending_since: Mapping[str, datetime] = field(default_factory=dict)
    gates: GateReport | None = None
    phase: int | None = None


def new_events(
    state: RolloutState, decisions: Iterable[Decision], at: datetime, actor: str = CONTROLLER
) -> list[Event]:
    """Events for the decisions not yet in the log (``wait`` is never recorded)."""
    out, seen = [], set(state.keys)
    for d in decisions:
        if d.kind == Kind.WAIT or d.key in seen:
            continue
        seen.add(d.key)
        out.append(d.to_event(state.rollout, at, actor))
    return out


def in_window(spec: RolloutSpec, now: datetime) -> bool:
    return spec.maintenance_window is None or spec.maintenance_window.contains(now)


def _key(state: RolloutState, kind: Kind, *extra: object, phase: int | None = None) -> str:
    p = state.phase if phase is None else phase
    return ":".join(str(x) for x in (state.rollout, p, kind, *extra))


def _wait(reason: str) -> Decision:
    return Decision(Kind.WAIT, reason=reason)


def _rollback(state: RolloutState, reason: str, inputs: dict[str, Any], cause: str) -> Decision:
    # Blue/green keeps the old slot installed: rolling back is a slot switch, not a redeploy.
    action = "switch_back" if state.spec.strategy.type == "blueGreen" else "redeploy_old"
    inputs = {**inputs, "cause": cause, "action": action}
    return Decision(Kind.ROLLBACK, state.phase, reason, inputs, f"{state.rollout}:rollback")


def _fails(state: RolloutState, reason: str, inputs: dict[str, Any], cause: str) -> list[Decision]:
    """The rollback policy applied to a failure."""
    if state.spec.rollback == "automatic":
        return [_rollback(state, reason, inputs, cause)]
    return [
        Decision(
            Kind.PAUSE, state.phase, reason, {**inputs, "cause": cause}, _key(state, Kind.PAUSE, state.epoch)
        )
    ]


def _settle(
    state: RolloutState, obs: Observation, now: datetime, since: datetime
) -> tuple[list[Decision], bool]:
    """Mark devices past ``device_timeout`` unreachable; True when nobody else is pending."""
    timeout = state.spec.device_timeout
    pending = set(obs.pending) - state.unreachable
    late = sorted(d for d in pending if now - max(since, obs.pending_since.get(d, since)) >= timeout)
    out = []
    if late:
        digest = hashlib.blake2b("\n".join(late).encode(), digest_size=6).hexdigest()
        reason = (
            f"{len(late)} device(s) did not acknowledge within {format_duration(state.spec.device_timeout)}"
        )
        out.append(
            Decision(
                Kind.MARK_UNREACHABLE,
                state.phase,
                reason,
                {},
                _key(state, Kind.MARK_UNREACHABLE, digest),
                tuple(late),
            )
        )
    return out, len(pending) == len(late)


def _report(state: RolloutState, obs: Observation) -> GateReport | None:
    if obs.phase is not None and obs.phase != state.phase:
        return None  # computed for another phase: stale
    start = state.gate_window_start
    if (
        obs.gates is not None
        and obs.gates.since
        and start is not None
        and datetime.fromisoformat(obs.gates.since) < start - timedelta(seconds=1)
    ):
        return None  # covers time before the current step: stale
    if obs.gates is None and not state.spec.gates_for(state.phase):
        return GateReport(Verdict.PASS, ())  # no gates configured for this phase
    return obs.gates


def decide(state: RolloutState, obs: Observation, now: datetime) -> list[Decision]:
    """The next decisions for ``state`` given ``obs`` at ``now`` (pure; see the module docstring)."""
    iso(now)
    s, spec = state, state.spec
    if s.status in TERMINAL:
        return []
    if s.status == Status.ROLLING_BACK:
        assert s.rollback_started_at is not None
        out, settled = _settle(s, obs, now, s.rollback_started_at)
        if settled:
            out.append(
                Decision(
                    Kind.ROLLBACK_DONE,
                    s.phase,
                    "every reachable device is back on the old release",
                    {},
                    f"{s.rollout}:rollback_done",
                )
            )
        return out or [_wait(f"rolling back: {len(obs.pending)} device(s) pending")]
    if s.abort_requested:
        who = s.abort_requested
        reason = f"aborted by {who['actor']}" + (f": {who['reason']}" if who["reason"] else "")
        return [_rollback(s, reason, {"abort": True, "command": who}, "abort")]
    if s.status == Status.FAILED:
        return [_wait("failed; abort to roll back")]
    report = _report(s, obs) if s.deployed_phase >= 0 else None
    if not s.gate_failed:
        if s.fail_requested:
            who = s.fail_requested
            return _fails(
                s,
                f"phase {s.phase} failed by {who['actor']}: {who['reason']}",
                {"command": who},
                "fail_phase",
            )
        if report is not None and report.verdict == Verdict.FAIL:
            return _fails(
                s,
                f"gate failed in phase {s.phase}: " + "; ".join(report.reasons),
                {"gates": report.to_dict()},
                "gate",
            )
    deadline = _deadline(s)
    if s.status == Status.PAUSED and not (deadline is not None and now > deadline):
        if s.pause_cause == "inconclusive" and report is not None and report.verdict == Verdict.PASS:
            # paused for lack of evidence, and the evidence has come: carry on as after the bake
            return _after_bake(s, report, now)
        return [_wait(f"paused: {s.pause_reason}")]
    if deadline is not None and now > deadline:
        reason = f"progress deadline {format_duration(spec.progress_deadline)} exceeded in phase {s.phase} ({s.status})"
        if spec.rollback == "automatic":
            return [_rollback(s, reason, {}, "deadline")]
        return [Decision(Kind.FAIL, s.phase, reason, {"cause": "deadline"}, f"{s.rollout}:fail")]

    if s.status == Status.PENDING and spec.strategy.type == "blueGreen":
        if not in_window(spec, now):
            return [_wait("outside the maintenance window: staging waits")]
        return [
            Decision(
                Kind.STAGE,
                None,
                "stage the release on the inactive slot of every target device",
                {},
                f"{s.rollout}:stage",
            )
        ]
    if s.status == Status.STAGING and not s.staged:
        assert s.step_started_at is not None
        out, settled = _settle(s, obs, now, s.step_started_at)
        if settled:
            out.append(Decision(Kind.STAGED, None, "staged on the inactive slot", {}, f"{s.rollout}:staged"))
        return out or [_wait(f"staging: {len(obs.pending)} device(s) pending")]
    if s.status in (Status.PENDING, Status.STAGING):
        return _enter_phase(s, 0, now, {})
    if s.status == Status.AWAITING_APPROVAL and not s.deployed:
        return _enter_phase(s, max(s.phase, 0), now, {})  # the first phase awaits approval
    if s.status == Status.DEPLOYING and not s.deployed:
        return _enter_phase(s, s.phase, now, {})
    if s.status == Status.DEPLOYING:
        assert s.step_started_at is not None
        if obs.phase is not None and obs.phase != s.phase:
            return [_wait(f"observation is for phase {obs.phase}, not {s.phase}: ignored")]
        out, settled = _settle(s, obs, now, s.step_started_at)
        if settled:
            out.append(
                Decision(
                    Kind.START_BAKE,
                    s.phase,
                    f"phase {s.phase} deployed; bake {format_duration(spec.phases[s.phase].bake)}",
                    {},
                    _key(s, Kind.START_BAKE),
                )
            )
        return out or [_wait(f"deploying phase {s.phase}: {len(obs.pending)} device(s) pending")]
    # BAKING or AWAITING_APPROVAL of the next phase
    assert s.bake_started_at is not None
    bake_end = s.bake_started_at + spec.phases[s.phase].bake
    if now < bake_end:
        return [_wait(f"baking phase {s.phase} until {iso(bake_end)}")]
    return _after_bake(s, report, now)


def _deadline(s: RolloutState) -> datetime | None:
    d = s.spec.progress_deadline
    if s.status == Status.STAGING and not s.staged and s.step_started_at:
        return s.step_started_at + d
    if s.status == Status.DEPLOYING and s.deployed and s.step_started_at:
        return s.step_started_at + d
    if s.status == Status.BAKING and s.bake_started_at:
        return s.bake_started_at + s.spec.phases[s.phase].bake + d
    if s.status == Status.PAUSED and s.pause_cause == "inconclusive" and s.paused_at:
        return s.paused_at + d  # paused for lack of evidence and nobody acted
    return None  # waits for approvals and maintenance windows are not lack of progress


def _after_bake(s: RolloutState, report: GateReport | None, now: datetime) -> list[Decision]:
    spec = s.spec
    if report is None:
        return [_wait(f"phase {s.phase} baked; waiting for a gate report")]
    out: list[Decision] = []
    due = s.last_eval_at is None or now - s.last_eval_at >= spec.gate_interval
    if report.verdict == Verdict.INCONCLUSIVE:
        streak = s.inconclusive_streak + due
        why = "; ".join(report.reasons)
        rec = [
            Decision(
                Kind.RECORD_GATES,
                s.phase,
                f"gates inconclusive ({streak}/{spec.max_inconclusive}): {why}",
                {"verdict": str(report.verdict), "gates": report.to_dict()},
                _key(s, Kind.RECORD_GATES, s.epoch, s.gate_evals),
            )
        ] * due
        # Checked even when no evaluation is due, so a crash after recording the last
        # inconclusive evaluation still applies the policy on restart.
        if streak > spec.max_inconclusive:
            return rec + _inconclusive(s, streak, why, report, now)
        return rec + [_wait(f"gates inconclusive ({streak}/{spec.max_inconclusive}): {why}")]
    # PASS: promote, complete, or ask for approval
    if s.phase == len(spec.phases) - 1:
        return [
            Decision(
                Kind.COMPLETE,
                s.phase,
                "last phase baked and passed its gates",
                {"gates": report.to_dict()},
                f"{s.rollout}:complete",
            )
        ]
    nxt = s.phase + 1
    if spec.phases[nxt].approval == "manual" and nxt not in s.approvals:
        if due and s.inconclusive_streak:
            out.append(
                Decision(
                    Kind.RECORD_GATES,
                    s.phase,
                    "gates pass",
                    {"verdict": str(report.verdict), "gates": report.to_dict()},
                    _key(s, Kind.RECORD_GATES, s.epoch, s.gate_evals),
                )
            )
        if nxt not in s.approval_requested:
            out.append(
                Decision(
                    Kind.REQUEST_APPROVAL,
                    nxt,
                    f"phase {s.phase} passed; phase {nxt} ({spec.phases[nxt].percent:g}%) needs a manual approval",
                    {"gates": report.to_dict()},
                    _key(s, Kind.REQUEST_APPROVAL, phase=nxt),
                )
            )
        return out + [_wait(f"awaiting approval of phase {nxt}")]
    approval = s.approvals.get(nxt)
    inputs = {"gates": report.to_dict(), **({"approval": approval} if approval else {})}
    out.append(
        Decision(
            Kind.PROMOTE,
            nxt,
            f"phase {s.phase} baked and passed its gates",
            inputs,
            _key(s, Kind.PROMOTE, phase=nxt),
        )
    )
    return out + _deploy(s, nxt, now)


def _inconclusive(
    s: RolloutState, streak: int, why: str, report: GateReport, now: datetime
) -> list[Decision]:
    """The spec's ``on_inconclusive`` policy once the gates stayed inconclusive too long."""
    spec = s.spec
    reason = f"gates inconclusive {streak} times in a row (max_inconclusive {spec.max_inconclusive}): {why}"
    inputs = {"gates": report.to_dict(), "on_inconclusive": spec.on_inconclusive}
    if spec.on_inconclusive == "rollback":
        return _fails(s, reason, inputs, "inconclusive")
    deadline = _deadline(s)
    until = f" (progress deadline {iso(deadline)})" if deadline else ""
    if spec.on_inconclusive == "extend":
        return [_wait(f"{reason}; bake extended{until}")]
    return [
        Decision(
            Kind.PAUSE,
            s.phase,
            f"{reason}; paused: resume to keep evaluating, abort to roll back; "
            f"rolled back after progress_deadline {format_duration(spec.progress_deadline)} if nobody acts",
            {**inputs, "cause": "inconclusive"},
            _key(s, Kind.PAUSE, s.epoch),
        )
    ]


def _enter_phase(s: RolloutState, k: int, now: datetime, inputs: dict[str, Any]) -> list[Decision]:
    """Approval (if manual) then a deploy inside the maintenance window."""
    if s.spec.phases[k].approval == "manual" and k not in s.approvals:
        if k in s.approval_requested:
            return [_wait(f"awaiting approval of phase {k}")]
        return [
            Decision(
                Kind.REQUEST_APPROVAL,
                k,
                f"phase {k} ({s.spec.phases[k].percent:g}%) needs a manual approval",
                inputs,
                _key(s, Kind.REQUEST_APPROVAL, phase=k),
            )
        ]
    return _deploy(s, k, now)


def _deploy(s: RolloutState, k: int, now: datetime) -> list[Decision]:
    if not in_window(s.spec, now):
        return [_wait(f"outside the maintenance window: phase {k} deploys when it opens")]
    pct = s.spec.phases[k].percent
    inputs: dict[str, Any] = {"percent": pct}
    if k in s.approvals:
        inputs["approval"] = s.approvals[k]
    action = "switch" if s.spec.strategy.type == "blueGreen" else "deploy"
    inputs["action"] = action
    return [
        Decision(
            Kind.DEPLOY_PHASE,
            k,
            f"{action} phase {k} ({pct:g}% of the target)",
            inputs,
            _key(s, Kind.DEPLOY_PHASE, phase=k),
        )
    ]
