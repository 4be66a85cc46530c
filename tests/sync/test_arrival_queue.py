"""Arrival queue parts: defensive event parsing (S3, Event Grid) and the journal reader's offsets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge_sync.objectstore import LocalObjectStore
from edge_sync.objectstore_journal import enable_journal
from edgeplat.sync.arrival_queue import ArrivalMessage, ArrivalQueue, QueueUnavailable
from edgeplat.sync.arrival_queue_journal import JournalArrivalQueue
from edgeplat.sync.arrivals import ArrivalCursor, CursorError
from edgeplat.sync.object_events import PoisonEvent, keys_from_event_grid, keys_from_s3_event
from edgeplat.sync.queue_arrivals import QueueCursor, plan_messages


def s3_event(key: str, bucket: str = "b1", name: str = "ObjectCreated:Put") -> dict:
    return {"Records": [{"eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]}


def test_s3_events_decode_keys_strip_the_prefix_and_skip_what_is_not_a_creation() -> None:
    body = json.dumps(s3_event("fleet/tenant%3Dt1/a+b%2Bc.batch"))
    assert keys_from_s3_event(body, bucket="b1", prefix="fleet/") == ("tenant=t1/a b+c.batch",)
    assert keys_from_s3_event(json.dumps({"Event": "s3:TestEvent", "Bucket": "b1"}), bucket="b1") == ()
    assert keys_from_s3_event(json.dumps(s3_event("fleet/x", name="ObjectRemoved:Delete")), bucket="b1") == ()
    assert keys_from_s3_event(json.dumps(s3_event("elsewhere/x")), bucket="b1", prefix="fleet/") == ()
    sns = {"Type": "Notification", "Message": json.dumps(s3_event("x.batch"))}
    assert keys_from_s3_event(json.dumps(sns), bucket="b1") == ("x.batch",)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not an S3 event object"),
        ('{"Records": []}', "no 'Records'"),
        ('{"Records": ["x"]}', "record 0 is not an object"),
        ('{"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}', "no 's3.object.key'"),
        (json.dumps(s3_event("x", bucket="other")), "another bucket"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_s3_poison_bodies_name_their_reason(body, reason: str) -> None:
    with pytest.raises(PoisonEvent, match=reason):
        keys_from_s3_event(body, bucket="b1")


def test_event_grid_blob_created_events_give_blob_names() -> None:
    subject = "/blobServices/default/containers/batches/blobs/fleet/tenant=t1/x.batch"
    events = [
        {"eventType": "Microsoft.Storage.BlobCreated", "subject": subject},
        {"type": "Microsoft.Storage.BlobDeleted", "subject": subject},  # CloudEvents schema, not a creation
    ]
    assert keys_from_event_grid(json.dumps(events), container="batches", prefix="fleet/") == (
        "tenant=t1/x.batch",
    )
    with pytest.raises(PoisonEvent, match="not container"):
        keys_from_event_grid(json.dumps(events[0]), container="other")
    with pytest.raises(PoisonEvent, match="no 'eventType'"):
        keys_from_event_grid('{"subject": 1}', container="batches")


def put(store: LocalObjectStore, n: int) -> str:
    key = f"tenant=t1/device=d1/stream=logs/{n:020d}-{n:020d}.batch"
    store.put(key, b"x")
    return key


def test_journal_reader_redelivers_unacked_records_after_the_visibility_timeout(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    enable_journal(store.root)
    clock = [100.0]
    a, b = put(store, 1), put(store, 2)

    def reader(pos):
        return JournalArrivalQueue(tmp_path, pos, visibility_timeout_s=30, now=lambda: clock[0])

    q = reader(None)
    assert isinstance(q, ArrivalQueue)
    got = q.receive(10)
    assert [m.keys for m in got] == [(a,), (b,)] and [m.receive_count for m in got] == [1, 1]
    q.ack(got[1:])  # b settled, a not yet
    pos = q.checkpoint()
    c = put(store, 3)
    q = reader(pos)
    assert [m.keys for m in q.receive(10)] == [(c,)]  # a is in flight: not before its timeout
    pos = q.checkpoint()
    clock[0] += 31
    q = reader(pos)
    again = q.receive(10)
    assert [m.keys for m in again] == [(a,), (b,), (c,)] and again[0].receive_count == 2
    q.ack(again)
    pos = q.checkpoint()
    assert pos["floor"] == pos["read"] == os.path.getsize(tmp_path / q.path.name)
    # truncated below the offset: read again from the start, and say so
    os.truncate(q.path, 0)
    d = put(store, 4)
    q = reader(pos)
    assert [m.keys for m in q.receive(10)] == [(d,)] and "truncated" in q.restarted
    os.unlink(q.path)
    with pytest.raises(QueueUnavailable, match="no arrival journal"):
        reader(pos).receive(10)


def test_queue_cursor_is_versioned_and_reads_a_listing_cursor() -> None:
    c = QueueCursor(ArrivalCursor("k"), {"inode": 1, "floor": 0, "read": 5, "redeliver_at": 0.0}, 12.5)
    assert QueueCursor.from_json(c.to_json()) == c and json.loads(c.to_json())["v"] == 2
    assert QueueCursor.from_json(ArrivalCursor("k").to_json()) == QueueCursor(ArrivalCursor("k"))
    for bad in ("nope", '{"v": 3}', '{"v": 2, "journal": 5}'):
        with pytest.raises(CursorError):
            QueueCursor.from_json(bad)


def test_only_hot_batch_keys_are_planned() -> None:
    def message(n: int, key: str) -> ArrivalMessage:
        return ArrivalMessage(str(n), n, (key,))

    batch = "tenant=t1/device=d1/stream=logs/00000000000000000001-00000000000000000001.batch"
    archived = "archive/" + batch  # moved there once settled: a creation, but not an arrival
    desired = "tenant=t1/device=d1/desired.json"
    plan = plan_messages([message(1, batch), message(2, archived), message(3, desired)], lambda keys: set())
    assert plan.fresh == {batch} and [m.message_id for m in plan.ack] == ["2", "3"]
    assert [m.message_id for m in plan.pending] == ["1"] and plan.keys == 1
