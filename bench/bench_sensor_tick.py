"""One batch-arrival sensor tick with a 100k-object backlog (quick: 20k) on a local object store.

The tick plans runs from at most ``MAX_KEYS_PER_TICK`` keys after its cursor (the planner
in edgeplat.sync.arrivals, the same code the sensor runs); the baseline is one full
``list`` of the backlog, what a naive sensor would do per tick. Objects are empty files:
the tick never reads them. Reported: tick time vs full-listing time (target <= 0.5, and
the tick must stay bounded: it lists the same number of keys whatever the backlog).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from bench.harness import Result, best_of
from edge_sync.batch_keys import object_key
from edge_sync.objectstore import LocalObjectStore
from edgeplat.sync.arrivals import ArrivalCursor, plan_arrivals
from pipelines.sensors.batch_arrival import KEYS_PER_RUN, MAX_KEYS_PER_TICK


def make_backlog(root: Path, n: int) -> LocalObjectStore:
    store = LocalObjectStore(root, fsync=False)
    per_device = 100
    for i in range(n):
        tenant, device, seq = f"t{i % 3}", f"d{i // per_device:05d}", i % per_device
        path = root / object_key(tenant, device, "telemetry", seq * 10 + 1, seq * 10 + 10)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return store


def full_listing(store: LocalObjectStore) -> int:
    after, n = None, 0
    while True:
        page = store.list("", after=after, limit=1000)
        n += len(page.objects)
        if page.next_after is None:
            return n
        after = page.next_after


def run(quick: bool) -> list[Result]:
    n = 20_000 if quick else 100_000
    root = Path(tempfile.mkdtemp(prefix="bench-sensor-"))
    try:
        store = make_backlog(root, n)
        assert full_listing(store) == n
        plans = []

        def tick() -> None:
            plans.append(
                plan_arrivals(store, ArrivalCursor(), max_keys=MAX_KEYS_PER_TICK, keys_per_run=KEYS_PER_RUN)
            )

        t_tick = best_of(tick, repeat=3)
        t_full = best_of(lambda: full_listing(store), repeat=2)
        plan = plans[-1]
        assert plan.listed == MAX_KEYS_PER_TICK and not plan.caught_up  # bounded work
        assert all(len(r.keys) <= KEYS_PER_RUN for r in plan.runs)
        # a tick deep into the backlog costs about the same as the first one
        mid = ArrivalCursor(plan.cursor.after)
        t_mid = best_of(lambda: plan_arrivals(store, mid, max_keys=MAX_KEYS_PER_TICK), repeat=2)
        note = (
            f"backlog {n:,} objects; a tick lists {plan.listed:,} keys into {len(plan.runs)} runs; "
            f"first tick {t_tick:.2f} s, a later tick {t_mid:.2f} s, full listing {t_full:.2f} s"
        )
        return [
            Result(
                "sensor_tick_vs_full_listing",
                t_tick,
                "s",
                f"full list of the {n:,}-object backlog",
                t_full,
                0.5,
                higher_is_better=False,
                note=note,
            ),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    t0 = time.perf_counter()
    for r in run(quick=True):
        print(r.record())
    print(f"{time.perf_counter() - t0:.1f} s")
