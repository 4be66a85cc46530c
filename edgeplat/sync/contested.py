"""Settle contested rows: replays, duplicates and the one copy of each row to store.

A row is *contested* when another staged batch or a stored batch claims the same
(tenant, device, stream, seq). Every contested row carries a fingerprint (``_fp``, DuckDB's
``hash`` of hlc, node, ts and payload, computed the same way for the stored rows), and the
decision is plain numpy over integer keys:

1. A staged batch with a row whose fingerprint differs from the stored row of its key is a
   replay (the stored row stands).
2. Among the other staged batches, the first claimant of a key (lowest batch index, i.e.
   object key) sets the fingerprint; a later batch that differs from it is a replay too.
3. Of what is left, one copy per key is kept (the first batch's, for ``batch_key``), unless
   the key is stored already.

A replay rejects the whole batch, so its rows are neither compared further nor kept. The
(tenant, device, stream) part of the key is a small integer per stream (``dev``), and seqs
are replaced by their rank, so keys are single int64s whatever the seq values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Settled:
    """The outcome for a stage's contested rows."""

    bad: dict[int, str]  # batch index -> why it is a replay
    keep: np.ndarray  # positions (ascending) of the contested rows to store


def settle(
    bidx: np.ndarray,
    dev: np.ndarray,
    seq: np.ndarray,
    fp: np.ndarray,
    stored_dev: np.ndarray,
    stored_seq: np.ndarray,
    stored_fp: np.ndarray,
) -> Settled:
    """Decide replays and the copies to keep for contested rows (see the module docstring)."""
    n = len(bidx)
    ranks = np.unique(np.concatenate([seq, stored_seq]), return_inverse=True)[1]
    width = int(ranks.max()) + 1 if len(ranks) else 1
    key = dev.astype(np.int64) * width + ranks[:n]
    stored_key = stored_dev.astype(np.int64) * width + ranks[n:]
    bad: dict[int, str] = {}

    # 1. against the stored rows
    order = np.argsort(stored_key, kind="stable")
    stored_key, stored_fp = stored_key[order], stored_fp[order]
    at = np.clip(np.searchsorted(stored_key, key), 0, max(len(stored_key) - 1, 0))
    is_stored = (stored_key[at] == key) if len(stored_key) else np.zeros(n, dtype=bool)
    differs = is_stored & (stored_fp[at] != fp) if len(stored_key) else is_stored
    _mark(
        bad,
        bidx[differs],
        seq[differs],
        "differs from the stored row of the same (tenant, device, stream, seq)",
    )

    # 2. among the staged batches, against the first claimant of each key
    live = np.flatnonzero(~np.isin(bidx, list(bad)))
    order = live[np.lexsort((bidx[live], key[live]))]
    first = _group_starts(key[order])
    fp0 = fp[order][np.flatnonzero(first)][np.cumsum(first) - 1]
    differs = order[fp[order] != fp0]
    _mark(bad, bidx[differs], seq[differs], "differs from another batch of this run claiming the same seq")

    # 3. one copy per key, from batches that are not replays, for keys not stored yet
    live = np.flatnonzero(~np.isin(bidx, list(bad)) & ~is_stored)
    order = live[np.lexsort((bidx[live], key[live]))]
    keep = np.sort(order[_group_starts(key[order])])
    return Settled(bad, keep)


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    first = np.ones(len(sorted_keys), dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return first


def _mark(bad: dict[int, str], bidx: np.ndarray, seq: np.ndarray, why: str) -> None:
    """Record each batch in ``bidx`` as a replay, naming its lowest differing seq."""
    if not len(bidx):
        return
    order = np.lexsort((seq, bidx))
    b, s = bidx[order], seq[order]
    starts = _group_starts(b)
    for batch, lowest in zip(b[starts].tolist(), s[starts].tolist(), strict=True):
        bad.setdefault(batch, f"seq {lowest} {why}")
