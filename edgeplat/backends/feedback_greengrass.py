"""Greengrass feedback: which component version each core device runs, in which lifecycle state.

One pass over a rollout's Greengrass devices:

1. ``list_core_devices`` (100 devices a page; for the rollout's phase groups when given, else
   the account): every core device's status and ``lastStatusUpdateTimestamp``. Cheap: 10,000
   devices are 100 calls.
2. ``list_installed_components`` only for devices whose status changed since their last fact
   (or that have none): the component's version and ``lifecycleState`` (RUNNING, BROKEN,
   ERRORED, ...). A device whose version is not the desired one also gets
   ``list_effective_deployments``: the IoT job execution status of the rollout's deployment
   (QUEUED, IN_PROGRESS: not acknowledged yet; SUCCEEDED, FAILED, REJECTED, TIMED_OUT: it was).

Per-device calls run on a few threads (boto3 clients are thread-safe) under the pass's
``PassBudget``; devices the budget does not reach are returned in ``left`` for the next pass.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from edgeplat.backends.base import DeviceRef
from edgeplat.backends.feedback import PassBudget, PlatformFact

ACKNOWLEDGED = {"SUCCEEDED", "COMPLETED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED"}


@dataclass
class Observed:
    """One pass's facts, and the devices it did not reach (budget spent)."""

    facts: list[PlatformFact] = field(default_factory=list)
    left: list[DeviceRef] = field(default_factory=list)
    calls: int = 0


class GreengrassObserver:
    """Reads what Greengrass reports for a rollout's devices (see module doc)."""

    def __init__(
        self,
        gg: Any,
        *,
        thing_name: Callable[[DeviceRef], str],
        workers: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.gg, self.thing_name, self.workers, self.clock = gg, thing_name, workers, clock
        self._seen: dict[str, float] = {}  # thing -> lastStatusUpdateTimestamp already folded
        self._facts: dict[str, PlatformFact] = {}  # thing -> its last fact (re-emitted while unchanged)

    def observe(
        self,
        devices: Sequence[DeviceRef],
        *,
        component: str,
        desired_version: str,
        budget: PassBudget,
        group_arns: Sequence[str] | None = None,
        deployment_ids: Mapping[str, str] | None = None,
    ) -> Observed:
        """Facts for ``devices`` (Greengrass core devices of a rollout, members of ``group_arns``)."""
        out = Observed()
        status: dict[str, dict[str, Any]] = {}
        for arn in group_arns if group_arns is not None else [None]:
            token = None
            while True:
                if not budget.take():
                    break
                page = self.gg.list_core_devices(
                    maxResults=100,
                    **({"thingGroupArn": arn} if arn else {}),
                    **({"nextToken": token} if token else {}),
                )
                out.calls += 1
                status.update({c["coreDeviceThingName"]: c for c in page.get("coreDevices", [])})
                token = page.get("nextToken")
                if not token:
                    break
        things = {self.thing_name(d): d for d in devices}
        stale = [
            (t, d)
            for t, d in things.items()
            if t not in self._seen or _stamp(status.get(t)) != self._seen[t] or t not in status
        ]
        stale.sort(key=lambda td: self._seen.get(td[0], -1.0))  # never-observed first, then oldest

        def one(thing: str, d: DeviceRef) -> PlatformFact | None:
            try:
                return fact(thing, d)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return PlatformFact(
                        d.tenant_id,
                        d.device_id,
                        None,
                        None,
                        False,
                        self.clock(),
                        f"{thing}: not a core device",
                    )
                return None  # throttled past the client's retries, or an outage: next pass

        def fact(thing: str, d: DeviceRef) -> PlatformFact | None:
            if not budget.take():
                return None
            comps = self.gg.list_installed_components(coreDeviceThingName=thing, maxResults=100)
            row = next(
                (c for c in comps.get("installedComponents", []) if c["componentName"] == component), None
            )
            version = row.get("componentVersion") if row else None
            state = row.get("lifecycleState") if row else None
            acked, detail = version == desired_version, f"thing {thing}"
            if not acked and budget.take():
                execution = self._execution(thing, (deployment_ids or {}).get(thing))
                acked = execution in ACKNOWLEDGED
                detail += f", deployment execution {execution or 'not seen'}"
            return PlatformFact(d.tenant_id, d.device_id, version, state, acked, self.clock(), detail)

        with cf.ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            results = list(pool.map(lambda td: one(*td), stale))
        fresh = set()
        for (thing, d), fact in zip(stale, results, strict=True):
            if fact is None:
                out.left.append(d)
                continue
            fresh.add(thing)
            out.facts.append(fact)
            self._facts[thing] = fact
            self._seen[thing] = _stamp(status.get(thing))
        # unchanged devices: their last fact again (no call), so a row rewritten meanwhile gets it back
        out.facts += [self._facts[t] for t in things if t not in fresh and t in self._facts]
        out.calls = budget.calls
        return out

    def _execution(self, thing: str, deployment_id: str | None) -> str | None:
        page = self.gg.list_effective_deployments(coreDeviceThingName=thing, maxResults=100)
        rows = page.get("effectiveDeployments", [])
        if deployment_id is not None:
            rows = [r for r in rows if r["deploymentId"] == deployment_id]
        latest = max(rows, key=lambda r: _epoch(r.get("modifiedTimestamp")), default=None)
        return latest.get("coreDeviceExecutionStatus") if latest else None


def _stamp(core: Mapping[str, Any] | None) -> float:
    return -1.0 if core is None else _epoch(core.get("lastStatusUpdateTimestamp"))


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if isinstance(value, int | float) else -1.0
