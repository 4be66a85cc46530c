"""Fuzz of the batch reader over mutated real batches: every input is refused with a named reason
or accepted with exactly the original rows; nothing else escapes, and memory stays bounded."""

from __future__ import annotations

import resource

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_sync.batch import BatchError, read_batch
from edge_sync.batch_encoding import PayloadDecodeError, decode_table
from edge_sync.batch_errors import reasons
from edge_sync.streams import get_stream
from tests.support import poison
from tests.support.batches import D, T, assert_identical, make_table, seal

_MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.integers(0, 0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(_MUTATIONS, min_size=1, max_size=4))
def test_mutated_batches_are_refused_with_a_reason_or_read_exactly(good, keyring, ident, mutations) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = poison.mutate(good.data, mutations)
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
    payload = zstandard.ZstdCompressor(write_content_size=True).compress(
        poison.mutate(poison.telemetry_parquet(), mutations)
    )
    data = seal(good.manifest.model_dump(mode="json"), payload, keyring.generate_data_key(T), ident)
    try:
        got = read_batch(data, key_service=keyring, public_keys=[ident.public_key_bytes()])
    except BatchError as exc:
        assert exc.reason in reasons()
    else:
        assert got.table.schema.equals(table.schema) and got.table.num_rows == table.num_rows
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024
    assert grown_mb < 200


_FOOTER_MUTATIONS = st.tuples(
    st.sampled_from(["flip", "set", "insert", "cut"]), st.integers(-600, -1), st.integers(1, 255)
)


@settings(max_examples=300, deadline=None)
@given(mutations=st.lists(_FOOTER_MUTATIONS, min_size=1, max_size=4))
def test_mutated_footers_are_payload_errors_not_aborts(mutations) -> None:
    """Mutations in the Parquet footer, where pyarrow's metadata objects used to abort the
    process (uncaught C++ exceptions): each decodes or is a payload error, in this process."""
    parquet = poison.telemetry_parquet()
    mutations = [(kind, len(parquet) + pos, value) for kind, pos, value in mutations]
    payload = zstandard.ZstdCompressor(write_content_size=True).compress(poison.mutate(parquet, mutations))
    try:
        got = decode_table(payload, get_stream("telemetry"), T, D)
    except PayloadDecodeError:
        return
    assert got.num_rows == make_table("telemetry").num_rows
