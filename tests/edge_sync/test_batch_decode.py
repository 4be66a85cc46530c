"""Batch payload decoding: old objects decode bit for bit, the encoder's bytes stay put, and every
malformed payload is a :class:`PayloadDecodeError` (``corrupt_payload``), never a stray exception."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from edge_sync import batch_encoding as enc
from edge_sync.batch_encoding import PayloadDecodeError, decode_table, encode_table
from edge_sync.streams import STREAMS, StreamSpec, get_stream
from tests.support.batches import D, T, assert_identical, forge, make_table, read, reason_of, write

# sha256 of encode_table(make_table(stream, n=40)) as format 2 writes it (pyarrow 26.0.1,
# zstandard 0.25): the writer's output must not change. Another pyarrow (Parquet writer) or
# zstd may legitimately write other bytes, so the hashes hold for the versions that made them:
# when requirements.lock moves either on, test_encoder_output_is_unchanged fails and prints
# the pins to update (and the hashes of this environment's bytes).
PINNED_PYARROW = "26.0.1"
PINNED_ZSTANDARD = "0.25.0"
ENCODED_SHA256 = {
    "alerts": "52e6a7295f67ec110ce036304cd85df080b8eab915d234c92c27fa55e86dd17b",
    "health": "8a953539215f08327408f9d5ddd3fc80a05c804ebcc1104b0c9c4db1b852d607",
    "logs": "16b4d53bbdb5dd432c6d0126d700e99a846b47ee516027c2805430291b962984",
    "state": "fcbfc0f38cad33b2568183c8af5e223557fcb07be72f04b728615e394825120d",
    "telemetry": "966bed1c47256da50050f2ddfda70465cfa694ddbb9e9ee509d1c4ef6b2003d8",
}

# A format-1 payload (zstd inside the Parquet pages): encode_table of the 40-row telemetry table
# of make_table with node_id "gw-9" on every fifth row, as written before decoding was reworked
# (exercises the metric sort, NaN, -0.0, inf, nulls, unscaled floats and a stored node_id column).
OLD_TELEMETRY_PAYLOAD = base64.b64decode(
    "UEFSMRUAFZQBFYYBLBVQFQoVBhUGHAAAACi1L/0gStUBAGKDDBTQ5yAWnmU2KS4yvEQVMli4CBKZAr9txivbTpi6SDMKZdsI"
    "U9kxjKn/xalrIwB05T8IAQBGAygVABWMBRVKLBVQFQAVBhUGHAAAACi1L/1gRgDdAACgAgAAAFABAKjadpsBAADlAwAAAAAB"
    "AF6qlwkVBBVwFTZMFQ4VABIAACi1L/0gOJUAAIKDA4VCIRH//eMv//nrD/8BABUAFS4VQCwVUBUQFQYVBhwAAAAotS/9IBe5"
    "AAACAAAAUAEDCwAAJEkiSdK2jSTZtq1t2xUEFSIVNEwVBBUAEgAAKLUv/SARiQAABAAAAGd3LTkFAAAAZGV2LTEVABUaFSws"
    "FVAVEBUGFQYcAAAAKLUv/SANaQAAAgAAAFABAQtev29/vxUEFd4BFZwBTBUMFQASAAAotS/9IG8tAgDkAwAAAAABAAAAYREA"
    "AABow6lsbG8gd8O2cmxkIOKckwoAAABsaW5lCmJyZWFrMgAAAHgJAAAA5pel5pys6KqeAQBhBKAVABUyFUQsFVAVEBUGFQYc"
    "AAAAKLUv/SAZyQAABAAAAEQBDAADCwAAJEkiSdK2jSTZti0AABUAFboBFVwsFVAVChUGFQYcAAAAKLUv/SBdLQEA+AYAAAAL"
    "AYQqUAiAAgQJHosDCQAAAIyNAWAMgDEAYwABAE8CThUEFQgVGkwVAhUAEgAAKLUv/SAEIQAAAQAAABUAFRoVLCwVUBUQFQYV"
    "BhwAAAAotS/9IA1pAAAGAAAACwGEKlAIARIAFQAVtAMV3gEsFVAVEhUGFQYcAAAAKLUv/SDaNQMAsgQPFdBdA4upyIGGYhG7"
    "0l/hs5cP7jckBY0d5667txs79fp1uy2SjukwYzPe+I3xUGM1IPkfPBgMyYoTJfGHF6igJmVmuXYQ0NsBQIbaeANhAFKxcxeA"
    "ZCZkLmwuOCX1kXuLwaQUFQQZnDUAGAZzY2hlbWEVEAAVBCUCGANzZXEAFQQlAhgEdHMuZAAVBCUCGAZobGMubG8AFQwlAhgH"
    "bm9kZV9pZCUATBwAAAAVDCUCGAZtZXRyaWMlAEwcAAAAFQQlAhgHdmFsdWUuaQAVAiUCGAd2YWx1ZS5zJR5MrBMIEQAAABUK"
    "JQIYB3ZhbHVlLmYAFlAZHBmMJgAcFQQZJQYKGRgDc2VxFQwWUBa+ARawASYISRwVABUKFQIAPCkGGSYAUAAAACYAHBUEGSUG"
    "ABkYBHRzLmQVDBZQFrQFFnImuAFJHBUAFQAVAgA8KQYZJgBQAAAAJgAcFQQZNQAGEBkYBmhsYy5sbxUMFlAW4AEWuAEm/AIm"
    "qgIpLBUEFQAVAgAVABUQFQIAPCkGGSYAUAAAACYAHBUMGTUABhAZGAdub2RlX2lkFQwWUBZ+FqIBJrIEJuIDKSwVBBUAFQIA"
    "FQAVEBUCADwWgAMZBhkmAFAAAAAmABwVDBk1AAYQGRgGbWV0cmljFQwWUBbWAhamAibABiaEBSksFQQVABUCABUAFRAVAgA8"
    "FpwHGQYZJgxEAAAAJgAcFQQZJQYKGRgHdmFsdWUuaRUMFlAW4gEWhAEmqgdJHBUAFQoVAgA8KQYZJj4SAAAAJgAcFQIZNQAG"
    "EBkYB3ZhbHVlLnMVDBZQFmQWiAEm5AgmrggpLBUEFQAVAgAVABUQFQIAPCkGGSY+EgAAACYAHBUKGSUGEhkYB3ZhbHVlLmYV"
    "DBZQFt4DFogCJrYJSRwVABUSFQIAPCkGGSYcNAAAABbKEhZQJggWtgsAKCBwYXJxdWV0LWNwcC1hcnJvdyB2ZXJzaW9uIDI2"
    "LjAuMRmMHAAAHAAAHAAAHAAAHAAAHAAAHAAAHAAAAJgCAABQQVIx"
)


def _old_telemetry_table() -> pa.Table:
    table = make_table("telemetry", n=40)
    node = pa.array([("gw-9" if i % 5 == 0 else D) for i in range(40)], pa.string())
    return table.set_column(table.schema.get_field_index("node_id"), table.schema.field("node_id"), node)


def _parquet(columns: dict[str, pa.Array]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out, compression="none")  # as the writer does
    return out.getvalue()


def _unframed(payload: bytes) -> bytes:
    """The Parquet file inside a format-2 payload."""
    return zstandard.ZstdDecompressor().decompress(payload)


def _stored(table: pa.Table, spec: StreamSpec = STREAMS["telemetry"]) -> dict[str, pa.Array]:
    """The stored columns the encoder writes for ``table``, to tamper with one by one."""
    stored = pq.read_table(pa.BufferReader(_unframed(encode_table(table, spec, D))))
    return {name: stored.column(name).combine_chunks() for name in stored.column_names}


# ----------------------------------------------------------------------------- compatibility
def test_payload_written_before_decodes_bit_for_bit():
    got = decode_table(OLD_TELEMETRY_PAYLOAD, get_stream("telemetry"), T, D)
    assert_identical(got, _old_telemetry_table())


def test_format_1_batch_still_reads(keyring, ident):
    # queued by an agent before its upgrade: header and manifest say 1, payload compressed per page
    data = forge(ident, keyring, table=_old_telemetry_table(), payload=OLD_TELEMETRY_PAYLOAD, version=1)
    decoded = read(data, keyring, ident)
    assert decoded.manifest.format_version == 1
    assert_identical(decoded.table, _old_telemetry_table())


def _encoded_sha256(stream: str) -> str:
    return hashlib.sha256(encode_table(make_table(stream, n=40), get_stream(stream), D)).hexdigest()


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_encoder_output_is_unchanged(stream):
    installed = (pa.__version__, zstandard.__version__)
    if installed != (PINNED_PYARROW, PINNED_ZSTANDARD):
        here = Path(__file__).relative_to(Path(__file__).parents[2])
        hashes = {s: _encoded_sha256(s) for s in sorted(STREAMS)}
        pytest.fail(
            f"the pinned versions changed: the pinned bytes are pyarrow {PINNED_PYARROW}'s and zstandard "
            f"{PINNED_ZSTANDARD}'s, this environment has pyarrow {installed[0]} and zstandard {installed[1]}. "
            f"If requirements.lock moved them on purpose, update the pins in {here}: "
            f"PINNED_PYARROW = {installed[0]!r}, PINNED_ZSTANDARD = {installed[1]!r}, ENCODED_SHA256 = {hashes!r}; "
            "the tests of old payloads in this module must still pass: objects written before must decode.",
            pytrace=False,
        )
    assert _encoded_sha256(stream) == ENCODED_SHA256[stream]


def test_format_2_payload_is_one_zstd_frame_around_the_format_1_columns():
    payload = encode_table(_old_telemetry_table(), get_stream("telemetry"), D)
    assert payload[:4] == b"\x28\xb5\x2f\xfd" and len(payload) < len(OLD_TELEMETRY_PAYLOAD)
    inner = pq.ParquetFile(pa.BufferReader(_unframed(payload)))
    assert {inner.metadata.row_group(0).column(i).compression for i in range(inner.metadata.num_columns)} == {
        "UNCOMPRESSED"
    }
    assert_identical(inner.read(), pq.read_table(pa.BufferReader(OLD_TELEMETRY_PAYLOAD)))


@pytest.mark.parametrize(
    "frame, problem",
    [
        (zstandard.ZstdCompressor(write_content_size=False).compress(b"PAR1" * 10), "does not declare"),
        (zstandard.ZstdCompressor().compress(b"PAR1" * 10)[:-3], "does not decompress"),
        (zstandard.ZstdCompressor().compress(b"PAR1" * 10) + b"tail", "does not decompress"),
        (b"\x28\xb5\x2f\xfd" + b"\xff" * 3, "header is unreadable"),
        (zstandard.ZstdCompressor().compress(b"PAR1" * 10), "not readable Parquet"),
    ],
)
def test_bad_zstd_frames_are_decode_errors(frame, problem):
    with pytest.raises(PayloadDecodeError, match=problem):
        decode_table(frame, get_stream("telemetry"), T, D)


def test_a_frame_announcing_more_than_the_limit_is_refused_before_decompressing(monkeypatch):
    monkeypatch.setattr(enc, "MAX_PAYLOAD_BYTES", 1000)
    frame = zstandard.ZstdCompressor().compress(b"\0" * 1001)
    with pytest.raises(PayloadDecodeError, match="above the 1000-byte limit"):
        decode_table(frame, get_stream("telemetry"), T, D)


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_round_trip_keeps_plain_string_constants_and_exact_schema(stream):
    table = make_table(stream, n=40)
    got = decode_table(encode_table(table, get_stream(stream), D), get_stream(stream), T, D)
    assert_identical(got, table)
    for name in ("tenant_id", "device_id", "stream", "node_id"):
        assert got.column(name).type == pa.string()  # not dictionary: the lakehouse schema is string


def test_empty_payload_decodes_to_an_empty_table():
    spec = get_stream("telemetry")
    empty = spec.schema.empty_table()
    assert_identical(decode_table(encode_table(empty, spec, D), spec, T, D), empty)


# ----------------------------------------------------------------------------- malformed payloads
def test_null_in_an_envelope_column_is_a_decode_error():
    cols = _stored(make_table("telemetry"))
    cols["ts.d"] = pa.array([None] + cols["ts.d"].to_pylist()[1:], pa.int64())
    with pytest.raises(PayloadDecodeError, match=r"envelope columns are malformed .*'ts\.d' has nulls"):
        decode_table(_parquet(cols), get_stream("telemetry"), T, D)


def test_envelope_column_of_another_type_is_a_decode_error():
    cols = _stored(make_table("telemetry"))
    cols["seq"] = pa.array(["x"] * len(cols["seq"]))
    with pytest.raises(PayloadDecodeError, match="payload column 'seq' is BYTE_ARRAY, not INT64"):
        decode_table(_parquet(cols), get_stream("telemetry"), T, D)


def test_scale_outside_range_is_a_decode_error():
    cols = _stored(make_table("telemetry"))
    cols["value.s"] = pa.array([12] * len(cols["value.s"]), pa.int8())
    with pytest.raises(PayloadDecodeError, match=r"column 'value' has a decimal scale outside 0\.\.9"):
        decode_table(_parquet(cols), get_stream("telemetry"), T, D)


@pytest.mark.parametrize("column", ["value.i", "value.f", "metric"])
def test_payload_column_of_another_type_is_a_decode_error(column):
    cols = _stored(make_table("telemetry"))
    cols[column] = pa.array([[1]] * len(cols[column]))  # a list type no column can be cast from
    with pytest.raises(PayloadDecodeError, match=f"payload column '{column}.list.element' is nested"):
        decode_table(_parquet(cols), get_stream("telemetry"), T, D)


def test_missing_and_unexpected_columns_are_named():
    cols = _stored(make_table("telemetry"))
    lacking = {k: v for k, v in cols.items() if k != "value.f"}
    with pytest.raises(PayloadDecodeError, match=r"payload lacks columns \['value\.f'\]"):
        decode_table(_parquet(lacking), get_stream("telemetry"), T, D)
    with pytest.raises(PayloadDecodeError, match=r"unexpected columns \['junk'\]"):
        decode_table(_parquet({**cols, "junk": cols["seq"]}), get_stream("telemetry"), T, D)


def test_malformed_payload_is_corrupt_payload_through_read_batch(keyring, ident):
    cols = _stored(make_table("telemetry"))
    cols["hlc.lo"] = pa.array([None] * len(cols["hlc.lo"]), pa.int64())
    data = forge(ident, keyring, payload=_parquet(cols))
    assert reason_of(data, keyring, ident) == "corrupt_payload"


# ----------------------------------------------------------------------------- helpers and caches
def test_numpy_view_honours_offsets_chunks_and_nulls():
    arr = pa.array([7, None, 3, 4, None, 6], pa.int64())
    values, valid = enc._numpy(pa.chunked_array([arr.slice(1, 4)]), pa.int64())
    assert valid.tolist() == [False, True, True, False]
    assert values[valid].tolist() == [3, 4]
    values, valid = enc._numpy(pa.chunked_array([arr.slice(2, 2), arr.slice(5)]), pa.int64())
    assert (values.tolist(), valid) == ([3, 4, 6], None)
    values, valid = enc._numpy(pa.chunked_array([], pa.int8()), pa.int8())
    assert (values.dtype, values.size, valid) == (np.int8, 0, None)


def test_caches_follow_a_replaced_stream_spec(monkeypatch, keyring, ident):
    """The per-spec caches are keyed by the spec object: a changed schema is seen at once."""
    before = write(make_table("telemetry"), keyring, ident)
    old = STREAMS["telemetry"]
    new = StreamSpec(old.name, pa.schema(list(old.payload) + [pa.field("unit", pa.string())]), 20, None)
    monkeypatch.setitem(STREAMS, "telemetry", new)
    assert reason_of(before.data, keyring, ident) == "unknown_schema"  # written under the old schema
    table = make_table("telemetry")
    after = write(table, keyring, ident)
    assert after.manifest.schema_fingerprint == new.fingerprint != old.fingerprint
    assert_identical(read(after.data, keyring, ident).table, table)
