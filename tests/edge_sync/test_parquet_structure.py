"""Format-1 payloads (zstd inside each Parquet page): read as before, and a page header that
claims more than its footer entry is refused before Arrow sizes a buffer from it."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.transport.TTransport import TMemoryBuffer

from edge_sync import parquet_structure
from edge_sync.batch_encoding import PayloadDecodeError, decode_table, encode_table
from edge_sync.parquet_structure import ParquetStructureError, check_compressed_pages, read_footer
from edge_sync.streams import get_stream
from tests.support import poison
from tests.support.batches import D, T, assert_identical, make_table


@pytest.fixture(scope="module")
def telemetry() -> tuple[pa.Table, bytes]:
    table = make_table("telemetry", n=300)
    return table, poison.format1(encode_table(table, get_stream("telemetry"), D))


def test_a_format1_payload_decodes_to_what_was_encoded(telemetry) -> None:
    table, payload = telemetry
    assert payload[:4] == b"PAR1"
    assert pq.read_metadata(pa.BufferReader(payload)).row_group(0).column(0).compression == "ZSTD"
    assert_identical(decode_table(payload, get_stream("telemetry"), T, D, row_count=300), table)


@pytest.mark.parametrize("column", [0, 3])
def test_a_page_claiming_more_than_its_footer_is_refused_before_decoding(telemetry, column) -> None:
    _, payload = telemetry
    lying = poison.lying_page(payload, column=column)
    assert len(lying) == len(payload)
    with pytest.raises(ParquetStructureError, match="declaring 2147483647 uncompressed bytes"):
        check_compressed_pages(lying, read_footer(lying))
    with pytest.raises(PayloadDecodeError, match="not readable Parquet .column"):
        decode_table(lying, get_stream("telemetry"), T, D, row_count=300)


def test_an_unreadable_page_header_is_a_payload_error(telemetry) -> None:
    _, payload = telemetry
    pos = pq.read_metadata(pa.BufferReader(payload)).row_group(0).column(1).data_page_offset
    garbled = payload[:pos] + b"\xff" * 12 + payload[pos + 12 :]
    with pytest.raises(PayloadDecodeError, match="page header at byte"):
        decode_table(garbled, get_stream("telemetry"), T, D, row_count=300)


# Mutations the fuzz found that made pyarrow's metadata objects abort the whole process (an
# uncaught C++ exception) before the footer was read from the bytes: an unknown codec, and a
# size-statistics histogram of the wrong length.
ABORTED_PYARROW = {
    "unknown codec": [("set", 1114, 56)],
    "histogram size mismatch": [("set", 1316, 15), ("flip", 946, 103), ("flip", 869, 175)],
}


@pytest.mark.parametrize("mutations", ABORTED_PYARROW.values(), ids=ABORTED_PYARROW.keys())
def test_footers_that_aborted_pyarrow_are_payload_errors(mutations) -> None:
    payload = zstandard.ZstdCompressor(write_content_size=True).compress(
        poison.mutate(poison.telemetry_parquet(), mutations)
    )
    with pytest.raises(PayloadDecodeError):
        decode_table(payload, get_stream("telemetry"), T, D)


def test_the_pure_python_decoder_reads_the_same_footer(telemetry, monkeypatch) -> None:
    _, payload = telemetry
    fast = read_footer(payload)

    accelerated = parquet_structure._protocol

    def pure_python(raw: bytes) -> tuple[TMemoryBuffer, TCompactProtocol]:
        buffer, protocol = accelerated(raw)
        protocol._fast_decode = None  # as where Thrift's C extension is not built
        return buffer, protocol

    monkeypatch.setattr(parquet_structure, "_protocol", pure_python)
    slow = read_footer(payload)
    assert slow == fast and fast.num_rows == 300 and "seq" in fast.columns
    assert {c.compression for g in fast.row_groups for c in g.columns} == {"ZSTD"}
