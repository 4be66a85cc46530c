"""State merge throughput: StateMerger.merge into an empty state vs a plain arg_max GROUP BY.

1M edits over 100k keys (quick: 100k over 10k) where 20% of the keys are edited by two
nodes (a device and central, so their values conflict) and the rest by their device only.
The baseline is the least a merge can do: ``arg_max(value, (hlc, node_id))`` grouped by
key over the same edits already materialized in a DuckDB table, written to a table.

Each merge goes into three new empty tables (created by the merger, inside the timing, and
dropped after it) on a connection opened once, like the baseline's: neither side pays for
opening a database. The two sides are timed alternately, best of ``repeat`` each, so load
from other processes on a shared machine falls on both rather than on whichever ran second.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import duckdb
import numpy as np
import pyarrow as pa

from bench.harness import Result
from edge_sync.merge import StateMerger
from edge_sync.rules import parse_rules


def make_edits(n_edits: int, n_keys: int, conflict_share: float = 0.2, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    key_ix = rng.integers(0, n_keys, n_edits)
    conflicting = key_ix < int(n_keys * conflict_share)
    # On a conflicting key about half the edits come from central.
    central = conflicting & (rng.random(n_edits) < 0.5)
    device = np.char.add("dev-", (key_ix % 1000).astype(str))
    node = np.where(central, "central", device)
    hlc = (1_700_000_000_000 << 16) + rng.permutation(n_edits).astype(np.int64)
    return pa.table(
        {
            "tenant_id": pa.array(np.char.add("t", (key_ix % 3).astype(str))),
            "device_id": pa.array(device),
            "namespace": pa.array(np.full(n_edits, "config")),
            "key": pa.array(np.char.add("k", (key_ix // 1000).astype(str))),
            "field": pa.array(np.char.add("f", (key_ix % 7).astype(str))),
            "value": pa.array(rng.integers(0, 1000, n_edits).astype(str)),
            "hlc": pa.array(hlc),
            "node_id": pa.array(node),
            "origin": pa.array(np.where(central, "central", "device")),
        }
    )


def best_alternating(
    fns: list[Callable[[], object]], repeat: int, after: list[Callable[[], object] | None] | None = None
) -> list[float]:
    """The fastest wall-clock time of each of ``fns``, run in turn ``repeat`` times; ``after[i]``
    (untimed) runs after each run of ``fns[i]``."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
            if after and after[i]:
                after[i]()
    return best


def run(quick: bool) -> list[Result]:
    n_edits, n_keys = (100_000, 10_000) if quick else (1_000_000, 100_000)
    edits = make_edits(n_edits, n_keys)
    rules = parse_rules({"version": 1, "default": "lww"})

    ours_con = duckdb.connect()

    def ours() -> None:
        StateMerger(
            ours_con, rules, state_table="state", conflicts_table="conflicts", contributions_table="contrib"
        ).merge(edits)

    def empty() -> None:
        for table in ("state", "conflicts", "contrib"):
            ours_con.execute(f"DROP TABLE IF EXISTS {table}")

    base_con = duckdb.connect()
    base_con.register("edits_arrow", edits)
    base_con.execute("CREATE TABLE edits AS SELECT * FROM edits_arrow")

    def baseline() -> None:
        base_con.execute(
            'CREATE OR REPLACE TABLE state AS SELECT tenant_id, device_id, namespace, "key", field, '
            'arg_max("value", (hlc, node_id)) AS "value", max(hlc) AS hlc FROM edits GROUP BY ALL'
        )

    t_ours, t_base = best_alternating([ours, baseline], repeat=5 if quick else 3, after=[empty, None])
    size = "quick" if quick else "full"
    return [
        Result(
            name=f"state_merge_{size}",
            value=n_edits / t_ours,
            unit="edits/s",
            baseline="arg_max GROUP BY over a materialized table",
            baseline_value=n_edits / t_base,
            target=0.5,
            note=f"{n_edits:,} edits over {n_keys:,} keys, 20% of keys edited by two nodes, lww",
        )
    ]
