"""Poison objects: what anyone who can write a tenant's prefix may drop among its batches.

Each builder takes the object key to use and returns the object's bytes; none of them is a
batch the ingest may accept.
"""

from __future__ import annotations

import functools
import io
import random
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from edge_sync.batch import FORMAT_VERSION, MAGIC
from edge_sync.batch_encoding import encode_table
from edge_sync.parquet_structure import ParquetStructureError, read_footer
from edge_sync.streams import get_stream
from tests.support.batches import D, make_table

# Deep enough to exhaust the interpreter's recursion limit in json.loads, small enough to
# pass every size check (about 40 KB, under the 64 KiB manifest limit).
DEEP = 20_000


def object_key(tenant: str, device: str, first: int = 1, last: int = 10) -> str:
    return f"tenant={tenant}/device={device}/stream=telemetry/{first:020d}-{last:020d}.batch"


def framed(manifest: bytes, rest: bytes = b"", *, announced: int | None = None) -> bytes:
    """A valid header around ``manifest`` (announcing its length, or ``announced``), then ``rest``."""
    length = len(manifest) if announced is None else announced
    return struct.pack(">4sBI", MAGIC, FORMAT_VERSION, length) + manifest + rest


def empty() -> bytes:
    return b""


def random_bytes(seed: int = 7, size: int = 4096) -> bytes:
    return random.Random(seed).randbytes(size)


def deep_array_manifest() -> bytes:
    """A valid header and a manifest of nothing but nested brackets."""
    return framed(b"[" * DEEP + b"]" * DEEP, bytes(80))


def deep_field_manifest(tenant: str, device: str) -> bytes:
    """A plausible manifest (ids, payload length) with one deeply nested field."""
    head = f'{{"tenant_id":"{tenant}","device_id":"{device}","payload_bytes":16,"x":'.encode()
    return framed(head + b"[" * DEEP + b"]" * DEEP + b"}", bytes(16 + 64))


def huge_payload_length(tenant: str, device: str) -> bytes:
    """A manifest declaring a ciphertext of 2**62 bytes in a small object."""
    manifest = f'{{"tenant_id":"{tenant}","device_id":"{device}","payload_bytes":{2**62}}}'.encode()
    return framed(manifest, bytes(80))


def huge_manifest_length() -> bytes:
    """A header announcing a 4 GiB manifest in a small object."""
    return framed(b"{}", bytes(80), announced=2**32 - 1)


# Rows the amplification payload declares: 200 Mi values of one int64 column are 1.6 GB decoded.
AMPLIFIED_ROWS = 200 * 2**20


@functools.cache
def parquet_amplification() -> bytes:
    """A format-2 payload (zstd frame around Parquet) of a few hundred bytes declaring
    ``AMPLIFIED_ROWS`` rows: one dictionary value repeated by RLE runs."""
    chunk = pa.array(np.zeros(2**20, dtype=np.int64))
    table = pa.table({"hlc.lo": pa.chunked_array([chunk] * (AMPLIFIED_ROWS // 2**20))})
    out = io.BytesIO()
    pq.write_table(
        table,
        out,
        compression="none",
        use_dictionary=["hlc.lo"],
        write_statistics=False,
        row_group_size=2**30,
    )
    return zstandard.ZstdCompressor(level=19, write_content_size=True).compress(out.getvalue())


def format1(payload: bytes) -> bytes:
    """A format-2 payload rewritten as format 1: bare Parquet with zstd inside each page,
    one data page per column, a CRC in each page header (the lying-page builder needs it)."""
    stored = pq.read_table(pa.BufferReader(zstandard.ZstdDecompressor().decompress(payload)))
    out = io.BytesIO()
    pq.write_table(stored, out, compression="zstd", use_dictionary=False, write_page_checksum=True)
    return out.getvalue()


def _varint(value: int) -> bytes:
    """``value`` as a Thrift (protobuf-style) unsigned varint."""
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def lying_page(parquet: bytes, column: int = 0, claim: int = 2**31 - 1) -> bytes:
    """``parquet`` (from :func:`format1`) with one data page header claiming ``claim``
    uncompressed bytes, at the same length: the page's CRC (which Arrow does not verify by
    default) is given a shorter value to make room, so every footer offset stays right and
    only the page header lies."""
    data = bytearray(parquet)
    pos = pq.read_metadata(pa.BufferReader(parquet)).row_group(0).column(column).data_page_offset

    def varint_end(i: int) -> int:
        while data[i] & 0x80:
            i += 1
        return i + 1

    # compact protocol: 0x15 = next field, i32 (zigzag varint). Fields 1 (type), 2
    # (uncompressed size), 3 (compressed size), 4 (crc), then 0x1C = next field, a struct.
    assert data[pos] == 0x15 and data[pos + 1] == 0x00 and data[pos + 2] == 0x15
    f2 = pos + 3
    f3 = varint_end(f2)
    f4 = varint_end(f3 + 1)
    end = varint_end(f4 + 1)
    assert data[f3] == data[f4] == 0x15 and data[end] == 0x1C
    size = _varint(2 * claim)
    crc_width = (end - f2) - len(size) - (f4 - f3) - 1
    assert crc_width >= 1, "no room for the claim"
    crc = _varint(0 if crc_width == 1 else 2 ** (7 * (crc_width - 1)))
    data[f2:end] = size + data[f3:f4] + b"\x15" + crc
    return bytes(data)


@functools.cache
def telemetry_parquet() -> bytes:
    """The Parquet file inside the payload of ``make_table("telemetry")``."""
    return zstandard.ZstdDecompressor().decompress(
        encode_table(make_table("telemetry"), get_stream("telemetry"), D)
    )


def mutate(data: bytes, mutations) -> bytes:
    """``data`` with each (kind, position, value) applied: flip, cut, insert or set a byte."""
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


def unknown_codec(parquet: bytes, codec: int = 28) -> bytes:
    """``parquet`` with its first column chunk naming compression codec ``codec``, which no
    Parquet version defines (pyarrow's metadata objects aborted the process on it)."""
    footer_start = len(parquet) - 8 - int.from_bytes(parquet[-8:-4], "little")
    for pos in range(footer_start, len(parquet) - 9):
        if parquet[pos] != 0x15 or parquet[pos + 1] != 0x00:  # an i32 field holding 0 (UNCOMPRESSED)
            continue
        candidate = parquet[: pos + 1] + bytes([2 * codec]) + parquet[pos + 2 :]  # zigzag, one byte
        try:
            footer = read_footer(candidate)
        except ParquetStructureError:
            continue
        if footer.row_groups and footer.row_groups[0].columns[0].compression == f"unknown({codec})":
            return candidate
    raise AssertionError("no codec field found in the footer")
