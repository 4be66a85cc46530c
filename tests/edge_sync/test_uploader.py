"""The uploader: incremental, resumable, priority-ordered, budgeted, retried without duplicates."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from edge_sync.bandwidth import Backoff, BandwidthBudget, TokenBucket
from edge_sync.batch_keys import parse_object_key
from edge_sync.identity import DeviceIdentity
from edge_sync.objectstore import StoreUnavailable
from edge_sync.streams import BY_PRIORITY
from edge_sync.uploader import Uploader, UploadPolicy
from edge_sync.vault import VaultUnavailable
from tests.support.device import DEVICE, NOW, TENANT, RecordingStore, central_view, make_env

HOUR = 3_600_000


def telemetry(n: int, start_ms: int = NOW, step_ms: int = 1000) -> pa.Table:
    return pa.table(
        {
            "metric": ["cpu"] * n,
            "value": [float(i) for i in range(n)],
            "ts": pa.array([start_ms + i * step_ms for i in range(n)], pa.int64()),
        }
    )


def test_incremental_batches_past_the_watermark(env):
    env.cache.record_batch("telemetry", telemetry(25))
    up = env.uploader(policy=UploadPolicy(max_rows=10))
    report = up.upload()
    assert report.ok and report.streams["telemetry"].rows_sent == 25
    assert report.streams["telemetry"].batches == 3
    keys = sorted(o.key for o in env.store.list("").objects)
    assert [parse_object_key(k)[3:] for k in keys] == [(1, 10), (11, 20), (21, 25)]
    assert env.cache.watermark("telemetry") == 25
    again = up.upload()
    assert again.rows_sent == 0 and len(env.store.list("").objects) == 3
    env.cache.record_batch("telemetry", telemetry(4, NOW + 30_000))
    third = up.upload()
    assert third.streams["telemetry"].rows_sent == 4
    rows, _ = central_view(env.store, env.keys, env.identity.public_key_bytes())
    assert sorted(s for st, s in rows if st == "telemetry") == list(range(1, 30))


def test_interrupted_upload_resumes_with_the_same_key(env):
    env.cache.record_batch("telemetry", telemetry(8))

    def crash_after_put(step, stream):
        if step == "put":
            raise KeyboardInterrupt("simulated crash between put and ack")

    with pytest.raises(KeyboardInterrupt):
        env.uploader(policy=UploadPolicy(max_rows=5), hook=crash_after_put).upload()
    assert env.cache.watermark("telemetry") == 0  # nothing acknowledged before the crash
    report = env.uploader(policy=UploadPolicy(max_rows=5)).upload()
    assert report.streams["telemetry"].already_present == 1  # same rows -> same key -> no second object
    assert len(env.store.list("").objects) == 2
    rows, _ = central_view(env.store, env.keys, env.identity.public_key_bytes())
    assert sorted(s for _, s in rows) == list(range(1, 9))


def test_batches_are_cut_at_device_hour_boundaries(env):
    # 10 rows in the first hour, 5 in the next: two batches even though max_rows allows 50
    t = pa.concat_tables([telemetry(10, NOW + HOUR - 20_000), telemetry(5, NOW + HOUR + 1000)])
    env.cache.record_batch("telemetry", t)
    report = env.uploader(policy=UploadPolicy(max_rows=50)).upload()
    assert report.streams["telemetry"].batches == 2
    assert sorted(parse_object_key(o.key)[3:] for o in env.store.list("").objects) == [(1, 10), (11, 15)]


def test_alerts_go_first_and_a_small_budget_defers_the_backlog(env):
    env.cache.record_batch(
        "logs", pa.table({"level": ["info"] * 300, "message": [f"old log {i}" for i in range(300)]})
    )
    env.cache.record_batch("telemetry", telemetry(300))
    env.cache.record("alerts", {"severity": "critical", "code": "overheat", "message": "too hot"})
    store = RecordingStore(env.store)
    env.store = store
    up = env.uploader(policy=UploadPolicy(max_rows=50), budget=BandwidthBudget(bytes_per_sync=4000))
    report = up.upload()
    assert store.puts[0].startswith(f"tenant={TENANT}/device={DEVICE}/stream=alerts/")
    streams_in_order = [parse_object_key(k).stream for k in store.puts]
    assert streams_in_order == sorted(streams_in_order, key=BY_PRIORITY.index)
    assert report.streams["alerts"].rows_sent == 1
    assert report.budget_exhausted
    assert report.streams["logs"].rows_sent == 0 and report.streams["logs"].deferred_rows == 300
    assert report.streams["telemetry"].deferred_rows == 300 - report.streams["telemetry"].rows_sent > 0
    # later syncs drain the backlog, oldest first, nothing twice
    for _ in range(40):
        if up.upload().rows_sent == 0:
            break
    rows, _ = central_view(env.store, env.keys, env.identity.public_key_bytes())
    assert sorted(s for st, s in rows if st == "logs") == list(range(1, 301))
    assert env.cache.stats()["streams"]["logs"]["queue_depth"] == 0


def test_a_new_alert_overtakes_a_backlog_on_the_next_sync(env):
    env.cache.record_batch("logs", pa.table({"level": ["info"] * 200, "message": ["x" * 50] * 200}))
    store = RecordingStore(env.store)
    env.store = store
    up = env.uploader(policy=UploadPolicy(max_rows=20), budget=BandwidthBudget(bytes_per_sync=1))
    up.upload()  # one logs batch (the first batch always goes)
    env.cache.record("alerts", {"severity": "warning", "code": "disk", "message": "disk 90%"})
    store.puts.clear()
    report = up.upload()
    assert parse_object_key(store.puts[0]).stream == "alerts"
    assert report.streams["alerts"].rows_sent == 1


def test_transient_store_failures_are_retried_with_jittered_backoff(env):
    env.cache.record_batch("telemetry", telemetry(5))
    env.store = RecordingStore(env.store, fail=2)
    sleeps: list[float] = []
    backoff = Backoff(base_s=1.0, cap_s=4.0, rng=random.Random(7))
    report = env.uploader(sleep=sleeps.append, backoff=backoff, policy=UploadPolicy(attempts=3)).upload()
    assert report.ok and report.streams["telemetry"].rows_sent == 5
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0
    assert len(env.store.puts) == 1  # the failed attempts wrote nothing; no duplicate object


@pytest.mark.parametrize("exc", [StoreUnavailable("no route to host"), VaultUnavailable("vault down")])
def test_persistent_outage_reports_offline_and_keeps_rows(env, exc):
    env.cache.record_batch("telemetry", telemetry(5))
    env.cache.record("alerts", {"severity": "critical", "code": "x", "message": "m"})
    if isinstance(exc, VaultUnavailable):

        class DownKeys:
            def generate_data_key(self, tenant_id):
                raise exc

            def unwrap(self, *a):
                raise exc

        up = Uploader(
            env.cache, env.store, key_service=DownKeys(), identity=env.identity, sleep=lambda s: None
        )
    else:
        env.store = RecordingStore(env.store, fail=10**6, exc=exc)
        up = env.uploader(policy=UploadPolicy(attempts=2))
    report = up.upload()
    assert report.offline and not report.ok and report.rows_sent == 0
    assert type(exc).__name__ in report.errors[0]
    assert env.cache.watermark("alerts") == 0 and env.cache.watermark("telemetry") == 0
    # recording goes on while offline
    env.cache.record("alerts", {"severity": "info", "code": "y", "message": "still recording"})
    assert env.cache.stats()["streams"]["alerts"]["queue_depth"] == 2


def test_evictions_ride_in_manifests_and_are_confirmed_once(tmp_path):
    e = make_env(tmp_path, max_bytes=4000)
    try:
        for i in range(6):
            e.cache.record_batch(
                "logs", pa.table({"level": ["info"] * 20, "message": [f"log {i} " + "y" * 40] * 20})
            )
        evicted = e.cache.evictions()["logs"]["total"]
        assert evicted > 0, "the size bound should have evicted old logs"
        report = e.uploader(policy=UploadPolicy(max_rows=7)).upload()
        assert report.ok and report.streams["logs"].evicted_rows_reported == evicted
        assert e.cache.eviction_report("logs") == []
        rows, evictions = central_view(e.store, e.keys, e.identity.public_key_bytes())
        logs = {s for st, s in rows if st == "logs"}
        evicted_seqs = {s for _, lo, hi, _ in evictions for s in range(lo, hi + 1)}
        assert sum(n for *_, n in evictions) == evicted
        assert logs | evicted_seqs == set(range(1, 121)) and not logs & evicted_seqs
        assert e.uploader().upload().streams["logs"].batches == 0  # nothing re-sent
    finally:
        e.cache.close()


def test_eviction_only_batch_when_no_rows_are_pending(env):
    old = NOW - 8 * 24 * HOUR  # older than the logs TTL (7 days)
    env.cache.record_batch(
        "logs",
        pa.table({"level": ["info"] * 5, "message": ["stale"] * 5, "ts": pa.array([old] * 5, pa.int64())}),
    )
    assert env.cache.evict_expired() == 5
    assert env.cache.pending("logs").num_rows == 0
    report = env.uploader().upload()
    assert report.ok and report.streams["logs"].batches == 1 and report.streams["logs"].rows_sent == 0
    assert report.streams["logs"].evicted_rows_reported == 5
    rows, evictions = central_view(env.store, env.keys, env.identity.public_key_bytes())
    assert not rows and evictions == {("logs", 1, 5, 5)}
    assert env.cache.eviction_report("logs") == []


def test_token_bucket_waits_for_the_rate():
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(1000, 1000, clock=lambda: now[0], sleep=sleep)
    assert bucket.take(1000) == 0.0
    assert bucket.take(500) == pytest.approx(0.5)
    assert bucket.take(3000) == pytest.approx(1.0)  # over capacity: waits for a full bucket, not forever
    assert sum(slept) == pytest.approx(1.5)


def test_backoff_is_full_jitter_and_capped():
    b = Backoff(base_s=1.0, cap_s=8.0, rng=random.Random(1))
    ceilings = []
    for _ in range(6):
        ceilings.append(b.ceiling())
        assert 0.0 <= b.next_delay() <= ceilings[-1]
    assert ceilings == [1, 2, 4, 8, 8, 8]
    b.reset()
    assert b.ceiling() == 1.0
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=0)


def test_rate_limit_makes_the_sync_wait(env):
    env.cache.record_batch("telemetry", telemetry(30))
    now = [0.0]

    def sleep(s):
        now[0] += s

    up = env.uploader(
        policy=UploadPolicy(max_rows=10),
        clock=lambda: now[0],
        sleep=sleep,
        budget=BandwidthBudget(bytes_per_second=500, burst_bytes=500),
    )
    report = up.upload()
    assert report.streams["telemetry"].rows_sent == 30
    assert report.waited_s > 0


def test_identity_of_another_device_is_refused(env):
    with pytest.raises(ValueError, match="identity is for"):
        Uploader(
            env.cache, env.store, key_service=env.keys, identity=DeviceIdentity.generate(TENANT, "dev-2")
        )


def test_a_stream_that_fails_for_good_does_not_block_the_others(env):
    from edge_sync.objectstore import ObjectStoreError

    class RefusesAlerts(RecordingStore):
        def put_if_absent(self, key, data):
            if "/stream=alerts/" in key:
                raise ObjectStoreError("access denied to the alerts prefix (test)")
            return super().put_if_absent(key, data)

    env.cache.record("alerts", {"severity": "critical", "code": "x", "message": "m"})
    env.cache.record_batch("telemetry", telemetry(3))
    env.store = RefusesAlerts(env.store)
    report = env.uploader().upload()
    assert not report.ok and not report.offline
    assert "access denied" in report.streams["alerts"].errors[0]
    assert report.streams["telemetry"].rows_sent == 3 and env.cache.watermark("alerts") == 0
