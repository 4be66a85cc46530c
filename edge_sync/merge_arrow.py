"""Vectorized per-field picks over Arrow tables for the state merge (numpy, no row loops).

The merge's second level, the winner of each field among its nodes' heads, runs here
instead of in a DuckDB GROUP BY + join: the heads are few (about one per node and field),
already in Arrow, and per-key maxima over small integer codes are several times cheaper
than hashing the five key strings again and comparing structs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def key_codes(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """An int64 code per row in ``[0, 4 * rows]``: equal codes exactly when the ``columns``
    values are equal.

    Each column is dictionary-encoded and folded into the running code as a mixed-radix
    digit; the code is only made dense (a sort) when the next digit could overflow int64,
    and once at the end if it is too sparse for ``best_per_key``'s per-code arrays.
    """
    n = table.num_rows
    codes = np.zeros(n, np.int64)
    size = 1
    for name in columns:
        encoded = pc.dictionary_encode(table[name].combine_chunks())
        column = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        radix = max(len(encoded.dictionary), 1)
        if size * radix >= 2**62:
            _, codes = np.unique(codes, return_inverse=True)
            size = n
        codes = codes * radix + column
        size *= radix
    if size > 4 * n:
        _, codes = np.unique(codes, return_inverse=True)
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


def best_per_key(
    keys: np.ndarray, order: Sequence[np.ndarray | Callable[[np.ndarray], np.ndarray]]
) -> np.ndarray:
    """For every row, the index of the greatest row sharing its key.

    ``keys`` are small non-negative codes (``key_codes``). ``order`` lists the comparison
    columns, most significant first; the caller makes them a total order inside each key
    (here the last is the node, unique among a field's heads). Floats order like DuckDB's
    DOUBLE (NaN greatest). Each column only narrows the rows still tied for their key's
    best, so later columns usually touch a handful of rows and nothing is sorted. A column
    may be a callable given the indices of the rows still tied, returning numbers in the
    same order as theirs: a costly column is then computed for those rows alone.
    """
    if len(keys) == 0:
        return np.empty(0, np.int64)
    size = int(keys.max()) + 1
    groups = int(np.count_nonzero(np.bincount(keys, minlength=size)))
    tied = np.arange(len(keys))
    for column in order:
        if len(tied) == groups:
            break
        values = _sortable(column(tied) if callable(column) else column[tied])
        key = keys[tied]
        top = np.full(size, np.iinfo(np.int64).min)
        np.maximum.at(top, key, values)
        tied = tied[values == top[key]]
    best = np.empty(size, np.int64)
    best[keys[tied]] = tied
    return best[keys]


def _sortable(values: np.ndarray) -> np.ndarray:
    """``values`` as int64 in the same order; a float's bits are flipped so they compare as
    signed integers (-0.0 counts as 0.0, every NaN above +inf)."""
    if values.dtype.kind != "f":
        return values.astype(np.int64, copy=False)
    floats = np.where(np.isnan(values), np.nan, values.astype(np.float64) + 0.0)
    bits = floats.view(np.int64)
    return bits ^ ((bits >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))
