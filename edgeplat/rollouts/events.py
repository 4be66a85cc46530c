"""A rollout's durable record: its append-only event log, and the state folded from it.

The log is plain JSON-able ``Event`` records (kind, phase, at, actor, reason, inputs, key).
``RolloutState.from_events`` folds it into the current state, which the decisions
(``decide``), the operator commands and spec changes (``commands``) and the controller read.
Nothing here performs I/O.

Recorded events carry an idempotency key, and the fold ignores a key it has already folded, so
an event appended twice (a retry after a crash, a double submission) counts once. Devices that
were offline read their desired state from ``desired_release``, which depends only on the
folded state, so they get the decision that holds when they come back (architecture
invariant 6).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from edgeplat.rollouts.gates import Verdict
from edgeplat.rollouts.spec import RolloutSpec

CONTROLLER = "controller"


class Status(StrEnum):
    """Where a rollout stands, as folded from its log."""

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


def iso(t: datetime) -> str:
    """``t`` as ISO text; naive times are refused (every rollout time is timezone-aware)."""
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
        d["at"] = iso(self.at)
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
    pause_cause: str = ""  # "inconclusive" when the on_inconclusive policy paused it
    paused_at: datetime | None = None
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

    def phase_windows(self, now: datetime) -> list[tuple[int, datetime, datetime]]:
        """(phase, start, end) of every deployed phase: from its deploy to the next deploy, or to
        the rollback or completion that ended the rollout, or to ``now``."""
        starts = [(e.phase, e.at) for e in self.events if e.kind == Kind.DEPLOY_PHASE and e.phase is not None]
        ends = [e.at for e in self.events if e.kind in (Kind.ROLLBACK, Kind.COMPLETE)]
        out = []
        for i, (phase, start) in enumerate(starts):
            end = starts[i + 1][1] if i + 1 < len(starts) else min([t for t in ends if t >= start] or [now])
            out.append((phase, start, max(end, start)))
        return out

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
            self.approvals[e.phase] = {"actor": e.actor, "reason": e.reason, "at": iso(e.at)}
        elif k == Kind.PAUSE:
            if self.status != Status.PAUSED:
                self.paused_from = self.status
            self.status, self.pause_reason = Status.PAUSED, e.reason
            self.pause_cause, self.paused_at = str(e.inputs.get("cause", "")), e.at
            # An inconclusive pause is not a failure: the gates keep looking (a FAIL still rolls
            # back) and a resume continues the bake.
            if e.inputs.get("cause") in ("gate", "fail_phase"):
                self.gate_failed = True
        elif k == Kind.RESUME:
            self._resume(e.at)
        elif k == Kind.ABORT:
            self.abort_requested = {"actor": e.actor, "reason": e.reason, "at": iso(e.at)}
        elif k == Kind.FAIL_PHASE:
            self.fail_requested = {"actor": e.actor, "reason": e.reason, "at": iso(e.at)}
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
        self.pause_reason, self.pause_cause, self.paused_at = "", "", None

    def _resume(self, at: datetime) -> None:
        if self.status != Status.PAUSED:
            return
        self.status, self.pause_reason = self.paused_from or Status.PENDING, ""
        self.pause_cause, self.paused_at = "", None
        self.epoch += 1
        if self.gate_failed or self.fail_requested:
            # A phase that failed a gate must bake again and pass afresh before promotion.
            self.gate_failed, self.fail_requested = False, None
            self.window_start = at  # the failing evidence must not count against the fix
            if self.status in (Status.BAKING, Status.AWAITING_APPROVAL):
                self.status, self.bake_started_at = Status.BAKING, at
        self.inconclusive_streak, self.last_eval_at = 0, None


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


def desired_release(state: RolloutState, device_phase: int) -> str:
    """``"new"`` or ``"old"``: what a device in ``device_phase`` (-1: none) should run now."""
    if state.status in (Status.ROLLING_BACK, Status.ROLLED_BACK, Status.ABORTED):
        return "old"
    return "new" if 0 <= device_phase <= state.deployed_phase else "old"
