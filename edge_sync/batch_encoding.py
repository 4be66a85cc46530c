"""Lossless compact Parquet encoding of one device's rows of one stream (batch payload).

:func:`encode_table` turns a stream table (envelope + payload, one device, seqs strictly
ascending) into small Parquet bytes; :func:`decode_table` restores exactly the same table
(column order, types, nulls, row order). Every byte of a payload crosses a device's link, so
the encoding drops what the manifest or the schema already says and picks each column's
layout for size (the measurements behind each choice: docs/decisions.md, "Batch payload
encoding"; current figures: bench/bench_batch_size.py):

* ``tenant_id``, ``device_id``, ``stream`` are constant in a batch: not stored (manifest).
  ``node_id`` is stored only when some row differs from the device id.
* Rows are sorted by the stream's grouping columns (telemetry: ``metric``) with seq as the
  tie-break, so each metric's series is contiguous and compresses well; the reader restores
  seq order (seqs are strictly ascending in every batch, so no permutation is stored).
* ``seq``: DELTA_BINARY_PACKED (constant stride within a metric: almost free).
* ``ts`` is stored as ``ts.d``, the difference to the previous row in *seq* order, PLAIN +
  zstd (mostly zeros and one period value), which is smaller than delta bit-packing or
  storing the sorted ``ts``.
* ``hlc`` is stored as ``hlc.lo`` = hlc - (ts << 16) (wrapping int64 arithmetic, so always
  exact): dictionary-encoded when it has few distinct values, else delta-packed.
* float64 payload columns become scaled integers per group when that round-trips bitwise:
  ``<col>.i`` (int64, DELTA_BINARY_PACKED), ``<col>.s`` (decimal scale, dictionary/RLE:
  constant per metric) and ``<col>.f`` (the raw float, BYTE_STREAM_SPLIT) for rows that do
  not round-trip (NaN, inf, -0.0, full-precision values). The check runs the reader's
  exact arithmetic, so decoding is bit-exact; sensor readings shrink to a fraction of their
  raw float bytes.
* int64 payload columns: DELTA_BINARY_PACKED; strings: dictionary.
* The Parquet file is written uncompressed and the whole file is one zstd frame, level 19
  (cheap at a batch's size), with its size in the frame header: one frame is smaller and
  faster to read than zstd inside each Parquet page, where every page pays for its own zstd
  context on both sides. Format 1 payloads (per-page zstd, bare Parquet bytes ``PAR1``),
  which batch version 1 carries, still decode; the reader tells the two apart by their magic bytes.
* No statistics, no page index, no stored Arrow schema (the stream schema is known from the
  manifest's fingerprint).

Decoding does no per-row Python work: constant columns are C++ repeats, numeric columns are
numpy views of the Arrow buffers, and what depends only on the stream is worked out once per spec.
:func:`decode_tables` decodes many payloads of one stream at once (the central ingest): one
pass over their concatenated columns instead of one per payload, and string columns kept
dictionary-encoded, as Parquet stores them (no per-row strings are built, and a Parquet
writer writes them again without hashing every value).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from edge_sync.parquet_structure import Footer, ParquetStructureError, check_compressed_pages, read_footer
from edge_sync.streams import StreamSpec

ZSTD_LEVEL = 19
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# The most a payload may decompress to: far above any real batch (a device-hour of telemetry),
# low enough that a hostile frame cannot exhaust the ingest's memory.
MAX_PAYLOAD_BYTES = 256 * 1024 * 1024
MAX_SCALE = 9
_POW10 = np.array([10.0**d for d in range(MAX_SCALE + 1)], dtype=np.float64)  # exact for d <= 22
_MAX_EXACT_INT = float(2**53)
_DICT_MAX_DISTINCT = 256

_DROPPED = ("tenant_id", "device_id", "stream")


# What a payload's Parquet footer may declare (checked before any column is decoded, see
# ``_check_footer``): dictionary and RLE runs let a few bytes stand for any number of values, so
# the decoded size is bounded by the rows, not by the bytes.
MAX_DECODED_BYTES = MAX_PAYLOAD_BYTES  # rows x 8 bytes per stream column
ENCODINGS = frozenset(
    {
        "PLAIN",
        "RLE",
        "BIT_PACKED",
        "PLAIN_DICTIONARY",
        "RLE_DICTIONARY",
        "DELTA_BINARY_PACKED",
        "BYTE_STREAM_SPLIT",
    }
)
COMPRESSIONS = frozenset({"UNCOMPRESSED", "ZSTD"})  # format 2 payloads, format 1 payloads
# A fixed-width column chunk holds at most this many bytes per row (value, levels, dictionary
# indices) plus one page's worth of slack for headers and a dictionary.
_BYTES_PER_ROW = 16
_CHUNK_SLACK = 64 * 1024
_PHYSICAL = {pa.int64(): "INT64", pa.int8(): "INT32", pa.float64(): "DOUBLE", pa.string(): "BYTE_ARRAY"}


class PayloadDecodeError(ValueError):
    """The payload is not a readable Parquet file with the columns the writer writes."""


class RowCountMismatch(PayloadDecodeError):
    """The payload's footer declares another number of rows than the caller expects."""


# numpy.ma costs resident memory once imported, and both ``np.unique`` and ``pa.array(<ndarray>)``
# (its masked-array check) import it; the encoder avoids both, so an agent draining a backlog
# never pays for it (docs/decisions.md, "Agent memory").
_NUMPY_TYPES = {pa.int64(): np.int64, pa.int8(): np.int8, pa.float64(): np.float64}


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values: ``np.unique`` without its numpy.ma import."""
    if values.size == 0:
        return values
    s = np.sort(values)
    return s[np.concatenate(([True], s[1:] != s[:-1]))]


def _arrow(values: np.ndarray, type_: pa.DataType, mask: np.ndarray | None = None) -> pa.Array:
    """``pa.array(values, type_, mask=mask)`` for a 1-D numeric array, without the numpy.ma import."""
    values = np.ascontiguousarray(values, dtype=_NUMPY_TYPES[type_])
    nulls = 0 if mask is None else int(np.count_nonzero(mask))
    validity = pa.py_buffer(np.packbits(~mask, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(type_, len(values), [validity, pa.py_buffer(values)], null_count=nulls)


def _group_ids(table: pa.Table, columns: tuple[str, ...]) -> np.ndarray:
    """A small integer per distinct combination of ``columns`` (all zeros if none)."""
    if not columns or table.num_rows == 0:
        return np.zeros(table.num_rows, dtype=np.int64)
    if len(columns) == 1:  # the common case (telemetry's metric): vectorised
        codes = pc.dictionary_encode(table.column(columns[0])).combine_chunks().indices
        return np.asarray(codes.cast(pa.int64()).fill_null(-1).to_numpy(), dtype=np.int64)
    keys = list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))
    ids: dict[tuple, int] = {}
    return np.fromiter((ids.setdefault(k, len(ids)) for k in keys), dtype=np.int64, count=len(keys))


def _scale_floats(values: pa.ChunkedArray, groups: np.ndarray) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Split a float64 column into (scaled ints, scale, raw floats); see module docstring."""
    n = len(values)
    valid = ~np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    v = np.asarray(values.fill_null(0.0).to_numpy(), dtype=np.float64)
    bits = v.view(np.int64)
    # ok[d, i]: row i decodes bit-exactly at scale d, using the reader's arithmetic.
    ok = np.zeros((MAX_SCALE + 1, n), dtype=bool)
    ints = np.zeros((MAX_SCALE + 1, n), dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        for d in range(MAX_SCALE + 1):
            k = np.round(v * _POW10[d])
            fits = np.isfinite(k) & (np.abs(k) < _MAX_EXACT_INT)
            kk = np.where(fits, k, 0.0).astype(np.int64)
            back = kk.astype(np.float64) / _POW10[d]
            ok[d] = fits & valid & (back.view(np.int64) == bits)
            ints[d] = kk
    scale = np.full(n, -1, dtype=np.int64)
    for g in _distinct(groups):
        rows = groups == g
        counts = ok[:, rows].sum(axis=1)
        if counts.max() == 0:
            continue
        d = int(np.argmax(counts))  # first scale that reaches the best count: the smallest
        scale[rows & ok[d]] = d
    scaled = scale >= 0
    idx = np.where(scaled, scale, 0)
    i_col = _arrow(ints[idx, np.arange(n)], pa.int64(), mask=~scaled)
    s_col = _arrow(scale.astype(np.int8), pa.int8(), mask=~scaled)
    f_col = _arrow(v, pa.float64(), mask=scaled | ~valid)
    return i_col, s_col, f_col


def encode_table(table: pa.Table, spec: StreamSpec, device_id: str) -> bytes:
    """Compact Parquet bytes for ``table`` (already validated: ``spec.schema``, seqs ascending)."""
    n = table.num_rows
    seq = table.column("seq").to_numpy()
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    hlc = table.column("hlc").to_numpy()
    ts_diff = np.diff(ts, prepend=np.int64(0)) if n else ts  # wrapping int64: exact inverse is cumsum
    with np.errstate(over="ignore"):
        hlc_lo = hlc - np.left_shift(ts, 16)

    group_cols = spec.group_by
    groups = _group_ids(table, group_cols)
    sort_keys = [(c, "ascending") for c in group_cols] + [("seq", "ascending")]
    order = pc.sort_indices(table, sort_keys=sort_keys).to_numpy() if n else seq

    columns: dict[str, pa.Array] = {"seq": _arrow(seq[order], pa.int64())}
    dictionary: list[str] = []
    encoding: dict[str, str] = {"seq": "DELTA_BINARY_PACKED", "ts.d": "PLAIN"}
    columns["ts.d"] = _arrow(ts_diff[order], pa.int64())
    columns["hlc.lo"] = _arrow(hlc_lo[order], pa.int64())
    if len(_distinct(hlc_lo)) <= _DICT_MAX_DISTINCT:
        dictionary.append("hlc.lo")
    else:
        encoding["hlc.lo"] = "DELTA_BINARY_PACKED"
    node = table.column("node_id")
    if n and not pc.all(pc.equal(node, device_id)).as_py():
        columns["node_id"] = node.take(order)
        dictionary.append("node_id")

    take = _arrow(order, pa.int64())
    for field in spec.payload:
        col = table.column(field.name)
        if pa.types.is_float64(field.type):
            i_col, s_col, f_col = _scale_floats(col, groups)
            columns[f"{field.name}.i"] = i_col.take(take)
            columns[f"{field.name}.s"] = s_col.take(take)
            columns[f"{field.name}.f"] = f_col.take(take)
            encoding[f"{field.name}.i"] = "DELTA_BINARY_PACKED"
            encoding[f"{field.name}.f"] = "BYTE_STREAM_SPLIT"
            dictionary.append(f"{field.name}.s")
        elif pa.types.is_int64(field.type):
            columns[field.name] = col.take(take)
            encoding[field.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_string(field.type):
            columns[field.name] = col.take(take)
            dictionary.append(field.name)
        else:  # any other type: stored as is
            columns[field.name] = col.take(take)

    out = io.BytesIO()
    pq.write_table(
        pa.table(columns),
        out,
        compression="none",  # the whole file is compressed below (module docstring)
        use_dictionary=dictionary,
        column_encoding=encoding,
        write_statistics=False,
        write_page_index=False,
        store_schema=False,
    )
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(out.getvalue())


def _parquet_bytes(data: bytes, unzstd: zstandard.ZstdDecompressor) -> bytes:
    """The Parquet file in a payload: the zstd frame's content, or the payload itself (format 1)."""
    if data[:4] != _ZSTD_MAGIC:
        return data
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise PayloadDecodeError(f"payload's zstd frame header is unreadable ({exc})") from None
    if size < 0:
        raise PayloadDecodeError("payload's zstd frame does not declare its content size")
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadDecodeError(
            f"payload's zstd frame would decompress to {size} bytes, above the {MAX_PAYLOAD_BYTES}-byte limit"
        )
    try:
        return unzstd.decompress(data, max_output_size=size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise PayloadDecodeError(f"payload's zstd frame does not decompress ({exc})") from None


@dataclass(frozen=True)
class _Layout:
    """What decoding needs to know about one stream, worked out once per :class:`StreamSpec`."""

    schema: pa.Schema
    dictionary_schema: pa.Schema  # ``schema`` with every string column dictionary-encoded
    needed: frozenset[str]  # stored columns the writer always writes
    allowed: frozenset[str]  # ... plus the optional ones
    floats: frozenset[str]  # payload columns stored as scaled ints (<col>.i/.s/.f)
    strings: tuple[str, ...]  # payload columns of strings (read as Parquet's dictionary codes)
    physical: dict[str, str]  # stored column -> the Parquet physical type the writer gives it


# Keyed by id(spec) and holding the spec, so a replaced spec (tests, a reload) is never served a
# stale layout; ``spec.schema`` builds a new schema on every access, too slow to repeat per payload.
_LAYOUTS: dict[int, tuple[StreamSpec, _Layout]] = {}
_TS_TYPE = pa.timestamp("ms", tz="UTC")
_DICTIONARY_STRING = pa.dictionary(pa.int32(), pa.string())


def _layout(spec: StreamSpec) -> _Layout:
    hit = _LAYOUTS.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    floats = frozenset(f.name for f in spec.payload if pa.types.is_float64(f.type))
    needed = {"seq", "ts.d", "hlc.lo"}
    for field in spec.payload:
        needed |= {f"{field.name}.{s}" for s in "isf"} if field.name in floats else {field.name}
    schema = spec.schema
    coded = pa.schema(
        [
            pa.field(f.name, _DICTIONARY_STRING, f.nullable) if pa.types.is_string(f.type) else f
            for f in schema
        ]
    )
    strings = tuple(f.name for f in spec.payload if pa.types.is_string(f.type))
    physical = {"seq": "INT64", "ts.d": "INT64", "hlc.lo": "INT64", "node_id": "BYTE_ARRAY"}
    for field in spec.payload:
        if field.name in floats:
            physical |= {f"{field.name}.i": "INT64", f"{field.name}.s": "INT32", f"{field.name}.f": "DOUBLE"}
        elif field.type in _PHYSICAL:
            physical[field.name] = _PHYSICAL[field.type]
    layout = _Layout(
        schema, coded, frozenset(needed), frozenset(needed | {"node_id"}), floats, strings, physical
    )
    _LAYOUTS[id(spec)] = (spec, layout)  # a benign race between decode threads: same value
    return layout


def _numpy(column: pa.ChunkedArray, type_: pa.DataType) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, validity or None if no nulls) of a numeric column, zero-copy from the Arrow buffers.

    Values under null slots are unspecified; callers mask them. ``ArrowException`` if the column
    cannot be cast to ``type_`` (a payload from a broken writer).
    """
    arr = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if arr.type != type_:
        arr = arr.cast(type_)
    n, offset = len(arr), arr.offset
    if n == 0:
        return np.empty(0, dtype=_NUMPY_TYPES[type_]), None
    validity, data = arr.buffers()[:2]
    values = np.frombuffer(data, dtype=_NUMPY_TYPES[type_], count=offset + n)[offset:]
    if not arr.null_count:
        return values, None
    bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), count=offset + n, bitorder="little")
    return values, bits[offset:].view(bool)


def dictionary_schema(spec: StreamSpec) -> pa.Schema:
    """``spec.schema`` with every string column dictionary-encoded (``decode_tables``' output)."""
    return _layout(spec).dictionary_schema


def _constant(values: Sequence[str], counts: np.ndarray) -> pa.DictionaryArray:
    """``values[k]`` repeated ``counts[k]`` times, as a dictionary array of the distinct values."""
    distinct = sorted(set(values))
    code = {v: i for i, v in enumerate(distinct)}
    codes = np.fromiter((code[v] for v in values), dtype=np.int32, count=len(values))
    indices = np.repeat(codes, counts)
    return pa.DictionaryArray.from_arrays(
        pa.Array.from_buffers(pa.int32(), len(indices), [None, pa.py_buffer(indices)]),
        pa.array(distinct, pa.string()),
    )


def decode_tables(
    payloads: Sequence[bytes],
    spec: StreamSpec,
    tenant_ids: Sequence[str],
    device_ids: Sequence[str],
    row_counts: Sequence[int] | None = None,
) -> tuple[pa.Table, np.ndarray]:
    """Many payloads of stream ``spec`` decoded together: (rows, row count per payload).

    The rows are each payload's table (what :func:`encode_table` was given, in seq order), one
    payload after the other, with string columns dictionary-encoded. ``PayloadDecodeError`` if
    any payload is bad, without saying which: decode a single payload to find out;
    :class:`RowCountMismatch` if a footer declares other rows than ``row_counts`` (when given).
    """
    layout = _layout(spec)
    stored_tables, node_ids = [], []
    unzstd = zstandard.ZstdDecompressor()  # one per call: not safe to share between threads
    for k, data in enumerate(payloads):
        expected = None if row_counts is None else row_counts[k]
        t = _read_stored(_parquet_bytes(data, unzstd), layout, expected)
        for name in spec.added:  # an older agent's payload: the columns appended since read as null
            if name not in t.column_names:
                t = t.append_column(name, pa.nulls(t.num_rows, _DICTIONARY_STRING))
        names = set(t.column_names)
        missing = layout.needed - names
        if missing:
            raise PayloadDecodeError(f"payload lacks columns {sorted(missing)} for stream {spec.name!r}")
        extra = names - layout.allowed
        if extra:
            raise PayloadDecodeError(
                f"payload has unexpected columns {sorted(extra)} for stream {spec.name!r}"
            )
        if "node_id" in names and t.schema.field("node_id").type not in (pa.string(), _DICTIONARY_STRING):
            raise PayloadDecodeError(
                f"payload column 'node_id' is {t.schema.field('node_id').type}, not string"
            )
        node_ids.append(t.column("node_id") if "node_id" in names else None)
        stored_tables.append(t.select(sorted(layout.needed)))
    counts = np.fromiter((t.num_rows for t in stored_tables), dtype=np.int64, count=len(stored_tables))
    try:
        stored = pa.concat_tables(stored_tables).unify_dictionaries().combine_chunks()
        seq_sorted = _envelope_int64(stored, "seq")
        order = _seq_order(seq_sorted, counts)
        seq = seq_sorted[order]
        steps = _envelope_int64(stored, "ts.d")[order]
        with np.errstate(over="ignore"):
            running = np.cumsum(steps)  # wrapping int64, like the writer's differences
            starts = np.cumsum(counts) - counts
            before = np.zeros(len(payloads), dtype=np.int64)
            later = starts > 0
            before[later] = running[starts[later] - 1]
            ts = running - np.repeat(before, counts)
            hlc = _envelope_int64(stored, "hlc.lo")[order] + np.left_shift(ts, 16)
    except (pa.ArrowException, ValueError) as exc:
        raise PayloadDecodeError(f"envelope columns are malformed ({exc})") from None

    take = _arrow(order, pa.int64())
    device = _constant(device_ids, counts)
    arrays: dict[str, pa.Array] = {
        "tenant_id": _constant(tenant_ids, counts),
        "device_id": device,
        "stream": _constant([spec.name] * len(payloads), counts),
        "seq": _arrow(seq, pa.int64()),
        "hlc": _arrow(hlc, pa.int64()),
        "node_id": device
        if all(n is None for n in node_ids)
        else _node_ids(node_ids, device_ids, counts, take),
        "ts": _arrow(ts, pa.int64()).view(_TS_TYPE),
    }
    schema = layout.dictionary_schema
    try:
        for field in spec.payload:
            if field.name in layout.floats:
                arrays[field.name] = _unscale(stored, field.name, order)
            else:
                column = stored.column(field.name)
                arrays[field.name] = (
                    column.chunk(0) if column.num_chunks else pa.array([], column.type)
                ).take(take)
        return pa.table([arrays[name] for name in schema.names], schema=schema), counts
    except PayloadDecodeError:
        raise
    except (pa.ArrowException, TypeError, ValueError, IndexError) as exc:
        raise PayloadDecodeError(
            f"payload columns do not match stream {spec.name!r} schema ({exc})"
        ) from None


def _seq_order(seq: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The permutation that puts each payload's rows (``counts[k]`` of them, one payload after the
    other) in seq order, payloads staying in place.

    One stable sort of ``payload << 40 | seq - first seq of the payload`` when every payload
    spans less than 2**40 seqs (always, for real batches): a quarter of ``np.lexsort``'s time.
    """
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    if seq.size == 0:
        return owner
    nonempty = counts > 0
    starts = (np.cumsum(counts) - counts)[nonempty]
    low = np.repeat(np.minimum.reduceat(seq, starts), counts[nonempty])
    high = np.repeat(np.maximum.reduceat(seq, starts), counts[nonempty])
    if len(counts) < 2**22 and int((high - low).max()) < 2**40 and int(low.min()) >= 0:
        return np.argsort((owner << 40) | (seq - low), kind="stable")
    return np.lexsort((seq, owner))


def _read_stored(data: bytes, layout: _Layout, expected_rows: int | None) -> pa.Table:
    """The payload's stored columns, its string columns as dictionary arrays (the codes Parquet stores).

    The footer and page headers are checked first, read from the bytes
    (:mod:`edge_sync.parquet_structure`: pyarrow's metadata objects can abort the process on
    a hostile footer), so nothing is decoded that could expand beyond the bounds.
    ParquetFile.read, single-threaded: read_table goes through the dataset layer, and a
    payload is one small row group, where thread hand-offs cost more than they save. No
    pre-buffering: the payload is in memory already, so buffering it again only costs time.
    """
    try:
        footer = read_footer(data)
        present = set(_check_footer(footer, layout, expected_rows))
        check_compressed_pages(data, footer)
        # node_id too: a long value repeated by RLE must not become one string per row
        dictionary = [c for c in (*layout.strings, "node_id") if c in present]
        try:
            reader = pq.ParquetFile(pa.BufferReader(data), read_dictionary=dictionary, pre_buffer=False)
        except KeyError:  # a string column not a plain column: the checks after say which
            reader = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
        return reader.read(use_threads=False)
    except PayloadDecodeError:
        raise
    except (ParquetStructureError, pa.ArrowException, OSError, ValueError, KeyError, IndexError) as exc:
        raise PayloadDecodeError(f"payload is not readable Parquet ({exc})") from None


def _check_footer(footer: Footer, layout: _Layout, expected_rows: int | None) -> list[str]:
    """Refuse a footer that declares more than the writer ever writes; returns the stored column names.

    Rows (as expected, and few enough that the decoded table stays under
    ``MAX_DECODED_BYTES``), flat columns, their types, encodings, compression, and each
    column chunk's uncompressed size per row. Which columns are present is checked after
    reading (``decode_tables``), where the messages name them.
    """
    rows = footer.num_rows
    if expected_rows is not None and rows != expected_rows:
        raise RowCountMismatch(f"row_count {expected_rows} but the payload's footer declares {rows} rows")
    if rows < 0 or rows * 8 * len(layout.schema) > MAX_DECODED_BYTES:
        raise PayloadDecodeError(
            f"payload declares {rows} rows, which would decode to more than {MAX_DECODED_BYTES} bytes"
        )
    for path in footer.columns:  # a repeated column could hold any number of values per row
        if path in footer.repeated or ("." in path and path not in layout.allowed):
            raise PayloadDecodeError(
                f"payload column {path!r} is nested or repeated; the writer writes flat columns"
            )
    in_groups, total = 0, 0
    for group in footer.row_groups:
        in_groups += group.num_rows
        for chunk in group.columns:
            name = chunk.path
            want = layout.physical.get(name, chunk.physical_type)
            if chunk.physical_type != want:
                raise PayloadDecodeError(f"payload column {name!r} is {chunk.physical_type}, not {want}")
            bad = set(chunk.encodings) - ENCODINGS
            if bad or chunk.compression not in COMPRESSIONS:
                raise PayloadDecodeError(
                    f"payload column {name!r} uses {sorted(bad) or chunk.compression}, which the writer never does"
                )
            if chunk.num_values != group.num_rows:
                raise PayloadDecodeError(
                    f"payload column {name!r} declares {chunk.num_values} values in a {group.num_rows}-row group"
                )
            size = chunk.total_uncompressed_size
            total += size
            if size < 0 or (
                chunk.physical_type != "BYTE_ARRAY" and size > _CHUNK_SLACK + _BYTES_PER_ROW * group.num_rows
            ):
                raise PayloadDecodeError(
                    f"payload column {name!r} declares {size} uncompressed bytes for {group.num_rows} rows"
                )
    if in_groups != rows or total > MAX_PAYLOAD_BYTES:
        raise PayloadDecodeError(
            f"payload footer declares {rows} rows but {in_groups} in its row groups, "
            f"{total} uncompressed bytes (limit {MAX_PAYLOAD_BYTES})"
        )
    return footer.columns


def _node_ids(
    stored: Sequence[pa.ChunkedArray | None], device_ids: Sequence[str], counts: np.ndarray, take: pa.Array
) -> pa.DictionaryArray:
    """The node_id column when some payloads store one (the others' rows are the device's own)."""
    parts = [
        _constant([d], np.array([n])) if s is None else s.combine_chunks()
        for s, d, n in zip(stored, device_ids, counts, strict=True)
    ]
    parts = [p if pa.types.is_dictionary(p.type) else p.dictionary_encode() for p in parts]
    return pa.concat_arrays([p.cast(_DICTIONARY_STRING) for p in parts]).take(take)


def _envelope_int64(stored: pa.Table, name: str) -> np.ndarray:
    values, valid = _numpy(stored.column(name), pa.int64())
    if valid is not None:
        raise ValueError(f"column {name!r} has nulls")
    return values


def decode_table(
    data: bytes, spec: StreamSpec, tenant_id: str, device_id: str, row_count: int | None = None
) -> pa.Table:
    """The exact table :func:`encode_table` was given, in seq order with ``spec.schema``."""
    table, _ = decode_tables(
        [data], spec, [tenant_id], [device_id], None if row_count is None else [row_count]
    )
    return table.cast(_layout(spec).schema)


def _unscale(stored: pa.Table, name: str, order: np.ndarray | None) -> pa.Array:
    """The float64 column ``name`` from its scaled ints, scales and raw floats (module docstring)."""
    i, i_valid = _numpy(stored.column(f"{name}.i"), pa.int64())
    s, scaled = _numpy(stored.column(f"{name}.s"), pa.int8())
    f, f_valid = _numpy(stored.column(f"{name}.f"), pa.float64())
    # Null slots hold unspecified values: zero them where they could be read (as fill_null did).
    if scaled is not None:
        s = np.where(scaled, s, 0)
    if s.size and (s.min() < 0 or s.max() > MAX_SCALE):
        raise PayloadDecodeError(f"column {name!r} has a decimal scale outside 0..{MAX_SCALE}")
    if i_valid is not None:
        i = np.where(i_valid, i, 0)
    if f_valid is not None:
        f = np.where(f_valid, f, 0.0)
    values = i.astype(np.float64) / _POW10[s]
    null = None
    if scaled is not None:
        values = np.where(scaled, values, f)
        null = None if f_valid is None else ~scaled & ~f_valid
    if order is not None:
        values = values[order]
        null = None if null is None else null[order]
    return _arrow(values, pa.float64(), mask=null)
