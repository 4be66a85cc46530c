"""The rollout state machine: a pure ``decide(state, observation, now)`` over a folded event log.

The durable record of a rollout is its append-only event log (plain JSON-able ``Event``
records: kind, phase, at, actor, reason, inputs, key). ``RolloutState.from_events`` folds
the log into the current state, and ``decide`` returns what should happen next given an
``Observation`` of the fleet (which devices have not acknowledged the current step, the gate
report) and the time. Nothing here performs I/O: the Dagster sensor calls ``decide``,
carries out each decision, and appends its event.

Restart safety (architecture invariant 6): every recorded decision has an idempotency key
derived from the state (``"<rollout>:<phase>:<kind>"`` plus a counter where a kind can
repeat), so after a crash the same decision is recomputed with the same key, and
``new_events`` drops decisions whose key is already in the log. Executors must *act, then
append*: a crash between the two re-runs the action under the same key, so backend writes
must be idempotent per key (desired-state documents and deployments named by the key).
Devices that were offline read their desired state from ``desired_release``, which depends
only on the folded state, so they get the decision that holds when they come back.

A rollout's spec can change mid-flight (``spec_updated`` events, from GitOps) only in fields
that are safe to change once the rollout runs (``spec_change`` says which): gates, bake
times and approvals of phases not reached yet, deadlines, timeouts, the maintenance window,
the rollback policy, later phases. The fold replaces ``RolloutState.spec`` from that event on,
so every later decision uses the new spec. Anything else (release, target, selection,
strategy type, a phase already reached) needs a new rollout.

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
   evaluations apply the rollback policy, manual phases wait for an approval, and new
   deploys only start inside the maintenance window.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from edgeplat.rollouts.gates import GateReport, Verdict
from edgeplat.rollouts.spec import RolloutSpec, format_duration

CONTROLLER = "controller"


class Status(StrEnum):
    PENDING = "pending"
    STAGING = "staging"  # blue/green: installing on the inactive slot
    DEPLOYING = "deploying"
    BAKING = "baking"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"


TERMINAL = frozenset({Status.ROLLED_BACK, Status.COMPLETED, Status.ABORTED})


class Kind(StrEnum):
    """Event kinds: controller decisions first, then operator commands."""

    CREATED = "created"
    STAGE = "stage"
    STAGED = "staged"
    DEPLOY_PHASE = "deploy_phase"
    MARK_UNREACHABLE = "mark_unreachable"
    START_BAKE = "start_bake"
    RECORD_GATES = "record_gates"
    REQUEST_APPROVAL = "request_approval"
    PROMOTE = "promote"
    PAUSE = "pause"
    ROLLBACK = "rollback"
    ROLLBACK_DONE = "rollback_done"
    COMPLETE = "complete"
    FAIL = "fail"
    SPEC_UPDATED = "spec_updated"  # the spec changed in place (safe fields only)
    WAIT = "wait"  # never recorded
    # operator commands
    APPROVE = "approve"
    RESUME = "resume"
    ABORT = "abort"
    FAIL_PHASE = "fail_phase"


COMMANDS = frozenset({Kind.APPROVE, Kind.PAUSE, Kind.RESUME, Kind.ABORT, Kind.FAIL_PHASE})


class CommandError(ValueError):
    """An operator command that does not apply to the rollout's current state."""


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError(f"timestamps must be timezone-aware, got {t!r}")
    return t.isoformat()


@dataclass(frozen=True)
class Event:
    """One durable record in a rollout's log."""

    kind: str
    rollout: str
    at: datetime
    phase: int | None = None
    actor: str = CONTROLLER
    reason: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    key: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = _iso(self.at)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        at = d["at"] if isinstance(d["at"], datetime) else datetime.fromisoformat(d["at"])
        return cls(
            d["kind"],
            d["rollout"],
            at,
            d.get("phase"),
            d.get("actor", CONTROLLER),
            d.get("reason", ""),
            dict(d.get("inputs") or {}),
            d.get("key", ""),
        )


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


@dataclass
class RolloutState:
    """A rollout's state, rebuilt by folding its event log (``from_events``)."""

    rollout: str
    spec: RolloutSpec
    created_at: datetime
    rollout_id: str = ""
    status: Status = Status.PENDING
    phase: int = -1  # the phase being deployed or baked
    deployed: bool = False  # whether ``phase`` has been sent to devices
    staged: bool = False
    step_started_at: datetime | None = None
    window_start: datetime | None = None  # gate evidence counts from here (deploy, or resume after a failure)
    bake_started_at: datetime | None = None
    approvals: dict[int, dict[str, Any]] = field(default_factory=dict)
    approval_requested: set[int] = field(default_factory=set)
    gate_evals: int = 0
    inconclusive_streak: int = 0
    last_eval_at: datetime | None = None
    gate_failed: bool = False
    fail_requested: dict[str, Any] | None = None
    abort_requested: dict[str, Any] | None = None
    paused_from: Status | None = None
    pause_reason: str = ""
    epoch: int = 0  # resumes so far: keeps keys of repeatable decisions distinct
    unreachable: set[str] = field(default_factory=set)
    rollback_reason: str = ""
    rollback_started_at: datetime | None = None
    aborted: bool = False
    keys: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)

    @classmethod
    def from_events(
        cls, events: Iterable[Event | Mapping[str, Any]], spec: RolloutSpec | None = None
    ) -> RolloutState:
        """Fold a log; the first event must be ``created`` (it carries the spec unless given)."""
        evs = [e if isinstance(e, Event) else Event.from_dict(e) for e in events]
        if not evs or evs[0].kind != Kind.CREATED:
            raise ValueError(
                "a rollout event log starts with a 'created' event; use created_event() to make one"
            )
        first = evs[0]
        spec = spec or RolloutSpec.model_validate(first.inputs["spec"])
        state = cls(first.rollout, spec, first.at, rollout_id=first.inputs.get("rollout_id", ""))
        for e in evs:
            state.apply(e)
        return state

    @property
    def deployed_phase(self) -> int:
        """The highest phase whose devices have been told to run the release (-1: none)."""
        return self.phase if self.deployed else self.phase - 1

    @property
    def gate_window_start(self) -> datetime | None:
        """Aggregate health from here for the gate report of the current phase."""
        return self.window_start if self.deployed else None

    def apply(self, e: Event) -> None:
        """Fold one event. Events whose key was already folded are ignored (duplicate appends)."""
        if e.key and e.key in self.keys:
            return
        if e.key:
            self.keys.add(e.key)
        self.events.append(e)
        k = e.kind
        if k == Kind.CREATED:
            self.status = Status.PENDING
        elif k == Kind.STAGE:
            self.status, self.step_started_at = Status.STAGING, e.at
        elif k == Kind.STAGED:
            self.staged = True
        elif k == Kind.PROMOTE:
            self._enter(e.phase, e.at, deployed=False)
        elif k == Kind.DEPLOY_PHASE:
            if e.phase != self.phase:
                self._enter(e.phase, e.at, deployed=False)
            self.deployed, self.step_started_at, self.status = True, e.at, Status.DEPLOYING
            self.window_start = e.at
        elif k == Kind.MARK_UNREACHABLE:
            self.unreachable.update(e.inputs.get("devices", ()))
        elif k == Kind.START_BAKE:
            self.status, self.bake_started_at = Status.BAKING, e.at
        elif k == Kind.RECORD_GATES:
            self.gate_evals += 1
            self.last_eval_at = e.at
            inconclusive = e.inputs.get("verdict") == Verdict.INCONCLUSIVE
            self.inconclusive_streak = self.inconclusive_streak + 1 if inconclusive else 0
        elif k == Kind.REQUEST_APPROVAL:
            self.approval_requested.add(e.phase)
            if self.status not in (Status.PAUSED, Status.ROLLING_BACK):
                self.status = Status.AWAITING_APPROVAL
        elif k == Kind.APPROVE:
            self.approvals[e.phase] = {"actor": e.actor, "reason": e.reason, "at": _iso(e.at)}
        elif k == Kind.PAUSE:
            if self.status != Status.PAUSED:
                self.paused_from = self.status
            self.status, self.pause_reason = Status.PAUSED, e.reason
            if e.inputs.get("cause") in ("gate", "fail_phase", "inconclusive"):
                self.gate_failed = True
        elif k == Kind.RESUME:
            self._resume(e.at)
        elif k == Kind.ABORT:
            self.abort_requested = {"actor": e.actor, "reason": e.reason, "at": _iso(e.at)}
        elif k == Kind.FAIL_PHASE:
            self.fail_requested = {"actor": e.actor, "reason": e.reason, "at": _iso(e.at)}
        elif k == Kind.ROLLBACK:
            self.status, self.rollback_started_at = Status.ROLLING_BACK, e.at
            self.rollback_reason, self.aborted = e.reason, bool(e.inputs.get("abort"))
        elif k == Kind.ROLLBACK_DONE:
            self.status = Status.ABORTED if self.aborted else Status.ROLLED_BACK
        elif k == Kind.COMPLETE:
            self.status = Status.COMPLETED
        elif k == Kind.FAIL:
            self.status = Status.FAILED
        elif k == Kind.SPEC_UPDATED:
            self.spec = RolloutSpec.model_validate(e.inputs["spec"])

    def _enter(self, phase: int | None, at: datetime, deployed: bool) -> None:
        self.phase = -1 if phase is None else phase
        self.deployed, self.status = deployed, Status.DEPLOYING
        self.bake_started_at = self.last_eval_at = None
        self.gate_evals = self.inconclusive_streak = 0
        self.gate_failed, self.fail_requested = False, None

    def _resume(self, at: datetime) -> None:
        if self.status != Status.PAUSED:
            return
        self.status, self.pause_reason = self.paused_from or Status.PENDING, ""
        self.epoch += 1
        if self.gate_failed or self.fail_requested:
            # A phase that failed a gate must bake again and pass afresh before promotion.
            self.gate_failed, self.fail_requested = False, None
            self.window_start = at  # the failing evidence must not count against the fix
            if self.status in (Status.BAKING, Status.AWAITING_APPROVAL):
                self.status, self.bake_started_at = Status.BAKING, at
        self.inconclusive_streak, self.last_eval_at = 0, None


# ---------------------------------------------------------------- helpers for callers


def created_event(spec: RolloutSpec, rollout_id: str, at: datetime, actor: str) -> Event:
    """The first event of a rollout's log: the spec as launched, who launched it, when."""
    return Event(
        Kind.CREATED,
        spec.name,
        at,
        None,
        actor,
        "launched",
        {"spec": spec.model_dump(mode="json"), "rollout_id": rollout_id},
        f"{spec.name}:created",
    )


def command(
    state: RolloutState,
    kind: str,
    actor: str,
    at: datetime,
    reason: str = "",
    phase: int | None = None,
    request_id: str = "",
) -> Event:
    """An operator command event, checked against the current state.

    ``approve`` names the phase it approves (default: the one awaiting approval), so an
    approval can never carry over to a later phase. ``request_id`` (e.g. the UI request)
    deduplicates double submissions.
    """
    try:
        kind = Kind(kind)
    except ValueError:
        raise CommandError(
            f"unknown command {kind!r}; use one of {sorted(str(c) for c in COMMANDS)}"
        ) from None
    if kind not in COMMANDS:
        raise CommandError(
            f"{kind!r} is not an operator command; use one of {sorted(str(c) for c in COMMANDS)}"
        )
    if not actor:
        raise CommandError("commands need an actor (who)")
    s = state.status
    if s in TERMINAL:
        raise CommandError(f"rollout {state.rollout!r} is {s}; no command applies")
    if s == Status.ROLLING_BACK:
        raise CommandError("the rollout is rolling back; no command applies")
    if s == Status.FAILED and kind != Kind.ABORT:
        raise CommandError("the rollout failed; only abort (roll back) applies")
    if kind == Kind.APPROVE:
        waiting = sorted(state.approval_requested - set(state.approvals))
        phase = waiting[0] if phase is None and waiting else phase
        if phase is None or phase not in state.approval_requested:
            raise CommandError(f"nothing awaits approval (status {s}); approvals name the phase they approve")
        if phase in state.approvals:
            raise CommandError(f"phase {phase} is already approved by {state.approvals[phase]['actor']}")
    elif kind == Kind.PAUSE and s == Status.PAUSED:
        raise CommandError("the rollout is already paused")
    elif kind == Kind.RESUME and s != Status.PAUSED:
        raise CommandError(f"cannot resume a rollout that is {s} (only paused ones)")
    elif kind == Kind.FAIL_PHASE and not state.deployed:
        raise CommandError(f"no deployed phase to fail (status {s})")
    phase = state.phase if phase is None else phase
    key = f"{state.rollout}:cmd:{kind}:{request_id or _iso(at)}"
    return Event(str(kind), state.rollout, at, phase, actor, reason, {"command": True}, key)


# Top-level spec fields that may change while a rollout runs, and why the others may not.
SAFE_FIELDS = frozenset(
    {
        "gates",
        "max_inconclusive",
        "gate_interval",
        "progress_deadline",
        "device_timeout",
        "maintenance_window",
        "rollback",
    }
)
_UNSAFE_WHY = {
    "name": "the rollout name identifies the rollout",
    "release": "the release being shipped changed; updated devices run the old one",
    "target": "the target selector changed; devices already updated may fall outside it",
    "selection": "salt or stratification changed; devices would move between phases",
    "strategy.type": "the strategy type changed",
}
_PHASE = re.compile(r"^strategy\.phases\[(\d+)\]")


@dataclass(frozen=True)
class SpecChange:
    """How a new spec differs from a rollout's current one: every changed field path, and the
    changes that cannot be applied in place (``"<path>: <why>"``)."""

    changed: tuple[str, ...]
    unsafe: tuple[str, ...]

    @property
    def in_place(self) -> bool:
        """True if something changed and all of it may change while the rollout runs."""
        return bool(self.changed) and not self.unsafe


def _diff(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
        return out
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and all(isinstance(x, dict) for x in old + new)
        and old + new
    ):
        out = []
        for i in range(max(len(old), len(new))):
            a = old[i] if i < len(old) else None
            b = new[i] if i < len(new) else None
            out += _diff(a, b, f"{path}[{i}]") if a is not None and b is not None else [f"{path}[{i}]"]
        return out
    return [] if old == new else [path]


def spec_change(state: RolloutState, spec: RolloutSpec) -> SpecChange:
    """Classify ``spec`` against the rollout's current spec (see the module docstring).

    A phase is reached once it is the current phase (deploying, baking, or approved and
    deployed); its fields, and those of earlier phases, are fixed from then on.
    """
    changed = _diff(state.spec.model_dump(mode="json"), spec.model_dump(mode="json"), "")
    unsafe = []
    for path in changed:
        top = re.split(r"[.\[]", path, maxsplit=1)[0]
        phase = _PHASE.match(path)
        if top in SAFE_FIELDS:
            continue
        if phase is not None:
            k = int(phase.group(1))
            if k > state.phase:
                continue
            unsafe.append(f"{path}: phase {k} is already reached (the rollout is in phase {state.phase})")
        else:
            key = "strategy.type" if path == "strategy.type" else top
            unsafe.append(f"{path}: {_UNSAFE_WHY.get(key, 'cannot change while the rollout runs')}")
    return SpecChange(tuple(changed), tuple(unsafe))


def spec_updated_event(
    state: RolloutState,
    spec: RolloutSpec,
    actor: str,
    at: datetime,
    reason: str = "",
    request_id: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> Event:
    """A ``spec_updated`` event moving the rollout to ``spec`` in place.

    Raises ``CommandError`` when the rollout is no longer running, nothing changed, or a
    change cannot be applied in place (the message names the fields; launch a new rollout).
    ``request_id`` (e.g. the git commit) makes the update idempotent.
    """
    if not actor:
        raise CommandError("spec updates need an actor (who)")
    if (
        state.status in TERMINAL
        or state.status in (Status.ROLLING_BACK, Status.FAILED)
        or state.abort_requested
    ):
        raise CommandError(f"rollout {state.rollout!r} is {state.status}; its spec cannot change any more")
    change = spec_change(state, spec)
    if not change.changed:
        raise CommandError("the new spec is identical to the rollout's current spec")
    if change.unsafe:
        raise CommandError(
            "these changes cannot be applied to a running rollout (launch a new one): "
            + "; ".join(change.unsafe)
        )
    body = spec.model_dump(mode="json")
    token = (
        request_id or hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=8).hexdigest()
    )
    return Event(
        str(Kind.SPEC_UPDATED),
        state.rollout,
        at,
        state.phase,
        actor,
        reason or f"spec updated: {', '.join(change.changed)}",
        {**(inputs or {}), "spec": body, "changed": list(change.changed)},
        f"{state.rollout}:spec_updated:{token}",
    )


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


def desired_release(state: RolloutState, device_phase: int) -> str:
    """``"new"`` or ``"old"``: what a device in ``device_phase`` (-1: none) should run now."""
    if state.status in (Status.ROLLING_BACK, Status.ROLLED_BACK, Status.ABORTED):
        return "old"
    return "new" if 0 <= device_phase <= state.deployed_phase else "old"


def in_window(spec: RolloutSpec, now: datetime) -> bool:
    return spec.maintenance_window is None or spec.maintenance_window.contains(now)


# ---------------------------------------------------------------- decide


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
    _iso(now)
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
    if s.status == Status.PAUSED:
        return [_wait(f"paused: {s.pause_reason}")]
    deadline = _deadline(s)
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
        return [_wait(f"baking phase {s.phase} until {_iso(bake_end)}")]
    return _after_bake(s, report, now)


def _deadline(s: RolloutState) -> datetime | None:
    d = s.spec.progress_deadline
    if s.status == Status.STAGING and not s.staged and s.step_started_at:
        return s.step_started_at + d
    if s.status == Status.DEPLOYING and s.deployed and s.step_started_at:
        return s.step_started_at + d
    if s.status == Status.BAKING and s.bake_started_at:
        return s.bake_started_at + s.spec.phases[s.phase].bake + d
    return None  # waits for approvals and maintenance windows are not lack of progress


def _after_bake(s: RolloutState, report: GateReport | None, now: datetime) -> list[Decision]:
    spec = s.spec
    if report is None:
        return [_wait(f"phase {s.phase} baked; waiting for a gate report")]
    out: list[Decision] = []
    due = s.last_eval_at is None or now - s.last_eval_at >= spec.gate_interval
    if report.verdict == Verdict.INCONCLUSIVE:
        rec = [
            Decision(
                Kind.RECORD_GATES,
                s.phase,
                "gates inconclusive",
                {"verdict": str(report.verdict), "gates": report.to_dict()},
                _key(s, Kind.RECORD_GATES, s.epoch, s.gate_evals),
            )
        ] * due
        # Checked even when no evaluation is due, so a crash after recording the last
        # inconclusive evaluation still applies the policy on restart.
        streak = s.inconclusive_streak + due
        if streak > spec.max_inconclusive:
            reason = f"gates inconclusive {streak} times in a row (max_inconclusive {spec.max_inconclusive})"
            return rec + _fails(s, reason, {"gates": report.to_dict()}, "inconclusive")
        return rec + [
            _wait(f"gates inconclusive ({streak}/{spec.max_inconclusive}): " + "; ".join(report.reasons))
        ]
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
