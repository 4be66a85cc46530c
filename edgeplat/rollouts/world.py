"""What one controller tick reads about one rollout: its target devices, what the rollout sent
to whom and when, which version each device reports (and, for edge agents, their installers'
latest step on the release), and the phase the hash rule places it in.

``assignments`` turns the same view into the ``rollout_assignments`` table: each target
device's bucket, phase, and the release it should run now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from edgeplat.backends.base import DeviceRef
from edgeplat.rollouts import cohorts
from edgeplat.rollouts.agent_updates import UpdateFact, latest_updates
from edgeplat.rollouts.events import Kind, RolloutState, desired_release
from edgeplat.rollouts.selection import Assignment, assign_phases, rollout_salt
from edgeplat.rollouts.store import RolloutStore


@dataclass
class World:
    """What one tick read from the lakehouse about one rollout (columns, not objects: fleets are big)."""

    rollout_id: str
    targets: pa.Table
    tenants: list[str]
    devices: list[str]
    platforms: list[str | None]
    keys: list[str]  # "tenant/device" per target row
    reported: dict[str, str | None]
    sent_deploy: dict[str, datetime]
    sent_phase: dict[str, int | None]
    sent_rollback: dict[str, datetime]
    sent_stage: dict[str, datetime]
    extra_refs: dict[str, DeviceRef]  # sent devices that have left the target
    # edge agents' latest installer step about the release, "tenant/device" -> fact (agent_updates)
    agent_updates: dict[str, UpdateFact] = field(default_factory=dict)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    _assignment: Assignment | None = None
    _index: dict[str, int] | None = None

    @classmethod
    def load(
        cls,
        con: duckdb.DuckDBPyConnection,
        store: RolloutStore,
        rollout_id: str,
        s: RolloutState,
        cache: dict[str, pa.Table] | None = None,
        sent: pa.Table | None = None,
    ) -> World:
        sql, params = cohorts.target_filter(s.spec)
        ckey = json.dumps([sql, params], default=str)
        if cache is not None and ckey in cache:
            targets = cache[ckey]
        else:
            targets = cohorts.target_devices(con, s.spec)
            if cache is not None:
                cache[ckey] = targets
        tenants = targets.column("tenant_id").to_pylist()
        devices = targets.column("device_id").to_pylist()
        keys = [f"{t}/{d}" for t, d in zip(tenants, devices, strict=True)]
        sent = store.sent(rollout_id, con) if sent is None else sent
        sent_deploy: dict[str, datetime] = {}
        sent_phase: dict[str, int | None] = {}
        sent_rollback: dict[str, datetime] = {}
        sent_stage: dict[str, datetime] = {}
        extra: dict[str, DeviceRef] = {}
        cols = [
            sent.column(c).to_pylist()
            for c in ("tenant_id", "device_id", "platform", "phase", "action", "at")
        ]
        for t, d, p, ph, action, at in zip(*cols, strict=True):
            k = f"{t}/{d}"
            if action == "deploy":
                sent_deploy[k], sent_phase[k] = at, ph
            elif action == "stage":
                sent_stage[k] = at
            else:
                sent_rollback[k] = at
            extra[k] = DeviceRef(t, d, p or "edge_agent")
        reported = dict(zip(keys, targets.column("reported_version").to_pylist(), strict=True))
        missing = [k for k in sent_deploy if k not in reported]
        if missing:  # devices that left the target after they were sent the release
            all_versions = cohorts.reported_versions(con, s.spec.target.tenants)
            for k in missing:
                t, d = k.split("/", 1)
                reported[k] = all_versions.get((t, d))
        updates: dict[str, UpdateFact] = {}
        if sent_deploy:
            since = min(sent_deploy.values())
            facts = latest_updates(con, s.spec.target.tenants, s.spec.release.version, since)
            updates = {f"{t}/{d}": fact for (t, d), fact in facts.items()}
        return cls(
            rollout_id,
            targets,
            tenants,
            devices,
            targets.column("platform").to_pylist(),
            keys,
            reported,
            sent_deploy,
            sent_phase,
            sent_rollback,
            sent_stage,
            extra,
            updates,
        )

    def ref(self, key: str) -> DeviceRef:
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.keys)}
        i = self._index.get(key)
        if i is None:
            return self.extra_refs[key]
        tags = self.targets.column("tags")[i].as_py()
        return DeviceRef(self.tenants[i], self.devices[i], self.platforms[i] or "edge_agent", _tags(tags))

    def sent_mask(self) -> np.ndarray:
        return np.fromiter((k in self.sent_deploy for k in self.keys), dtype=bool, count=len(self.keys))

    def assignment(self, s: RolloutState) -> Assignment:
        if self._assignment is None:
            spec = s.spec
            salt = rollout_salt(spec.name, s.rollout_id, spec.selection.salt)
            floor = _last_thresholds(s)
            rows = pa.table(
                {
                    "device_id": pa.array(self.keys, pa.string()),
                    "tenant_id": pa.array(self.tenants, pa.string()),
                }
            )
            if spec.selection.stratify_by and spec.selection.stratify_by.startswith("tag:"):
                tag = spec.selection.stratify_by[4:]
                vals = [_tags(t).get(tag, "") for t in self.targets.column("tags").to_pylist()]
                rows = rows.append_column(tag, pa.array(vals, pa.string()))
            # Ids are unique per tenant only: hash "tenant/device" so equal ids in two tenants differ.
            self._assignment = assign_phases(
                rows,
                [p.percent for p in spec.phases],
                salt,
                spec.selection.stratify_by,
                floor,
                [p.min_devices for p in spec.phases],
            )
        return self._assignment


def _tags(text: Any) -> dict[str, str]:
    if not text:
        return {}
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _last_thresholds(s: RolloutState) -> dict[str, list[float]] | None:
    """The sticky floor for stratified placement: the thresholds recorded at the last deploy, for
    the phases deployed so far only (later phases are placed afresh: an in-place spec update
    may have inserted or changed them)."""
    for e in reversed(s.events):
        if e.kind == Kind.DEPLOY_PHASE and e.inputs.get("thresholds"):
            n = max(s.deployed_phase + 1, 0)
            return {label: list(t[:n]) for label, t in e.inputs["thresholds"].items()}
    return None


def assignments(
    con: duckdb.DuckDBPyConnection, store: RolloutStore, rollout_id: str, now: datetime | None = None
) -> pa.Table:
    """Every target device of the rollout with its bucket, phase, and the release it should run now
    (``desired_version`` NULL: whatever it ran before the rollout)."""
    state = RolloutState.from_events(store.events(rollout_id, con))
    w = World.load(con, store, rollout_id, state)
    a = w.assignment(state)
    slot = "inactive" if state.spec.strategy.type == "blueGreen" else "in_place"
    new = {p: desired_release(state, p) == "new" for p in set(a.phase.tolist())}
    return pa.table(
        {
            "tenant_id": w.targets.column("tenant_id"),
            "device_id": w.targets.column("device_id"),
            "bucket": pa.array(a.buckets.astype("int32")),
            "phase": pa.array(a.phase.astype("int32")),
            "desired_version": pa.array(
                [state.spec.release.version if new[int(p)] else None for p in a.phase], pa.string()
            ),
            "desired_slot": pa.array([slot if new[int(p)] else None for p in a.phase], pa.string()),
        }
    )
