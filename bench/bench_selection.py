"""Rollout phase assignment throughput: ``assign_phases`` vs a straightforward pandas version.

Both hash every device id with a cryptographic hash under the rollout salt and place it in
phases [1, 10, 50, 100]. The baseline is what one would write in pandas: sha256 per row via
``Series.map``, then ``np.searchsorted`` on the thresholds (and ``groupby().rank()`` for the
stratified case). Figures are devices per second; the input is an Arrow table as DuckDB
returns it, and the pandas baseline gets its DataFrame for free (conversion not timed).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pyarrow as pa

from bench.harness import Result, best_of
from edgeplat.rollouts.selection import assign_phases

PHASES = [1, 10, 50, 100]
SALT = "inference-2-1-0:6f1c"


def _devices(n: int) -> pa.Table:
    return pa.table(
        {
            "device_id": [f"dev-{i:08d}" for i in range(n)],
            "tenant_id": [f"tenant-{i % 40:02d}" for i in range(n)],
        }
    )


def _pandas_plain(df) -> np.ndarray:
    bucket = df.device_id.map(lambda d: int(hashlib.sha256(f"{SALT}:{d}".encode()).hexdigest(), 16) % 10_000)
    thresholds = np.asarray(PHASES, dtype=float) * 100
    return np.searchsorted(thresholds, bucket.to_numpy(), side="right")


def _pandas_stratified(df) -> np.ndarray:
    bucket = df.device_id.map(lambda d: int(hashlib.sha256(f"{SALT}:{d}".encode()).hexdigest(), 16) % 10_000)
    rank = bucket.groupby(df.tenant_id).rank(method="first").to_numpy()
    size = df.groupby("tenant_id").device_id.transform("size").to_numpy()
    phase = np.full(len(df), len(PHASES) - 1)
    for k in reversed(range(len(PHASES) - 1)):
        phase[rank <= np.ceil(PHASES[k] * size / 100)] = k
    return phase


def run(quick: bool) -> list[Result]:
    n = 200_000 if quick else 1_000_000
    table = _devices(n)
    df = table.to_pandas()
    repeat = 2 if quick else 3
    ours = best_of(lambda: assign_phases(table, PHASES, SALT), repeat)
    base = best_of(lambda: _pandas_plain(df), repeat)
    ours_s = best_of(lambda: assign_phases(table, PHASES, SALT, stratify_by="tenant"), repeat)
    base_s = best_of(lambda: _pandas_stratified(df), repeat)
    # Same shares from both, as a guard that the comparison is like for like.
    a = assign_phases(table, PHASES, SALT)
    share_ours, share_base = float(a.in_phase(0).mean()), float((_pandas_plain(df) == 0).mean())
    assert math.isclose(share_ours, share_base, abs_tol=0.003), (share_ours, share_base)
    note = f"{n:,} devices, phases {PHASES}"
    return [
        Result(
            "selection.assign_phases",
            n / ours,
            "devices/s",
            "pandas sha256 map + searchsorted",
            n / base,
            1.0,
            note=note,
        ),
        Result(
            "selection.assign_phases_stratified",
            n / ours_s,
            "devices/s",
            "pandas sha256 map + groupby rank",
            n / base_s,
            1.0,
            note=note + ", 40 tenants",
        ),
    ]
