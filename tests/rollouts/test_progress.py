"""Devices on the release, over time: cumulative device facts that rise phase after phase (even
while updated devices stay silent) and fall only when the rollout rolls back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.events import TERMINAL, Kind, RolloutState
from edgeplat.rollouts.plots import plot_rollout
from edgeplat.rollouts.progress import ProgressPoint, progress_series, release_progress
from edgeplat.rollouts.store import RolloutStore
from tests.support.rollouts import sized_spec, small_spec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def never_falls(points: list[ProgressPoint]) -> bool:
    return all(
        b.on_release >= a.on_release and b.sent >= a.sent for a, b in zip(points, points[1:], strict=False)
    )


def test_series_counts_each_device_from_its_first_report_on_the_release_until_it_leaves() -> None:
    state = RolloutState(rollout="r1", spec=small_spec(), created_at=at(0))
    facts = [  # tenant, device, phase, deployed_at, rollback_at, on_release_at, left_at
        ("acme", "a", 0, at(5), None, at(7), None),
        ("acme", "b", 0, at(5), at(60), at(9), at(62)),
        ("acme", "c", 0, at(5), at(60), None, None),  # sent, never reported the release
        ("globex", "d", 1, at(30), None, at(30), None),
    ]
    points = progress_series(facts, state, until=at(90))
    assert [(p.at, p.sent, p.on_release) for p in points] == [
        (at(0), 0, 0),
        (at(5), 3, 0),
        (at(7), 3, 1),
        (at(9), 3, 2),
        (at(30), 4, 3),
        (at(60), 2, 3),  # rollback sent to b and c: they still run the release
        (at(62), 2, 2),  # b reported the old version
        (at(90), 2, 2),
    ]


@pytest.mark.slow
def test_devices_on_the_release_never_fall_across_phases_while_updated_devices_go_quiet(
    lake, backend, make_fleet
) -> None:
    fleet = make_fleet(devices=200)
    fleet.advance(30)
    ctl = Controller(RolloutStore(lake), backend)
    rid = ctl.launch(sized_spec(), actor="alice", now=fleet.now)
    quiet: set[str] = set()
    for _ in range(200):
        ctl.tick(rid, fleet.now)
        state = ctl.store.state(rid)
        if state.status in TERMINAL:
            break
        # every half hour, half the devices already updated stop reporting: a window
        # count of devices reporting the release drops, devices on the release do not
        if fleet.now.minute % 30 == 0:
            updated = sorted(set(fleet.ran("3.0.0")) - quiet)
            fleet.set_online({k.split("/", 1)[1] for k in updated[::2]}, False)
            quiet |= set(updated[::2])
        fleet.advance(5)
    assert state.status.value == "completed" and quiet
    with lake.session(read_only=True) as con:
        points = release_progress(con, rid, state, fleet.now)
        windowed = con.execute(  # the old chart's count: devices that reported the release per 10 minutes
            "SELECT count(DISTINCT device_id) FROM health WHERE version = '3.0.0' AND ts >= ? "
            "GROUP BY time_bucket(INTERVAL '10 minutes', ts) ORDER BY time_bucket(INTERVAL '10 minutes', ts)",
            [state.created_at],
        ).fetchall()
    assert any(b[0] < a[0] for a, b in zip(windowed, windowed[1:], strict=False)), (
        "the scenario must go quiet"
    )
    assert never_falls(points)
    deploys = [e.at for e in state.events if e.kind == Kind.DEPLOY_PHASE]
    by_phase = [max(p.on_release for p in points if p.at < end) for end in [*deploys[1:], fleet.now]]
    assert by_phase == sorted(by_phase) and by_phase[0] < by_phase[-1]
    assert points[-1].on_release == len(set(fleet.ran("3.0.0"))) == 200
    assert points[-1].sent == 200 and points[-1].phase == len(deploys) - 1


@pytest.mark.slow
def test_devices_on_the_release_fall_only_after_a_rollback(lake, backend, make_fleet, tmp_path) -> None:
    fleet = make_fleet(devices=200)
    fleet.set_release_profile("3.0.0", error_rate=0.03)
    fleet.advance(30)
    ctl = Controller(RolloutStore(lake), backend)
    rid = ctl.launch(sized_spec(), actor="alice", now=fleet.now)
    for _ in range(100):
        ctl.tick(rid, fleet.now)
        if ctl.store.state(rid).status in TERMINAL:
            break
        fleet.advance(5)
    fleet.advance(10)  # the devices report the old version again
    state = ctl.store.state(rid)
    assert state.status.value == "rolled_back"
    with lake.session(read_only=True) as con:
        points = release_progress(con, rid, state, fleet.now)
    rollback = next(e.at for e in state.events if e.kind == Kind.ROLLBACK)
    before = [p for p in points if p.at < rollback]
    assert never_falls(before) and max(p.on_release for p in before) > 0
    assert points[-1].on_release == fleet.running("3.0.0") == 0 and points[-1].sent == 0
    # the demo's chart file draws the same series
    (png,) = plot_rollout(lake, rid, tmp_path)
    assert png.read_bytes().startswith(b"\x89PNG")
