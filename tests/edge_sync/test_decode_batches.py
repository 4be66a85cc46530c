"""Decoding many opened batches in one pass (the central ingest) gives what one-by-one reading gives.

``decode_batches`` concatenates the batches' stored columns; a bad batch among good ones must
fail alone, with the reason ``read_batch`` would give it, and leave no row behind.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from edge_sync.batch import decode_batches, open_batch
from edge_sync.streams import STREAMS, get_stream
from tests.support.batches import D, assert_identical, forge, make_table, read, write


def _open(data, keyring, ident, key=None):
    return open_batch(data, key_service=keyring, public_keys=[ident.public_key_bytes()], expected_key=key)


def _plain(table: pa.Table, stream: str) -> pa.Table:
    return table.cast(get_stream(stream).schema)


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_many_batches_decode_to_each_batch_in_turn(stream, keyring, ident):
    tables = [make_table(stream, n=n, first_seq=1000 * i) for i, n in enumerate([23, 1, 40, 7])]
    encoded = [write(t, keyring, ident, stream=stream) for t in tables]
    got = decode_batches([_open(e.data, keyring, ident, e.key) for e in encoded], [e.key for e in encoded])
    assert got.errors == {}
    assert got.counts.tolist() == [23, 1, 40, 7]
    for name in ("tenant_id", "device_id", "stream", "node_id"):
        assert pa.types.is_dictionary(got.table.schema.field(name).type), name
    one_by_one = pa.concat_tables([read(e.data, keyring, ident, expected_key=e.key).table for e in encoded])
    assert_identical(_plain(got.table, stream), one_by_one)


def test_node_ids_of_some_batches_and_eviction_only_batches(keyring, ident):
    own = make_table("telemetry", n=5, first_seq=10)
    other = make_table("telemetry", n=6, first_seq=100)
    other = other.set_column(other.schema.get_field_index("node_id"), "node_id", pa.array(["central"] * 6))
    other = other.cast(get_stream("telemetry").schema)
    evicted = write(
        make_table("telemetry", n=0),
        keyring,
        ident,
        evictions=[dict(first_seq=50, last_seq=60, count=3, reason="size")],
    )
    encoded = [write(own, keyring, ident), evicted, write(other, keyring, ident)]
    got = decode_batches([_open(e.data, keyring, ident, e.key) for e in encoded], [e.key for e in encoded])
    assert got.errors == {}
    assert got.counts.tolist() == [5, 0, 6]
    assert got.table.column("node_id").to_pylist() == [D] * 5 + ["central"] * 6
    assert_identical(_plain(got.table, "telemetry"), pa.concat_tables([own, other]))


def test_a_bad_payload_or_range_fails_that_batch_only(keyring, ident):
    good = [make_table("telemetry", n=9, first_seq=1000 * i) for i in range(3)]
    encoded = [write(t, keyring, ident) for t in good]
    corrupt = forge(
        ident, keyring, payload=b"PAR1 not parquet", table=make_table("telemetry", first_seq=5000)
    )
    bad_range = forge(
        ident, keyring, table=make_table("telemetry", first_seq=7000), changes={"row_count": 99}
    )
    datas = [encoded[0].data, corrupt, encoded[1].data, bad_range, encoded[2].data]
    opened = [_open(d, keyring, ident) for d in datas]
    got = decode_batches(opened, [f"k{i}" for i in range(5)])
    assert {i: e.reason for i, e in got.errors.items()} == {1: "corrupt_payload", 3: "bad_range"}
    assert "k3" in str(got.errors[3]) and "row_count 99" in str(got.errors[3])
    assert got.counts.tolist() == [9, 0, 9, 0, 9]
    assert_identical(_plain(got.table, "telemetry"), pa.concat_tables(good))
    assert np.array_equal(np.repeat(np.arange(5), got.counts)[::9], [0, 2, 4])


def test_batches_of_two_streams_are_refused(keyring, ident):
    a = write(make_table("telemetry"), keyring, ident)
    b = write(make_table("logs"), keyring, ident, stream="logs")
    with pytest.raises(ValueError, match="group them by stream"):
        decode_batches([_open(x.data, keyring, ident) for x in (a, b)], [None, None])


@pytest.mark.parametrize("span", [10, 2**40, 2**62])
def test_seq_order_matches_lexsort_for_any_span(span):
    from edge_sync.batch_encoding import _seq_order

    rng = np.random.default_rng(span % 1000)
    counts = rng.integers(0, 50, size=30)
    counts[[0, 7]] = 0  # empty payloads (eviction-only batches) anywhere
    seq = rng.integers(0, span, size=int(counts.sum()), dtype=np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    assert np.array_equal(_seq_order(seq, counts), np.lexsort((seq, owner)))
    assert _seq_order(seq[:0], np.zeros(3, dtype=np.int64)).size == 0
