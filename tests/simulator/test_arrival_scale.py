"""The arrival scale run's parts on tiny stores: settled history (local and moto), the replay clock."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest

from edge_sync.objectstore import LocalObjectStore
from edge_sync.objectstore_journal import enable_journal
from edge_sync.objectstore_s3 import S3ObjectStore
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.simulator.arrival_clock import (
    CountingStore,
    ListingArrivals,
    NotificationArrivals,
    StreamFleet,
    replay,
)
from edgeplat.simulator.settled_store import SettledLayout, fill_ledger, fill_local_store
from edgeplat.sync.arrival_queue_journal import JournalArrivalQueue
from edgeplat.sync.arrivals import ArrivalCursor, plan_arrivals
from edgeplat.sync.env import SyncEnv, SyncSettings
from edgeplat.sync.ledger import settled_keys
from tests.support.moto_prefilled import running_prefilled_moto
from tests.support.moto_server import MOTO_CREDENTIALS
from tests.support.services import started

TINY = SettledLayout(tenants=2, devices_per_tenant=4, batches_per_device=3, rows_per_batch=50)


def every_key(store) -> list[str]:
    keys, after = [], None
    while True:
        page = store.list("", after=after, limit=7)
        keys += [o.key for o in page.objects]
        if page.next_after is None:
            return keys
        after = page.next_after


def settled_lake(tmp_path: Path) -> Lakehouse:
    lake = Lakehouse(
        LakehouseConfig(catalog=f"sqlite:{tmp_path}/catalog.sqlite", data_path=f"{tmp_path}/lake/")
    )
    lake.ensure_schema()
    fill_ledger(lake, TINY)
    return lake


def test_settled_history_is_in_the_store_and_the_ledger(tmp_path: Path) -> None:
    fill_local_store(tmp_path / "objects", TINY)
    store = LocalObjectStore(tmp_path / "objects", fsync=False)
    keys = list(TINY.object_keys())
    assert len(keys) == len(set(keys)) == TINY.count == 24
    assert every_key(store) == keys  # the layout's order is the listing order
    lake = settled_lake(tmp_path)
    with lake.session(read_only=True) as con:
        assert settled_keys(con, keys) == set(keys)
        row = con.execute(
            "SELECT min(first_seq), max(last_seq), sum(row_count) FROM batches WHERE device_id = 'dev-00003'"
        ).fetchone()
        plan = plan_arrivals(store, ArrivalCursor(), settled=lambda ks: settled_keys(con, ks))
    assert row == (1, 150, 300)  # dev-00003 of both tenants: 3 batches of seqs 1..150 each
    assert plan.runs == [] and plan.settled == TINY.count  # history plans no run


@pytest.mark.services
def test_moto_starts_holding_the_settled_history() -> None:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    with started("moto", running_prefilled_moto(TINY, bucket, "fleet")) as (endpoint, _):
        store = S3ObjectStore(
            bucket,
            "fleet",
            endpoint_url=endpoint,
            access_key_id=MOTO_CREDENTIALS["aws_access_key_id"],
            secret_access_key=MOTO_CREDENTIALS["aws_secret_access_key"],
        )
        assert every_key(store) == list(TINY.object_keys())
        store.close()


def test_replay_brings_every_upload_to_the_ledger_and_times_it(tmp_path: Path) -> None:
    fill_local_store(tmp_path / "objects", TINY)
    lake = settled_lake(tmp_path)
    fleet = StreamFleet(tmp_path, TINY, devices=3)
    store = CountingStore(LocalObjectStore(tmp_path / "objects", fsync=False))
    env = SyncEnv(lake, store, fleet.keyring, fleet.registry, settings=SyncSettings(max_drift_ms=10**15))
    uploads = fleet.uploads(6, window=100.0, seed=5)
    assert len({u.key for u in uploads}) == 6 and [u.at for u in uploads] == sorted(u.at for u in uploads)
    # 10 keys a tick cannot cover 24 settled + 6 new keys at once: the cursor's pass and the backstop share the work
    path = ListingArrivals(env, store, max_keys=10, keys_per_run=2)
    got = replay(env, path, uploads, interval=10.0, backstop_period=50.0)

    assert set(got.latencies) == {u.key for u in uploads}
    for u in uploads:
        first_tick = math.ceil(u.at / 10.0) * 10.0  # nothing is seen before the first tick after its upload
        assert got.latencies[u.key] >= first_tick - u.at
    assert all(t.keys_listed <= 10 and t.list_requests >= 1 for t in got.ticks)
    with lake.session(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM telemetry").fetchone()[0] == 6 * TINY.rows_per_batch
        assert settled_keys(con, [u.key for u in uploads]) == {u.key for u in uploads}
    assert got.percentile(50) <= got.percentile(99)


def test_replay_through_the_journal_queue_lists_nothing(tmp_path: Path) -> None:
    """The notification path with its listing backstop not due: the journal alone brings every
    upload in, at the first tick after it, and no tick lists the store."""
    fill_local_store(tmp_path / "objects", TINY)
    enable_journal(tmp_path / "objects")
    lake = settled_lake(tmp_path)
    fleet = StreamFleet(tmp_path, TINY, devices=3)
    store = CountingStore(LocalObjectStore(tmp_path / "objects", fsync=False))
    env = SyncEnv(lake, store, fleet.keyring, fleet.registry, settings=SyncSettings(max_drift_ms=10**15))
    uploads = fleet.uploads(6, window=100.0, seed=6)

    def open_queue(position, now):
        return JournalArrivalQueue(tmp_path / "objects", position, visibility_timeout_s=20.0, now=now)

    path = NotificationArrivals(env, store, open_queue, backstop_from=10**9, reconcile=False)
    ticked: dict[int, list[str]] = {}
    got = replay(
        env,
        path,
        uploads,
        interval=10.0,
        backstop_period=50.0,
        on_tick=lambda k, tick: ticked.setdefault(k, [key for _, keys in tick.runs for key in keys]),
    )

    assert set(got.latencies) == {u.key for u in uploads} and got.by_backstop == 0
    for u in uploads:  # planned by the first tick after its upload, not later
        assert u.key in ticked[math.ceil(u.at / 10.0)]
    assert store.list_requests == 0 and all(t.keys_listed == 0 for t in got.ticks)
    assert sum(t.messages for t in got.ticks) >= len(uploads)  # redeliveries come on top
    with lake.session(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM telemetry").fetchone()[0] == 6 * TINY.rows_per_batch
