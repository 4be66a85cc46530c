"""Fuzz of the batch reader over mutated real batches: every input is refused with a named reason
or accepted with exactly the original rows; nothing else escapes, and memory stays bounded."""

from __future__ import annotations

import functools
import resource

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_sync.batch import BatchError, read_batch
from edge_sync.batch_encoding import encode_table
from edge_sync.batch_errors import reasons
from edge_sync.streams import get_stream
from tests.support.batches import D, T, assert_identical, make_table, seal

_MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.integers(0, 0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
)


@functools.cache
def _parquet() -> bytes:
    """The Parquet file inside the payload of ``make_table("telemetry")``."""
    return zstandard.ZstdDecompressor().decompress(
        encode_table(make_table("telemetry"), get_stream("telemetry"), D)
    )


def _mutate(data: bytes, mutations) -> bytes:
    b = bytearray(data)
    for kind, pos, value in mutations:
        pos = pos % (len(b) + 1)
        if kind == "flip" and pos < len(b):
            b[pos] ^= value
        elif kind == "cut":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = bytes([value])
        elif kind == "set" and pos < len(b):
            b[pos] = value
    return bytes(b)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(_MUTATIONS, min_size=1, max_size=4))
def test_mutated_batches_are_refused_with_a_reason_or_read_exactly(good, keyring, ident, mutations) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = _mutate(good.data, mutations)
    try:
        got = read_batch(
            data, key_service=keyring, public_keys=[ident.public_key_bytes()], expected_key=good.key
        )
    except BatchError as exc:
        assert exc.reason in reasons()
    else:
        assert data == good.data, "a changed object was accepted"
        assert_identical(got.table, make_table("telemetry"))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024
    assert grown_mb < 200


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(_MUTATIONS, min_size=1, max_size=4))
def test_mutated_payloads_signed_by_the_device_are_refused_or_read(good, keyring, ident, mutations) -> None:
    """The same mutations inside the Parquet file, encrypted and signed as a real device would:
    they reach the payload decoder, which refuses with a reason or returns rows of the stream."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    table = make_table("telemetry")
    payload = zstandard.ZstdCompressor(write_content_size=True).compress(_mutate(_parquet(), mutations))
    data = seal(good.manifest.model_dump(mode="json"), payload, keyring.generate_data_key(T), ident)
    try:
        got = read_batch(data, key_service=keyring, public_keys=[ident.public_key_bytes()])
    except BatchError as exc:
        assert exc.reason in reasons()
    else:
        assert got.table.schema.equals(table.schema) and got.table.num_rows == table.num_rows
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024
    assert grown_mb < 200
