"""RolloutStore: the durable, idempotent rollout log and summary rows in the lakehouse."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from edgeplat.rollouts.commands import command
from edgeplat.rollouts.events import Event, Kind, RolloutState, Status, created_event
from edgeplat.rollouts.store import RolloutNotFound, RolloutStore
from tests.support.rollouts import small_spec

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def launched(store: RolloutStore, rid: str = "r1-aaaa", **over) -> RolloutState:
    spec = small_spec(**over)
    store.append(rid, [created_event(spec, rid, T0, "alice")])
    return store.state(rid)


def test_append_is_idempotent_and_ordered(lake) -> None:
    store = RolloutStore(lake)
    state = launched(store)
    e1 = Event(
        Kind.DEPLOY_PHASE, state.rollout, T0, 0, reason="deploy", inputs={"percent": 10}, key="r1:0:deploy"
    )
    e2 = Event(Kind.START_BAKE, state.rollout, T0, 0, reason="bake", key="r1:0:bake")  # same `at`
    assert [e.key for e in store.append("r1-aaaa", [e1, e2])] == ["r1:0:deploy", "r1:0:bake"]
    assert store.append("r1-aaaa", [e1, e2, e1]) == []  # a replay after a crash writes nothing
    events = store.events("r1-aaaa")
    assert [e.kind for e in events] == [Kind.CREATED, Kind.DEPLOY_PHASE, Kind.START_BAKE]
    assert events[1].inputs == {"percent": 10} and events[1].at == T0
    with lake.session(read_only=True) as con:
        # one row per targeted tenant: small_spec targets two
        assert (
            con.execute("SELECT count(*) FROM rollout_events WHERE rollout_id = 'r1-aaaa'").fetchone()[0] == 6
        )


def test_racing_duplicate_rows_fold_once(lake) -> None:
    store = RolloutStore(lake)
    launched(store)
    ev = command(store.state("r1-aaaa"), "pause", "bob", T0 + timedelta(minutes=1), "look", request_id="x")
    store.append("r1-aaaa", [ev])
    with lake.session() as con:  # a second writer that missed the first one's row
        con.execute(
            'INSERT INTO rollout_events SELECT tenant_id, rollout_id, event_id, kind, phase, "at", actor, reason, '
            "inputs, seq + 10 FROM rollout_events WHERE event_id = ?",
            [ev.key],
        )
    events = store.events("r1-aaaa")
    assert [e.kind for e in events] == [Kind.CREATED, Kind.PAUSE]
    assert store.state("r1-aaaa").status == Status.PAUSED


def test_summary_rows_follow_the_log(lake) -> None:
    store = RolloutStore(lake)
    launched(store)
    launched(store, "r2-bbbb", name="r2")
    store.append("r2-bbbb", [command(store.state("r2-bbbb"), "abort", "carol", T0, "no", request_id="1")])
    rows = {r.rollout_id: r for r in store.list_rollouts()}
    assert rows["r1-aaaa"].status == "pending" and rows["r1-aaaa"].tenants == ("acme", "globex")
    assert store.active_ids() == ["r2-bbbb", "r1-aaaa"] or set(store.active_ids()) == {"r1-aaaa", "r2-bbbb"}
    with lake.session(read_only=True) as con:
        spec = json.loads(
            con.execute("SELECT any_value(spec) FROM rollouts WHERE rollout_id='r2-bbbb'").fetchone()[0]
        )
    assert spec["name"] == "r2"
    assert store.resolve("r2") == "r2-bbbb" and store.resolve("r1-aaaa") == "r1-aaaa"
    with pytest.raises(RolloutNotFound, match="edgeplat rollout list"):
        store.resolve("nope")
    with pytest.raises(RolloutNotFound):
        store.events("nope")


def test_decisions_need_a_created_event(lake) -> None:
    store = RolloutStore(lake)
    with pytest.raises(ValueError, match="no 'created' event"):
        store.append("ghost", [Event(Kind.PROMOTE, "ghost", T0, 1, key="ghost:1:promote")])
    with pytest.raises(ValueError, match="needs an id"):
        store.append("ghost", [Event(Kind.PROMOTE, "ghost", T0, 1)])


def test_record_sent_is_idempotent(lake) -> None:
    store = RolloutStore(lake)
    launched(store)
    rows = [("acme", "d1", "greengrass", 0), ("acme", "d2", "iot_edge", 0)]
    assert store.record_sent("r1-aaaa", rows, "deploy", "k", T0) == 2
    assert store.record_sent("r1-aaaa", rows + [("globex", "d1", "iot_edge", 1)], "deploy", "k", T0) == 1
    assert store.record_sent("r1-aaaa", rows, "rollback", "rb", T0) == 2
    sent = store.sent("r1-aaaa").to_pylist()
    assert sorted((r["tenant_id"], r["device_id"], r["action"]) for r in sent) == [
        ("acme", "d1", "deploy"),
        ("acme", "d1", "rollback"),
        ("acme", "d2", "deploy"),
        ("acme", "d2", "rollback"),
        ("globex", "d1", "deploy"),
    ]


def test_one_session_reuses_one_connection(lake) -> None:
    store = RolloutStore(lake)
    launched(store)
    with store.session() as con:
        assert store.events("r1-aaaa", None)[0].kind == Kind.CREATED
        store.append("r1-aaaa", [command(store.state("r1-aaaa"), "pause", "bob", T0, "", request_id="p")])
        assert store._con is con
    assert store._con is None and store.state("r1-aaaa").status == Status.PAUSED
