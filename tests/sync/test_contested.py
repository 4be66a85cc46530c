"""Settling contested rows: replays against stored and staged rows, and one copy per key."""

from __future__ import annotations

import numpy as np

from edgeplat.sync.contested import settle

EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64))


def arrays(*rows: tuple[int, int, int, int]):
    """(bidx, dev, seq, fp) columns of contested rows."""
    cols = list(zip(*rows, strict=True))
    return (
        np.array(cols[0], np.int32),
        np.array(cols[1], np.int64),
        np.array(cols[2], np.int64),
        np.array(cols[3], np.uint64),
    )


def test_identical_copies_keep_the_first_batchs_row_once_per_key() -> None:
    # batches 0 and 2 both carry dev 0 seqs 5..6; batch 1 carries the same seqs of another device
    rows = arrays((0, 0, 5, 10), (0, 0, 6, 11), (1, 1, 5, 99), (2, 0, 5, 10), (2, 0, 6, 11))
    out = settle(*rows, *EMPTY)
    assert out.bad == {}
    assert out.keep.tolist() == [0, 1, 2]


def test_a_later_batch_that_differs_is_a_replay_and_loses_all_its_rows() -> None:
    rows = arrays((0, 0, 5, 10), (0, 0, 6, 11), (1, 0, 6, 12), (1, 0, 7, 13))
    out = settle(*rows, *EMPTY)
    assert out.bad == {1: "seq 6 differs from another batch of this run claiming the same seq"}
    assert out.keep.tolist() == [0, 1]  # batch 1's seq 7 is not kept either: the batch is refused


def test_rows_stored_already_are_dropped_and_a_different_stored_row_wins() -> None:
    rows = arrays((0, 0, 5, 10), (0, 0, 6, 11), (1, 1, 8, 20), (1, 1, 9, 21))
    stored = (np.array([0, 1], np.int64), np.array([5, 9], np.int64), np.array([10, 77], np.uint64))
    out = settle(*rows, *stored)
    assert out.bad == {1: "seq 9 differs from the stored row of the same (tenant, device, stream, seq)"}
    assert out.keep.tolist() == [1]  # seq 5 is stored already; batch 1 is a replay


def test_seqs_of_any_size_make_distinct_keys() -> None:
    big = 2**62
    rows = arrays((0, 0, big, 1), (0, 1, big, 2), (1, 0, big, 1), (1, 1, 3, 4))
    out = settle(*rows, *EMPTY)
    assert out.bad == {} and out.keep.tolist() == [0, 1, 3]
