"""In-place spec updates: which changes are safe mid-flight, the ``spec_updated`` event, and its fold."""

from __future__ import annotations

from datetime import timedelta

import pytest

from edgeplat.rollouts.commands import CommandError, spec_change, spec_updated_event
from edgeplat.rollouts.events import Kind, Status
from tests.support.machine import Driver, make_spec

PHASES = [
    {"percent": 1, "bake": "1h"},
    {"percent": 10, "bake": "1h"},
    {"percent": 50, "bake": "1h", "approval": "manual"},
    {"percent": 100, "bake": "30m"},
]


def phases(**changes: dict) -> list[dict]:
    """PHASES with ``p<k>={...}`` merged into phase k."""
    out = [dict(p) for p in PHASES]
    for name, change in changes.items():
        out[int(name[1:])].update(change)
    return out


def in_phase_1() -> Driver:
    d = Driver(make_spec())
    d.run(until=lambda s: s.phase == 1 and s.status == Status.BAKING)
    return d


def test_safe_changes_are_in_place_and_name_their_fields():
    d = in_phase_1()
    new = make_spec(
        strategy={"type": "canary", "phases": phases(p2={"approval": "auto", "bake": "2h"})},
        progress_deadline="5h",
        rollback="pause",
        maintenance_window={"cron": "0 22 * * *", "duration": "4h"},
        gates=[{"metric": "error_rate", "max_ratio": 2.0}],
    )
    change = spec_change(d.state, new)
    assert change.in_place and change.unsafe == ()
    assert set(change.changed) == {
        "strategy.phases[2].approval",
        "strategy.phases[2].bake",
        "progress_deadline",
        "rollback",
        "maintenance_window",
        "gates[0].max_ratio",
    }
    # adding a later phase (inserted before the last) is in place too
    added = PHASES[:3] + [{"percent": 75, "bake": "1h"}, PHASES[3]]
    assert spec_change(d.state, make_spec(strategy={"type": "canary", "phases": added})).in_place


@pytest.mark.parametrize(
    ("over", "field"),
    [
        (
            {
                "release": {
                    "name": "app",
                    "version": "2.0.1",
                    "greengrass": {"component": "com.acme.App", "version": "2.0.1"},
                }
            },
            "release.version",
        ),
        ({"target": {"tenants": ["acme", "globex"]}}, "target.tenants"),
        ({"selection": {"salt": "fleet"}}, "selection.salt"),
        ({"strategy": {"type": "blueGreen", "phases": PHASES}}, "strategy.type"),
        ({"strategy": {"type": "canary", "phases": phases(p1={"bake": "2h"})}}, "strategy.phases[1].bake"),
        ({"strategy": {"type": "canary", "phases": phases(p0={"percent": 2})}}, "strategy.phases[0].percent"),
    ],
)
def test_unsafe_changes_name_the_field(over, field):
    d = in_phase_1()
    change = spec_change(d.state, make_spec(**over))
    assert not change.in_place and any(u.startswith(f"{field}:") for u in change.unsafe), change
    with pytest.raises(CommandError, match=field.replace("[", r"\[").replace("]", r"\]")):
        spec_updated_event(d.state, make_spec(**over), "dana", d.now)


def test_the_fold_uses_the_new_spec_from_then_on():
    d = in_phase_1()
    d.run(until=lambda s: s.status == Status.AWAITING_APPROVAL)  # phase 2 waits for a manual approval
    new = make_spec(strategy={"type": "canary", "phases": phases(p2={"approval": "auto"}, p3={"bake": "5m"})})
    ev = spec_updated_event(d.state, new, "gitops:dana", d.now, request_id="gitops:c2")
    assert ev.kind == Kind.SPEC_UPDATED and ev.key.endswith(":spec_updated:gitops:c2")
    assert ev.inputs["changed"] == ["strategy.phases[2].approval", "strategy.phases[3].bake"]
    d.log += [ev, ev]  # a duplicate append folds once
    assert d.state.spec == new and d.kinds().count("spec_updated") == 2
    assert [e.kind for e in d.state.events].count("spec_updated") == 1
    d.run()  # no approval is needed any more, and the last phase bakes 5 minutes
    assert d.state.status == Status.COMPLETED and "approve" not in d.kinds()
    last_bake = d.first("start_bake", 3).at
    assert d.first("complete").at - last_bake < timedelta(minutes=15)
    with pytest.raises(CommandError, match="completed"):
        spec_updated_event(d.state, make_spec(progress_deadline="9h"), "dana", d.now)


def test_identical_spec_is_not_an_update():
    d = in_phase_1()
    with pytest.raises(CommandError, match="identical"):
        spec_updated_event(d.state, make_spec(), "dana", d.now)
