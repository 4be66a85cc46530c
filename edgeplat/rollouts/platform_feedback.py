"""One platform-observation pass over every active rollout: what Greengrass and IoT Hub report
about the devices each rollout sent its release to, folded into ``devices`` as facts.

The controller reads acknowledgements and running releases from ``devices``; for devices a
platform manages, this pass is what puts them there (``backends.feedback``). One
``PassBudget`` bounds the whole pass; what it does not reach is observed on the next one.
Run it from the ``platform_feedback`` asset (scheduled) or a test between controller ticks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from edgeplat.backends.base import DeviceRef, ReleaseSpec
from edgeplat.backends.feedback import PassBudget, PlatformFact, fold_facts
from edgeplat.backends.feedback_greengrass import GreengrassObserver
from edgeplat.backends.feedback_iot_edge import IotEdgeObserver
from edgeplat.rollouts.events import RolloutState
from edgeplat.rollouts.store import RolloutStore


@dataclass
class FeedbackReport:
    """What one pass observed: facts per platform, devices left for the next pass, calls, changes."""

    facts: dict[str, int] = field(default_factory=dict)
    broken: int = 0
    left: int = 0
    calls: int = 0
    changed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "facts": self.facts,
            "broken": self.broken,
            "left": self.left,
            "calls": self.calls,
            "changed": self.changed,
        }


def observe_rollouts(
    store: RolloutStore,
    *,
    greengrass: GreengrassObserver | None = None,
    iot_edge: IotEdgeObserver | None = None,
    budget: PassBudget | None = None,
) -> FeedbackReport:
    """Observe the platform devices of every active rollout and fold the facts (see module doc)."""
    budget = budget or PassBudget()
    report = FeedbackReport()
    facts: list[PlatformFact] = []
    with store.session() as con:
        for rid in store.active_ids():
            state = RolloutState.from_events(store.events(rid, con))
            release = ReleaseSpec.of(state.spec.release)
            sent = store.sent(rid, con).to_pylist()
            refs = {
                (r["tenant_id"], r["device_id"]): DeviceRef(
                    r["tenant_id"], r["device_id"], r["platform"] or ""
                )
                for r in sent
                if r["action"] == "deploy"
            }
            gg = [d for d in refs.values() if d.platform == "greengrass"]
            edge = [d for d in refs.values() if d.platform == "iot_edge"]
            if greengrass is not None and gg and release.greengrass is not None:
                got = greengrass.observe(
                    gg,
                    component=release.greengrass.component,
                    desired_version=release.greengrass.version,
                    budget=budget,
                )
                # the component version the release ships is the release's version for the controller
                as_release = {release.greengrass.version: release.version}
                facts += [replace(f, version=as_release.get(f.version, f.version)) for f in got.facts]
                report.left += len(got.left)
                report.facts["greengrass"] = report.facts.get("greengrass", 0) + len(got.facts)
            if iot_edge is not None and edge and release.iot_edge is not None:
                got = iot_edge.observe(
                    edge,
                    module=release.iot_edge.module,
                    desired_image=release.iot_edge.image,
                    versions={release.iot_edge.image: release.version},
                    budget=budget,
                )
                facts += got.facts
                report.left += len(got.left)
                report.facts["iot_edge"] = report.facts.get("iot_edge", 0) + len(got.facts)
        report.broken = sum(f.broken for f in facts)
        report.calls = budget.calls
        report.changed = store.write(lambda c: fold_facts(c, facts), "platform feedback")
    return report
