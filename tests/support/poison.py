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
