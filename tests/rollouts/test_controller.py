"""Controller ticks on a demo fleet: promotion, rollback, restarts at every point, timeouts, windows.

The rollback tests run the fleet on the real data path (device batches and the central
ingest); the rest take the fleet's direct path, which is faster for many ticks.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from edge_sync.desired import desired_key
from edgeplat.rollouts.commands import CommandError
from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.decide import Decision
from edgeplat.rollouts.events import TERMINAL, Kind, Status
from edgeplat.rollouts.store import RolloutStore
from tests.support.rollouts import Crash, sized_spec, small_spec


def drive(ctl: Controller, fleet, rid: str, *, steps: int = 200, step: int = 5, on_state=None) -> Status:
    """Tick and advance the fleet until the rollout ends (or ``on_state`` says stop)."""
    store = ctl.store
    for _ in range(steps):
        ctl.tick(rid, fleet.now)
        state = store.state(rid)
        if state.status in TERMINAL or state.status == Status.FAILED:
            return state.status
        if on_state and on_state(state):
            return state.status
        fleet.advance(step)
    raise AssertionError(f"rollout did not finish: {store.state(rid).status}")


def revisions(backend, fleet) -> Counter:
    """How many desired-state revisions each device's document went through."""
    out = Counter()
    for d in fleet.devices:
        doc = backend.publisher.current(d.tenant_id, d.device_id)
        out[doc.revision if doc else 0] += 1
    return out


@pytest.mark.slow
def test_good_release_goes_to_100_percent_deploying_each_device_once(lake, backend, make_fleet) -> None:
    fleet = make_fleet(devices=200)
    fleet.advance(30)
    ctl = Controller(RolloutStore(lake), backend)
    rid = ctl.launch(sized_spec(), actor="alice", now=fleet.now)
    assert drive(ctl, fleet, rid) == Status.COMPLETED
    assert fleet.running("3.0.0") == 200
    assert revisions(backend, fleet) == Counter({1: 200})  # one document write per device, ever
    kinds = [e.kind for e in ctl.store.events(rid)]
    assert kinds.count(Kind.DEPLOY_PHASE) == 3 and kinds[-1] == Kind.COMPLETE
    deploys = [e for e in ctl.store.events(rid) if e.kind == Kind.DEPLOY_PHASE]
    assert [e.inputs["devices_in_phase"] for e in deploys][-1] == 200
    assert 20 <= deploys[0].inputs["devices_sent"] <= 35  # ~10% of 200, at least min_devices 20


def assert_health_came_in_ledgered_batches(lake) -> None:
    with lake.session(read_only=True) as con:
        rows, keyed, ledgered = con.execute(
            "SELECT count(*), count(h.batch_key), count(b.object_key) FROM health h "
            "LEFT JOIN batches b ON b.object_key = h.batch_key"
        ).fetchone()
    assert rows > 0 and keyed == rows and ledgered == rows


@pytest.mark.slow
def test_bad_release_is_rolled_back_in_phase_0_and_reaches_no_one_else(lake, backend, make_fleet) -> None:
    fleet = make_fleet(devices=200, batches=True, upload_every=15)
    fleet.set_release_profile("3.0.0", error_rate=0.03)
    fleet.advance(30)
    ctl = Controller(RolloutStore(lake), backend)
    rid = ctl.launch(sized_spec(), actor="alice", now=fleet.now)
    assert drive(ctl, fleet, rid) == Status.ROLLED_BACK
    events = ctl.store.events(rid)
    rollback = next(e for e in events if e.kind == Kind.ROLLBACK)
    assert rollback.phase == 0 and "error_rate" in rollback.reason
    phase0 = {
        f"{r['tenant_id']}/{r['device_id']}"
        for r in ctl.store.sent(rid).to_pylist()
        if r["action"] == "deploy"
    }
    assert set(fleet.ran("3.0.0")) <= phase0 and len(phase0) < 40
    fleet.advance(5)
    assert fleet.running("3.0.0") == 0
    assert_health_came_in_ledgered_batches(lake)


def test_a_release_the_agents_installers_revert_is_rolled_back_on_their_report(
    lake, backend, make_fleet
) -> None:
    """Healthy metrics, but half the canaries' installers fail the release's health check and
    switch back: they keep reporting the old version, and the rollout rolls back on their
    installer step (``agent_update``) instead of waiting out the 20-minute device timeout."""
    fleet = make_fleet(devices=200)
    fleet.set_release_profile("3.0.0", revert_rate=0.5)
    fleet.advance(30)
    ctl = Controller(RolloutStore(lake), backend)
    rid = ctl.launch(sized_spec(), actor="alice", now=fleet.now)
    launched = fleet.now
    assert drive(ctl, fleet, rid) == Status.ROLLED_BACK
    rollback = next(e for e in ctl.store.events(rid) if e.kind == Kind.ROLLBACK)
    assert rollback.phase == 0 and "agent_update" in rollback.reason, rollback.reason
    assert "health_check: exited 1" in rollback.reason
    assert rollback.at - launched < timedelta(minutes=20)
    sent = {r["device_id"] for r in ctl.store.sent(rid).to_pylist() if r["action"] == "deploy"}
    assert len(sent) < 40  # phase 0 only


@pytest.mark.slow
def test_restart_at_every_point_of_a_promotion_and_a_rollback(lake, backend, make_fleet) -> None:
    """Crash before and after every action (the log then lacks the decision), restart, go on:
    each decision is recorded once, no device is deployed twice, and the outcome is unchanged."""
    fleet = make_fleet(devices=200)
    fleet.set_release_profile("3.0.0", error_rate=0.01)
    fleet.advance(30)
    crashed: Counter = Counter()

    def fault(point: str, d: Decision) -> None:
        if crashed[(d.key, point)] == 0:
            crashed[(d.key, point)] += 1
            raise Crash(f"{point} {d.key}")

    store = RolloutStore(lake)
    spec = sized_spec(
        strategy={
            "type": "canary",
            "phases": [
                {"percent": 10, "min_devices": 20, "bake": "30m"},
                {"percent": 50, "bake": "30m", "approval": "manual"},
                {"percent": 100, "bake": "15m"},
            ],
        }
    )
    rid = Controller(store, backend).launch(spec, actor="alice", now=fleet.now)
    restarts = 0
    bad_from = None
    for _ in range(400):
        ctl = Controller(RolloutStore(lake), backend, fault=fault)  # a fresh process every tick
        try:
            ctl.tick(rid, fleet.now)
        except Crash:
            restarts += 1
            continue  # restart without time passing: the worst case for double actions
        state = store.state(rid)
        if state.status in TERMINAL:
            break
        if state.status == Status.AWAITING_APPROVAL:
            ctl.command(rid, "approve", actor="bob", reason="looks good", request_id="ui-1", now=fleet.now)
            with pytest.raises(CommandError, match="approv"):  # a double submission
                ctl.command(rid, "approve", actor="bob", reason="again", request_id="ui-2", now=fleet.now)
            continue
        if state.phase == 1 and state.status == Status.BAKING and bad_from is None:
            bad_from = fleet.now  # the release degrades at 50%: the rollback must also survive crashes
            fleet.set_release_profile("3.0.0", error_rate=0.04)
        fleet.advance(5)
    state = store.state(rid)
    assert state.status == Status.ROLLED_BACK, [e.kind for e in state.events]
    keys = [e.key for e in store.events(rid)]
    assert len(keys) == len(set(keys))
    kinds = Counter(e.kind for e in store.events(rid))
    assert kinds[Kind.DEPLOY_PHASE] == 2 and kinds[Kind.ROLLBACK] == 1 and kinds[Kind.APPROVE] == 1
    assert restarts >= 2 * 6  # before and after each of deploy 0, bake, promote, deploy 1, rollback, ...
    # every device the rollout reached was written exactly twice (deploy, rollback); the rest never
    sent = {(r["tenant_id"], r["device_id"]) for r in store.sent(rid).to_pylist() if r["action"] == "deploy"}
    for d in fleet.devices:
        doc = backend.publisher.current(d.tenant_id, d.device_id)
        assert (doc.revision if doc else 0) == (2 if (d.tenant_id, d.device_id) in sent else 0)
    assert fleet.running("3.0.0") == 0 or (fleet.advance(5) or fleet.running("3.0.0") == 0)


@pytest.mark.slow
def test_unreachable_devices_do_not_block_and_get_the_rollback_when_back(lake, backend, make_fleet) -> None:
    fleet = make_fleet(devices=200, batches=True, upload_every=15)
    fleet.advance(30)
    ctl = Controller(RolloutStore(lake), backend)
    rid = ctl.launch(sized_spec(), actor="alice", now=fleet.now)
    ctl.tick(rid, fleet.now)  # deploys phase 0
    phase0 = [r["device_id"] for r in ctl.store.sent(rid).to_pylist()]
    offline = set(phase0[:3])
    fleet.set_online(offline, False)
    status = drive(ctl, fleet, rid, on_state=lambda s: s.phase >= 1)
    state = ctl.store.state(rid)
    assert status != Status.ROLLED_BACK and state.phase == 1
    assert {u.split("/", 1)[1] for u in state.unreachable} == offline
    ctl.command(rid, "abort", actor="bob", reason="enough", now=fleet.now)
    drive(ctl, fleet, rid)
    assert ctl.store.state(rid).status == Status.ABORTED
    assert all(d.version == "2.0.0" for d in fleet.devices if d.device_id not in offline)
    fleet.set_online(offline, True)  # they come back: the durable desired state holds the rollback
    fleet.advance(5)
    assert fleet.running("3.0.0") == 0
    # ...and upload what they recorded while away: late, complete, acknowledged through the ingest
    assert_health_came_in_ledgered_batches(lake)
    with lake.session(read_only=True) as con:
        back = con.execute(
            "SELECT device_id, count(*), max(seq), max(ts) FROM health "
            "WHERE device_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1",
            [sorted(offline)],
        ).fetchall()
        reported = dict(
            con.execute(
                "SELECT device_id, reported_version FROM devices WHERE device_id IN (SELECT unnest(?::VARCHAR[]))",
                [sorted(offline)],
            ).fetchall()
        )
    minutes = int((fleet.now - fleet.start).total_seconds() // 60)
    assert len(back) == 3 and all(n == hi + 1 == minutes for _, n, hi, _ in back)  # no gap, nothing held back
    assert set(reported.values()) == {"2.0.0"}


@pytest.mark.slow
def test_progress_deadline_fails_per_policy(lake, backend, make_fleet) -> None:
    fleet = make_fleet(devices=200)
    fleet.advance(30)
    ctl = Controller(RolloutStore(lake), backend)
    spec = small_spec(rollback="pause", device_timeout="3h", progress_deadline="30m")
    rid = ctl.launch(spec, actor="alice", now=fleet.now)
    ctl.tick(rid, fleet.now)
    fleet.set_online({r["device_id"] for r in ctl.store.sent(rid).to_pylist()}, False)  # never acknowledge
    assert drive(ctl, fleet, rid) == Status.FAILED
    fail = ctl.store.events(rid)[-1]
    assert fail.kind == Kind.FAIL and "progress deadline" in fail.reason


def test_nothing_deploys_outside_the_maintenance_window(lake, backend, make_fleet) -> None:
    fleet = make_fleet(devices=100)  # the demo fleet starts at 22:00 UTC
    ctl = Controller(RolloutStore(lake), backend)
    spec = small_spec(maintenance_window={"cron": "0 23 * * *", "duration": "2h", "timezone": "UTC"})
    rid = ctl.launch(spec, actor="alice", now=fleet.now)
    res = ctl.tick(rid, fleet.now)
    assert res.appended == [] and "maintenance window" in res.waiting[0]
    assert ctl.store.sent(rid).num_rows == 0
    fleet.advance(60)
    res = ctl.tick(rid, fleet.now + timedelta(minutes=1))
    assert [e.kind for e in res.appended] == [Kind.DEPLOY_PHASE] and ctl.store.sent(rid).num_rows > 0


def test_abort_before_any_deploy_and_desired_docs(lake, backend, make_fleet) -> None:
    fleet = make_fleet(devices=50)
    ctl = Controller(RolloutStore(lake), backend)
    spec = small_spec(
        strategy={"type": "canary", "phases": [{"percent": 50, "approval": "manual"}, {"percent": 100}]}
    )
    rid = ctl.launch(spec, actor="alice", now=fleet.now)
    ctl.tick(rid, fleet.now)
    assert ctl.store.state(rid).status == Status.AWAITING_APPROVAL
    ctl.command(rid, "abort", actor="bob", reason="wrong release", now=fleet.now)
    ctl.tick(rid, fleet.now)
    ctl.tick(rid, fleet.now)
    assert ctl.store.state(rid).status == Status.ABORTED
    assert not any(
        backend.store.head(desired_key(d.tenant_id, d.device_id)) is not None for d in fleet.devices
    )
