"""Property: every seq the cache issues is exactly one of delivered, evicted (and counted) or pending.

A hypothesis state machine records rows across streams, delivers (pending + ack), squeezes
the size bound, lets time pass past TTLs, reports evictions and closes/reopens the cache
(offline/online), and checks after every step that nothing was lost silently or counted twice.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edge_sync.cache import DeviceCache, Durability
from edge_sync.cache_evict import EVICTION_ORDER

KEY = bytes(range(1, 33))
DAY_MS = 86_400_000
RECORDED = ("alerts", "health", "telemetry", "logs")
STREAMS_UNDER_TEST = (*RECORDED, "state")


def payload(stream: str, i: int) -> dict:
    text = "p" * (i % 40)
    return {
        "alerts": {"code": text},
        "health": {"version": text},
        "telemetry": {"metric": text, "value": 1.0},
        "logs": {"message": text},
    }[stream]


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="cache-prop-"))
        self.now = [1_800_000_000_000]
        self.issued = {s: 0 for s in STREAMS_UNDER_TEST}
        self.delivered: dict[str, set[int]] = {s: set() for s in STREAMS_UNDER_TEST}
        self.reported: dict[str, list[dict]] = {s: [] for s in STREAMS_UNDER_TEST}
        self.max_bytes = 1 << 30
        self.cache = self._open()

    def _open(self) -> DeviceCache:
        return DeviceCache.open(
            self.dir / "c.db",
            tenant_id="t",
            device_id="d",
            key=KEY,
            max_bytes=self.max_bytes,
            durability=Durability(max_rows=7, max_ms=3_600_000),
            wall_ms=lambda: self.now[0],
        )

    def teardown(self) -> None:
        self.cache.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(stream=st.sampled_from(RECORDED), n=st.integers(1, 12))
    def record(self, stream, n):
        for i in range(n):
            seq, _ = self.cache.record(stream, payload(stream, i))
            self.issued[stream] += 1
            assert seq == self.issued[stream]

    @rule(stream=st.sampled_from(RECORDED), n=st.integers(0, 30), old=st.booleans())
    def record_batch(self, stream, n, old):
        rows = [payload(stream, i) for i in range(n)]
        table = pa.Table.from_pylist(rows) if rows else pa.table({"message": pa.array([], pa.string())})
        if stream != "logs" and not rows:
            return
        if old and rows:  # rows stamped 20 days ago: expired for telemetry and logs
            table = table.append_column("ts", pa.array([self.now[0] - 20 * DAY_MS] * n, pa.int64()))
        first, last = self.cache.record_batch(stream, table)
        assert (first, last) == (self.issued[stream] + 1, self.issued[stream] + n)
        self.issued[stream] += n

    @rule(n=st.integers(1, 3))
    def put(self, n):
        self.cache.put("ns", f"k{n}", {f"f{i}": i for i in range(n)})
        self.issued["state"] += n

    @rule(stream=st.sampled_from(STREAMS_UNDER_TEST), max_rows=st.integers(1, 40))
    def deliver(self, stream, max_rows):
        t = self.cache.pending(stream, max_rows=max_rows)
        if t.num_rows:
            seqs = t["seq"].to_pylist()
            assert seqs == sorted(seqs)
            self.delivered[stream].update(seqs)
            self.cache.ack(stream, seqs[-1])

    @rule(fraction=st.floats(0.0, 0.9))
    def squeeze(self, fraction):
        before = self.cache.evictions()
        lower_had_rows = {s: self.cache.stats()["streams"][s]["queue_depth"] > 0 for s in EVICTION_ORDER}
        self.cache.max_bytes = int(self.cache.size_bytes() * fraction)
        self.cache.flush()
        after = self.cache.evictions()
        if after["alerts"]["total"] > before["alerts"]["total"]:
            # an alert went: every lower class must have been emptied first
            for s in EVICTION_ORDER[: EVICTION_ORDER.index("alerts")]:
                assert not lower_had_rows[s] or self.cache.stats()["streams"][s]["queue_depth"] == 0
        self.cache.max_bytes = self.max_bytes

    @rule(days=st.integers(1, 40))
    def time_passes(self, days):
        self.now[0] += days * DAY_MS
        self.cache.evict_expired()

    @rule(stream=st.sampled_from(STREAMS_UNDER_TEST), confirm=st.booleans())
    def report(self, stream, confirm):
        rep = self.cache.eviction_report(stream)
        if rep and confirm:
            self.reported[stream] += rep
            assert self.cache.mark_evictions_reported(stream, rep[-1]["id"]) == len(rep)

    @rule(max_bytes=st.sampled_from([1 << 30, 4000, 1500]))
    def reopen(self, max_bytes):
        self.cache.close()
        self.max_bytes = max_bytes
        self.cache = self._open()

    @invariant()
    def every_seq_is_delivered_evicted_or_pending(self):
        self.cache.flush()  # so the reads below (pending flushes too) cannot evict in between
        totals = self.cache.evictions()
        for s in STREAMS_UNDER_TEST:
            ranges = self.reported[s] + self.cache.eviction_report(s)
            evicted: set[int] = set()
            for r in ranges:
                span = set(range(r["first_seq"], r["last_seq"] + 1))
                assert r["count"] == len(span), r
                assert not evicted & span, f"{s}: seqs evicted twice {sorted(evicted & span)[:5]}"
                evicted |= span
            assert totals[s]["total"] == len(evicted)
            pending = set(self.cache.pending(s)["seq"].to_pylist())
            delivered = self.delivered[s]
            assert not (delivered & evicted), f"{s}: delivered and evicted {sorted(delivered & evicted)[:5]}"
            assert not (delivered & pending) and not (evicted & pending)
            assert delivered | evicted | pending == set(range(1, self.issued[s] + 1)), s
            assert self.cache.stats()["streams"][s]["last_seq"] == self.issued[s]


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=5, stateful_step_count=15, deadline=None)


@pytest.mark.slow
class TestCacheMachineDeep(CacheMachine.TestCase):
    settings = settings(max_examples=20, stateful_step_count=30, deadline=None)
