"""Operator commands and in-place spec changes, checked against a rollout's folded state.

``command`` turns an operator's approve, pause, resume, abort or fail_phase into an event, or
raises ``CommandError`` when it does not apply to the rollout's current state.

A rollout's spec can change mid-flight (``spec_updated`` events, from GitOps) only in fields
that are safe to change once the rollout runs (``spec_change`` says which): gates, bake
times and approvals of phases not reached yet, deadlines, timeouts, the maintenance window,
the rollback policy, later phases. The fold replaces ``RolloutState.spec`` from that event on,
so every later decision uses the new spec. Anything else (release, target, selection,
strategy type, a phase already reached) needs a new rollout.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgeplat.rollouts.events import TERMINAL, Event, Kind, RolloutState, Status, iso
from edgeplat.rollouts.spec import RolloutSpec

COMMANDS = frozenset({Kind.APPROVE, Kind.PAUSE, Kind.RESUME, Kind.ABORT, Kind.FAIL_PHASE})


class CommandError(ValueError):
    """An operator command that does not apply to the rollout's current state."""


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
    key = f"{state.rollout}:cmd:{kind}:{request_id or iso(at)}"
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
        "on_inconclusive",
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
