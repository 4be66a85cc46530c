"""Rollout state machine: promotion, approval, rollback/pause, deadlines, windows, restarts."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from edgeplat.rollouts.commands import CommandError, command
from edgeplat.rollouts.decide import Decision, Observation, decide, new_events
from edgeplat.rollouts.events import (
    TERMINAL,
    Kind,
    RolloutState,
    Status,
    desired_release,
)
from edgeplat.rollouts.gates import GateReport, Verdict
from edgeplat.rollouts.spec import load_spec
from tests.support.machine import PASS, T0, Driver, World, make_spec

FAIL = GateReport(Verdict.FAIL, ())
INCONCLUSIVE = GateReport(Verdict.INCONCLUSIVE, ())


def test_promotes_only_after_bake_and_passing_gates():
    d = Driver(make_spec())
    d.tick()
    assert d.kinds() == ["created", "deploy_phase"]
    d.tick()
    assert d.kinds()[-1] == "start_bake"
    bake_start = d.first("start_bake", 0).at
    d.run(until=lambda s: s.phase == 1)
    promote = d.first("promote", 1)
    assert promote.at >= bake_start + timedelta(hours=1)
    assert promote.inputs["gates"]["verdict"] == "pass"
    assert d.kinds().count("deploy_phase") == 2


def test_no_gate_report_or_inconclusive_never_promotes():
    d = Driver(make_spec(max_inconclusive=100, progress_deadline="10h"))
    d.tick()
    for _ in range(40):
        d.tick(lambda s, now: Observation(gates=INCONCLUSIVE if now.minute % 10 else None, phase=s.phase))
    assert "promote" not in d.kinds()
    assert d.kinds().count("record_gates") >= 5


def test_manual_approval_waits_and_records_who_and_why():
    d = Driver(make_spec())
    d.run(until=lambda s: s.status == Status.AWAITING_APPROVAL)
    assert d.first("request_approval").phase == 2
    with pytest.raises(CommandError, match="awaits approval"):
        d.cmd("approve", phase=3)
    for _ in range(30):  # hours pass: nothing deploys without the approval
        d.tick()
    assert d.kinds().count("deploy_phase") == 2 and d.state.status == Status.AWAITING_APPROVAL
    d.cmd("approve", reason="dashboards look fine")
    d.tick()
    deploy = d.first("deploy_phase", 2)
    assert deploy.inputs["approval"]["actor"] == "bob"
    assert deploy.inputs["approval"]["reason"] == "dashboards look fine"
    d.run()
    assert d.state.status == Status.COMPLETED
    assert d.kinds().count("deploy_phase") == 4


def test_failed_gate_rolls_back_and_never_promotes():
    d = Driver(make_spec())
    d.run(until=lambda s: s.phase == 1 and s.status == Status.BAKING)
    d.tick(lambda s, now: Observation(gates=FAIL, phase=s.phase))
    rollback = d.first("rollback")
    assert rollback.inputs["cause"] == "gate" and rollback.inputs["gates"]["verdict"] == "fail"
    assert rollback.inputs["action"] == "redeploy_old"
    d.tick(lambda s, now: Observation(pending=frozenset({"dev-1"}), gates=PASS))  # still rolling back
    assert d.state.status == Status.ROLLING_BACK
    d.tick(lambda s, now: Observation(gates=PASS))  # a PASS after the failure changes nothing
    assert d.state.status == Status.ROLLED_BACK
    assert "promote" not in d.kinds()[d.kinds().index("rollback") :]
    assert desired_release(d.state, 0) == "old"


def test_failed_gate_pauses_under_pause_policy_and_needs_a_fresh_bake():
    d = Driver(make_spec(rollback="pause"))
    d.run(until=lambda s: s.status == Status.BAKING)
    d.tick(lambda s, now: Observation(gates=FAIL, phase=s.phase))
    assert d.state.status == Status.PAUSED and d.first("pause").inputs["cause"] == "gate"
    for _ in range(20):  # passing reports while paused: no promotion past the failed gate
        d.tick()
    assert "promote" not in d.kinds()
    d.cmd("resume", reason="fixed config")
    resumed = d.now
    d.tick()
    assert d.state.status == Status.BAKING and d.state.bake_started_at == resumed
    d.tick(lambda s, now: Observation(gates=FAIL, phase=s.phase))  # fails again: pauses again
    assert d.kinds().count("pause") == 2 and "promote" not in d.kinds()
    d.cmd("resume")
    d.run(until=lambda s: s.phase == 1)
    assert d.first("promote", 1).at >= d.log[-3].at  # only after the second resume's full bake
    assert d.first("promote", 1).at >= resumed + timedelta(hours=1)


def _inconclusive_until_the_limit(**over) -> Driver:
    d = Driver(make_spec(max_inconclusive=2, progress_deadline="10h", **over))
    d.run(until=lambda s: s.status == Status.BAKING)
    for _ in range(12):  # bake
        d.tick(lambda s, now: Observation(gates=INCONCLUSIVE, phase=s.phase))
    assert d.kinds().count("record_gates") == 1
    d.tick(lambda s, now: Observation(gates=INCONCLUSIVE, phase=s.phase))
    assert d.state.inconclusive_streak == 2
    d.tick(lambda s, now: Observation(gates=INCONCLUSIVE, phase=s.phase))
    return d


def test_inconclusive_limit_rolls_back_when_the_spec_says_so():
    d = _inconclusive_until_the_limit(on_inconclusive="rollback")
    assert d.first("rollback").inputs["cause"] == "inconclusive"


def test_inconclusive_limit_pauses_by_default_and_the_deadline_ends_it():
    d = _inconclusive_until_the_limit()
    pause = d.first("pause")
    assert pause.inputs["cause"] == "inconclusive" and "inconclusive 3 times" in pause.reason
    assert d.state.status == Status.PAUSED and "rollback" not in d.kinds()
    # paused, the gates still look: a FAIL rolls back at once
    failed = Driver(make_spec(max_inconclusive=2, progress_deadline="10h"))
    failed.log, failed.now = list(d.log), d.now
    failed.tick(lambda s, now: Observation(gates=FAIL, phase=s.phase))
    assert failed.first("rollback").inputs["cause"] == "gate"
    # nobody acts: the progress deadline (10h) rolls the abandoned rollout back
    d.run(
        lambda s, now: Observation(gates=INCONCLUSIVE, phase=s.phase),
        until=lambda s: s.status != Status.PAUSED,
    )
    rb = d.first("rollback")
    assert rb.inputs["cause"] == "deadline" and rb.at >= pause.at + timedelta(hours=10)


def test_inconclusive_limit_extends_until_the_deadline():
    d = _inconclusive_until_the_limit(on_inconclusive="extend")
    assert "pause" not in d.kinds() and "rollback" not in d.kinds()
    assert d.state.status == Status.BAKING
    d.tick(lambda s, now: Observation(gates=PASS, phase=s.phase))  # evidence arrives: promoted
    assert d.first("promote", 1)


def test_progress_deadline_rolls_back_or_fails():
    stuck = lambda s, now: Observation(pending=frozenset({"dev-1"}), gates=PASS, phase=s.phase)  # noqa: E731
    d = Driver(make_spec(device_timeout="5h", progress_deadline="1h"))
    d.run(stuck)
    rb = d.first("rollback")
    assert rb.inputs["cause"] == "deadline" and rb.at > d.first("deploy_phase").at + timedelta(hours=1)

    d = Driver(make_spec(device_timeout="5h", progress_deadline="1h", rollback="pause"))
    d.run(stuck, until=lambda s: s.status == Status.FAILED)
    assert d.first("fail").inputs["cause"] == "deadline"
    for _ in range(5):
        assert all(x.kind == Kind.WAIT for x in d.tick(stuck))
    with pytest.raises(CommandError):
        d.cmd("resume")
    d.cmd("abort", reason="give up")
    d.run()
    assert d.state.status == Status.ABORTED


def test_unreachable_devices_do_not_block():
    offline = frozenset({"dev-1", "dev-2"})
    d = Driver(make_spec())
    d.tick()
    deployed_at = d.first("deploy_phase").at
    world = lambda s, now: Observation(pending=offline, gates=PASS, phase=s.phase)  # noqa: E731
    d.run(world, until=lambda s: s.status == Status.BAKING)
    mark = d.first("mark_unreachable")
    assert sorted(mark.inputs["devices"]) == ["dev-1", "dev-2"]
    assert mark.at >= deployed_at + timedelta(minutes=30)
    assert d.first("start_bake").at == mark.at
    # A device that registered later is timed from its own start.
    late = frozenset({"dev-9"})
    d.run(until=lambda s: s.phase == 1 and s.deployed)
    since = d.now
    world = lambda s, now: Observation(pending=offline | late, pending_since={"dev-9": since}, phase=s.phase)  # noqa: E731
    d.run(world, until=lambda s: s.status == Status.BAKING)
    marks = [e for e in d.log if e.kind == "mark_unreachable"]
    assert sorted(marks[-1].inputs["devices"]) == ["dev-9"] and marks[-1].at >= since + timedelta(minutes=30)


def test_outside_maintenance_window_no_deploys_but_rollbacks_proceed():
    spec = make_spec(maintenance_window={"cron": "0 22 * * *", "duration": "2h", "timezone": "UTC"})
    d = Driver(spec)  # launched at 12:00 UTC
    while d.now <= datetime(2026, 1, 5, 22, 0, tzinfo=UTC):
        d.tick()
    deploy = d.first("deploy_phase", 0)
    assert deploy.at == datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
    # Phase 1 deploys only in the next window; by then it is the next night.
    d.run(until=lambda s: s.phase == 1 and s.deployed)
    assert d.first("deploy_phase", 1).at.hour in (22, 23)
    for e in d.log:
        if e.kind in ("deploy_phase", "stage"):
            assert spec.maintenance_window.contains(e.at)
    # A failure outside the window still rolls back at once.
    d.run(until=lambda s: s.status == Status.BAKING and not spec.maintenance_window.contains(d.now))
    d.tick(lambda s, now: Observation(gates=FAIL, phase=s.phase))
    assert d.log[-1].kind == "rollback" and not spec.maintenance_window.contains(d.log[-1].at)


def test_operator_commands_pause_resume_abort_fail_phase():
    d = Driver(make_spec())
    d.run(until=lambda s: s.status == Status.BAKING)
    d.cmd("pause", reason="incident elsewhere", request_id="req-1")
    dup = command(d.state, "resume", "bob", d.now, request_id="req-x")
    assert d.state.status == Status.PAUSED
    for _ in range(20):
        assert all(x.kind == Kind.WAIT for x in d.tick())
    d.log += [dup, dup]  # a double submission folds once
    assert d.state.status == Status.BAKING and d.state.epoch == 1
    d.cmd("fail_phase", reason="customer complaint")
    d.tick()
    assert d.first("rollback").inputs["cause"] == "fail_phase"

    d = Driver(make_spec())
    d.run(until=lambda s: s.phase == 1)
    d.cmd("abort", reason="wrong build")
    d.tick(lambda s, now: Observation(pending=frozenset({"dev-1"})))
    assert d.first("rollback").inputs["abort"] is True
    d.run(lambda s, now: Observation())
    assert d.state.status == Status.ABORTED and "wrong build" in d.first("rollback").reason
    with pytest.raises(CommandError, match="aborted"):
        d.cmd("resume")
    with pytest.raises(CommandError, match="unknown command"):
        command(Driver(make_spec()).state, "yolo", "bob", T0)


def test_blue_green_stages_then_switches():
    d = Driver(load_spec("examples/rollouts/blue-green.yaml"))
    d.tick(lambda s, now: Observation(pending=frozenset({"dev-1"})))
    assert d.kinds()[-1] == "stage" and d.state.status == Status.STAGING
    d.tick(lambda s, now: Observation(pending=frozenset({"dev-1"})))
    assert "deploy_phase" not in d.kinds()  # waits for staging
    d.run(until=lambda s: s.deployed)
    assert d.first("deploy_phase", 0).inputs["action"] == "switch"
    d.run()
    assert d.state.status == Status.COMPLETED and d.state.staged


def test_events_round_trip_through_json():
    d = Driver(make_spec())
    d.run(until=lambda s: s.status == Status.AWAITING_APPROVAL)
    d.cmd("approve", reason="ok")
    d.run()
    text = [e.to_json() for e in d.log]
    again = RolloutState.from_events([json.loads(t) for t in text])
    assert again.status == d.state.status == Status.COMPLETED
    assert again.approvals == d.state.approvals and again.keys == d.state.keys
    with pytest.raises(ValueError, match="created"):
        RolloutState.from_events(d.log[1:])


def test_offline_devices_get_the_decision_that_holds_when_they_return():
    d = Driver(make_spec())
    d.run(until=lambda s: s.phase == 1 and s.deployed)
    assert desired_release(d.state, 0) == "new" and desired_release(d.state, 1) == "new"
    assert desired_release(d.state, 2) == "old" and desired_release(d.state, -1) == "old"
    d.cmd("abort")
    d.run(lambda s, now: Observation())
    assert all(desired_release(d.state, p) == "old" for p in (-1, 0, 1, 2, 3))


# ---------------------------------------------------------------- restarts


def scripted_world(fail_phase: int | None, stuck_phase: int | None = None) -> World:
    """Devices ack 10 minutes after a step starts; gates are inconclusive for 10 minutes after
    the bake, then pass (or fail from 20 minutes into ``fail_phase``'s bake, or stay
    inconclusive for good in ``stuck_phase``)."""

    def world(s: RolloutState, now: datetime) -> Observation:
        pending: frozenset[str] = frozenset()
        start = s.rollback_started_at if s.status == Status.ROLLING_BACK else s.step_started_at
        if (
            start
            and now - start < timedelta(minutes=10)
            and s.status in (Status.DEPLOYING, Status.ROLLING_BACK, Status.STAGING)
        ):
            pending = frozenset({"dev-1", "dev-2"})
        gates = PASS
        if s.bake_started_at and s.phase == fail_phase and now - s.bake_started_at >= timedelta(minutes=20):
            gates = FAIL
        elif s.bake_started_at:
            since_bake = now - (s.bake_started_at + s.spec.phases[s.phase].bake)
            if s.phase == stuck_phase or timedelta(0) <= since_bake < timedelta(minutes=10):
                gates = INCONCLUSIVE
        return Observation(pending=pending, gates=gates, phase=s.phase)

    return world


def drive(world: World, crash: random.Random | None = None) -> Driver:
    d = Driver(make_spec())
    for _ in range(400):
        st = d.state
        if st.status in TERMINAL:
            break
        if st.status == Status.AWAITING_APPROVAL and not set(st.approval_requested) <= set(st.approvals):
            d.cmd("approve", reason="ok")
        keep = None
        if crash is not None and crash.random() < 0.5:
            keep = crash.randrange(0, 3)  # the process dies after recording `keep` events
        d.tick(world, keep=keep)
    return d


@pytest.mark.parametrize("fail_phase,stuck_phase", [(None, None), (1, None), (None, 2)])
def test_restart_at_every_point_recomputes_the_same_decisions(fail_phase, stuck_phase):
    world = scripted_world(fail_phase, stuck_phase)
    d = drive(world)
    ok = fail_phase is None and stuck_phase is None
    assert d.state.status == (Status.COMPLETED if ok else Status.ROLLED_BACK)
    # For every tick and every prefix of what it recorded, a restarted controller (fold the
    # prefix, observe, decide again) records exactly the rest: nothing twice, nothing lost.
    bounds = [t[0] for t in d.ticks[1:]] + [len(d.log)]
    checked = 0
    for (start, _, now), end in zip(d.ticks, bounds, strict=True):
        recorded = [e for e in d.log[start:end] if e.actor == "controller"]
        for i in range(len(recorded) + 1):
            prefix = d.log[:start] + recorded[:i]
            st = RolloutState.from_events(prefix)
            again = new_events(st, decide(st, world(st, now), now), now)
            assert [e.key for e in again] == [e.key for e in recorded[i:]], (now, i)
            checked += 1
    assert checked > 25
    counts = Counter(e.key for e in d.log)
    assert max(counts.values()) == 1
    last = 3 if ok else fail_phase if fail_phase is not None else stuck_phase
    deploys = Counter(e.phase for e in d.log if e.kind == "deploy_phase")
    assert deploys == Counter(range(last + 1))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fail_phase", [None, 1])
def test_crashes_mid_tick_neither_double_deploy_nor_lose_decisions(seed, fail_phase):
    world = scripted_world(fail_phase)
    clean = drive(world)
    crashed = drive(world, crash=random.Random(seed))
    assert crashed.state.status == clean.state.status
    # Crashes delay what follows, so the number of periodic gate records may differ;
    # operator commands are timed by the operator. Every milestone must be there, once.
    ignore = {"approve", "record_gates"}
    assert [e.kind for e in crashed.log if e.kind not in ignore] == [
        e.kind for e in clean.log if e.kind not in ignore
    ]
    assert len({e.key for e in crashed.log}) == len(crashed.log)


def test_recorded_decisions_are_never_recorded_again():
    d = Driver(make_spec())
    d.run(until=lambda s: s.phase == 1 and s.deployed)
    st = d.state
    deploy = next(e for e in d.log if e.kind == "deploy_phase" and e.phase == 1)
    again = Decision(Kind.DEPLOY_PHASE, 1, "again", {}, deploy.key)
    assert new_events(st, [again, again], d.now) == []
    fresh = Decision(Kind.PAUSE, 1, "x", {}, "r1:1:pause:test")
    assert len(new_events(st, [fresh, fresh], d.now)) == 1  # a batch holding a key twice records it once
    before = (st.status, st.phase, len(st.events))
    st.apply(deploy)  # a duplicate append folds to nothing
    assert (st.status, st.phase, len(st.events)) == before


def test_reports_from_before_the_window_are_stale_and_ignored():
    d = Driver(make_spec(rollback="pause"))
    d.run(until=lambda s: s.status == Status.BAKING)
    deployed = d.state.gate_window_start
    assert deployed == d.first("deploy_phase", 0).at
    d.tick(lambda s, now: Observation(gates=FAIL, phase=s.phase))
    d.cmd("resume", reason="config fixed")
    resumed = d.state.gate_window_start
    assert resumed is not None and resumed > deployed
    # A report still covering the failing period (since the deploy) is stale after the fix...
    old = GateReport(Verdict.FAIL, (), since=deployed.isoformat())
    d.tick(lambda s, now: Observation(gates=old, phase=s.phase))
    assert d.state.status == Status.BAKING
    # ...one over the fresh window counts.
    new = GateReport(Verdict.FAIL, (), since=resumed.isoformat())
    d.tick(lambda s, now: Observation(gates=new, phase=s.phase))
    assert d.state.status == Status.PAUSED


def test_blue_green_rollback_switches_slots_back():
    d = Driver(load_spec("examples/rollouts/blue-green.yaml"))
    d.run(until=lambda s: s.status == Status.BAKING)
    d.tick(lambda s, now: Observation(gates=FAIL, phase=s.phase))
    assert d.first("rollback").inputs["action"] == "switch_back"


def test_status_says_why_a_rollout_is_paused_or_inconclusive():
    from cli.rollout import _why

    d = Driver(make_spec(max_inconclusive=2, progress_deadline="10h"))
    d.run(until=lambda s: s.status == Status.BAKING)
    for _ in range(13):
        d.tick(lambda s, now: Observation(gates=INCONCLUSIVE, phase=s.phase))
    assert d.state.inconclusive_streak and _why(d.state).startswith("gates inconclusive (")
    d.tick(lambda s, now: Observation(gates=INCONCLUSIVE, phase=s.phase))
    assert d.state.status == Status.PAUSED and "resume to keep evaluating" in _why(d.state)


def test_a_rollout_paused_for_lack_of_evidence_carries_on_when_the_gates_pass():
    d = _inconclusive_until_the_limit()
    assert d.state.status == Status.PAUSED
    d.tick(lambda s, now: Observation(gates=PASS, phase=s.phase))
    promote = d.first("promote", 1)
    assert promote.inputs["gates"]["verdict"] == "pass" and d.state.phase == 1
    assert d.state.status == Status.DEPLOYING and not d.state.pause_reason
