"""Progressive rollouts as pure domain logic (no Dagster): the spec, hash-bucket device
selection, statistical health gates, and the event-sourced rollout state machine.

The Dagster assets, sensor and CLI wire these to the lakehouse and the fleet backends.
Names are re-exported lazily, so ``python -m edgeplat.rollouts.spec`` runs cleanly.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "spec": ("RolloutSpec", "SpecError", "load_spec"),
    "selection": ("Assignment", "assign_phases", "bucket", "buckets", "rollout_salt"),
    "gates": ("CohortSample", "GateReport", "Verdict", "evaluate_gates"),
    "machine": (
        "CommandError",
        "Decision",
        "Event",
        "Kind",
        "Observation",
        "RolloutState",
        "Status",
        "command",
        "created_event",
        "decide",
        "desired_release",
        "new_events",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'edgeplat.rollouts' has no attribute {name!r}")
    return getattr(importlib.import_module(f"edgeplat.rollouts.{_WHERE[name]}"), name)
