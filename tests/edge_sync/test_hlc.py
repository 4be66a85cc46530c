"""Hybrid logical clocks: monotonic whatever the wall clock does, pulled forward by observe."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_sync.cache import DeviceCache
from edge_sync.hlc import LOGICAL_MASK, HybridLogicalClock, logical, order_key, pack, physical_ms

DAY_MS = 86_400_000
TRUE_NOW = 1_800_000_000_000


class Wall:
    """A settable device wall clock."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_pack_roundtrip_and_bounds():
    h = pack(TRUE_NOW, 5)
    assert physical_ms(h) == TRUE_NOW and logical(h) == 5
    with pytest.raises(ValueError, match="48 bits"):
        pack(1 << 48, 0)
    with pytest.raises(ValueError, match="16 bits"):
        pack(0, LOGICAL_MASK + 1)
    assert order_key(h, "a") < order_key(h, "b") < order_key(h + 1, "a")


@pytest.mark.parametrize("skew_ms", [24 * 3600_000, -24 * 3600_000, 0])
def test_skewed_device_clock_is_monotonic(skew_ms):
    wall = Wall(TRUE_NOW + skew_ms)
    clock = HybridLogicalClock("dev-1", wall)
    seen = []
    for step in range(200):
        # wall time stalls, steps forward, and sometimes jumps back a few seconds
        wall.ms += (0, 1, 5, -3000)[step % 4]
        seen.append(clock.now())
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert abs(physical_ms(seen[-1]) - (TRUE_NOW + skew_ms)) < 10_000  # tracks the (skewed) wall


def test_observe_moves_a_lagging_clock_past_central():
    wall = Wall(TRUE_NOW - DAY_MS)  # device 24 h behind
    clock = HybridLogicalClock("dev-1", wall)
    local = clock.now()
    central = pack(TRUE_NOW, 3)
    merged = clock.observe(central)
    assert merged > central > local
    assert clock.now() > merged  # and stays ahead afterwards
    assert clock.observe(local) > merged  # an older remote never moves it back


def test_reserve_gives_consecutive_hlcs_after_everything_issued():
    clock = HybridLogicalClock("dev-1", Wall(TRUE_NOW))
    before = clock.now()
    first, last = clock.reserve(70_000)  # more than the 16-bit counter: carries into ms
    assert first > before and last == first + 69_999
    assert clock.now() > last
    with pytest.raises(ValueError):
        clock.reserve(0)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["now", "observe"]), st.integers(-2 * DAY_MS, 2 * DAY_MS)),
        min_size=1,
        max_size=60,
    )
)
def test_any_wall_and_remote_sequence_is_strictly_increasing(ops):
    wall = Wall(TRUE_NOW)
    clock = HybridLogicalClock("dev-1", wall)
    last = 0
    for op, delta in ops:
        wall.ms = TRUE_NOW + delta
        h = clock.now() if op == "now" else clock.observe(pack(TRUE_NOW + delta // 2, 0))
        assert h > last
        last = h


def test_wall_clock_backwards_across_cache_reopen(tmp_path):
    path, key = tmp_path / "c.db", bytes(32)
    wall = Wall(TRUE_NOW + DAY_MS)  # first session: clock 24 h ahead
    with DeviceCache.open(path, tenant_id="t", device_id="dev-1", key=key, wall_ms=wall) as c:
        hlcs = [c.record("telemetry", {"value": float(i)})[1] for i in range(3)]
        hlcs.append(c.put("cfg", "k", {"a": 1}))
    wall.ms = TRUE_NOW - DAY_MS  # NTP fixed it, overshooting: 48 h back
    with DeviceCache.open(path, tenant_id="t", device_id="dev-1", key=key, wall_ms=wall) as c:
        hlcs.append(c.record("telemetry", {"value": 9.0})[1])
        c.record_batch("logs", pa.table({"message": ["x", "y"]}))
        hlcs.append(c.stats()["last_hlc"])
        hlcs.append(c.put("cfg", "k", {"a": 2}))
        state_hlcs = c.pending("state")["hlc"].to_pylist()
        tele = c.pending("telemetry")["hlc"].to_pylist()
    assert hlcs == sorted(hlcs) and len(set(hlcs)) == len(hlcs)
    assert tele == sorted(tele) and state_hlcs == sorted(state_hlcs)
