"""Vectorized per-field picks over Arrow tables for the state merge (numpy, no row loops).

The merge's second level, the winner of each field among its nodes' heads, runs here
instead of in a DuckDB GROUP BY + join: the heads are few (about one per node and field),
already in Arrow, and sorting small integer codes is several times cheaper than hashing
the five key strings again and comparing structs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def key_codes(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """A dense int64 code per row: equal codes exactly when the ``columns`` values are equal.

    Each column is dictionary-encoded and folded into the running code, which is made dense
    again after each step so that the product of two codes never overflows.
    """
    codes = np.zeros(table.num_rows, np.int64)
    for i, name in enumerate(columns):
        encoded = pc.dictionary_encode(table[name].combine_chunks())
        column = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        if i == 0:
            codes = column
            continue
        _, codes = np.unique(codes * len(encoded.dictionary) + column, return_inverse=True)
    return codes.reshape(-1)


def text_ranks(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Dense ranks of a string column in byte order (DuckDB's VARCHAR order, Python's str order).

    Ranks the distinct values only (node ids: few, repeated on many rows)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    ranks = pc.rank(encoded.dictionary, sort_keys="ascending", tiebreaker="dense").to_numpy()
    return ranks[encoded.indices.to_numpy(zero_copy_only=False)]


def distinct_edits(table: pa.Table, key: Sequence[str]) -> tuple[int, bool]:
    """How many distinct edits ``(key..., hlc)`` the batch holds, and whether every two rows
    sharing such an id are exact copies (then a node's edits order by HLC alone).

    Only rows whose HLC repeats can be copies, so the exact count groups those alone (none
    in the common case, found by one sort of the HLC column)."""
    n = table.num_rows
    hlcs = np.sort(table.column("hlc").to_numpy())
    again = hlcs[1:][hlcs[1:] == hlcs[:-1]]
    if not len(again):
        return n, True
    repeated = again[np.append(True, again[1:] != again[:-1])]
    shared = table.filter(pc.is_in(table.column("hlc"), value_set=pa.array(repeated)))
    ident = [*key, "hlc"]
    by_id = shared.group_by(ident).aggregate([]).num_rows
    by_edit = shared.group_by([*ident, "value", "origin"]).aggregate([]).num_rows
    return n - shared.num_rows + by_id, by_id == by_edit


def best_per_key(keys: np.ndarray, order: Sequence[np.ndarray]) -> np.ndarray:
    """For every row, the index of the greatest row sharing its key.

    ``order`` lists the comparison columns, most significant first; the caller makes them
    a total order inside each key (here the last is the node, unique among a field's heads).
    """
    if len(keys) == 0:
        return np.empty(0, np.int64)
    idx = np.lexsort([*reversed(order), keys])
    sorted_keys = keys[idx]
    last = np.append(sorted_keys[1:] != sorted_keys[:-1], True)
    best = np.empty(int(keys.max()) + 1, np.int64)
    best[sorted_keys[last]] = idx[last]
    return best[keys]
