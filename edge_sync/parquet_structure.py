"""A Parquet payload's footer and page headers, read from the bytes before pyarrow touches them.

Two reasons not to ask pyarrow's metadata objects about a device's payload:

* **They can abort the process.** pyarrow 26's ``FileMetaData.row_group(i).column(j)`` and
  ``.compression`` raise C++ exceptions that nothing catches (``Unsupported compression codec
  value``, ``Definition level histogram size mismatch``): one flipped byte in a footer would
  kill the whole ingest, found by ``tests/edge_sync/test_batch_fuzz.py``. Reading the file
  itself (``ParquetFile.read``) reports the same problems as exceptions, so only the
  metadata accessors are avoided.
* **Page headers make a second size claim.** Format-1 payloads (zstd inside each page) give
  every page's uncompressed size in its header, and Arrow sizes its decompression buffer from
  it; the footer cannot see that. Pages claiming more than their column chunk's footer entry
  are refused here.

The footer and the page headers are Thrift compact structs (the Parquet format's own
encoding), read with Apache Thrift's protocol; only the fields the checks need are kept,
by their ids in ``parquet.thrift``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from thrift.protocol.TCompactProtocol import TCompactProtocol, TCompactProtocolAccelerated
from thrift.Thrift import TType
from thrift.transport.TTransport import TMemoryBuffer

# A writer's page header is well under a kilobyte (statistics included); Arrow's own limit
# is 16 MiB, far more than a batch ever needs.
MAX_PAGE_HEADER_BYTES = 64 * 1024
PHYSICAL_TYPES = (
    "BOOLEAN",
    "INT32",
    "INT64",
    "INT96",
    "FLOAT",
    "DOUBLE",
    "BYTE_ARRAY",
    "FIXED_LEN_BYTE_ARRAY",
)
ENCODING_NAMES = {
    0: "PLAIN",
    2: "PLAIN_DICTIONARY",
    3: "RLE",
    4: "BIT_PACKED",
    5: "DELTA_BINARY_PACKED",
    6: "DELTA_LENGTH_BYTE_ARRAY",
    7: "DELTA_BYTE_ARRAY",
    8: "RLE_DICTIONARY",
    9: "BYTE_STREAM_SPLIT",
}
CODEC_NAMES = {
    0: "UNCOMPRESSED",
    1: "SNAPPY",
    2: "GZIP",
    3: "LZO",
    4: "BROTLI",
    5: "LZ4",
    6: "ZSTD",
    7: "LZ4_RAW",
}
_REPEATED = 2  # FieldRepetitionType


class ParquetStructureError(ValueError):
    """The footer or a page header is unreadable, or claims more than its footer entry allows."""


@dataclass
class ColumnChunk:
    """One column chunk's footer entry (ColumnMetaData), names resolved."""

    path: str = ""
    physical_type: str = "?"
    encodings: list[str] = field(default_factory=list)
    compression: str = "?"
    num_values: int = -1
    total_uncompressed_size: int = -1
    total_compressed_size: int = -1
    data_page_offset: int = -1
    dictionary_page_offset: int | None = None


@dataclass
class RowGroup:
    num_rows: int = -1
    columns: list[ColumnChunk] = field(default_factory=list)


@dataclass
class Footer:
    """What the payload checks need of a FileMetaData: rows, leaf columns, row groups."""

    num_rows: int = -1
    columns: list[str] = field(default_factory=list)  # leaf paths, dotted
    repeated: set[str] = field(default_factory=set)  # leaf paths under a REPEATED element
    row_groups: list[RowGroup] = field(default_factory=list)


class _Struct:
    """A Thrift struct holding only the fields named in ``thrift_spec``; others are skipped.

    Decoded by Thrift's C decoder (``fastbinary``) when it is built, else by its
    pure-Python ``readStruct``: hundreds of microseconds per footer instead of milliseconds.
    """

    thrift_spec: tuple = ()

    def __init__(self, **fields: object) -> None:
        for entry in self.thrift_spec:
            if entry is not None:
                setattr(self, entry[2], fields.get(entry[2]))

    def read(self, protocol: TCompactProtocol) -> None:
        if getattr(protocol, "_fast_decode", None) is not None:
            protocol._fast_decode(self, protocol, [type(self), self.thrift_spec])
        else:
            protocol.readStruct(self, self.thrift_spec)


def _spec(*fields: tuple) -> tuple:
    """A ``thrift_spec``: entry ``i`` describes field id ``i`` (None where no field is kept)."""
    table: list[tuple | None] = [None] * (max(f[0] for f in fields) + 1)
    for f in fields:
        table[f[0]] = (*f, None)  # (id, type, name, type arguments, default)
    return tuple(table)


def _struct(name: str, *fields: tuple) -> type[_Struct]:
    return type(name, (_Struct,), {"thrift_spec": _spec(*fields)})


def _of(cls: type[_Struct]) -> list:
    return [cls, cls.thrift_spec]


_I32, _I64, _BIN, _LIST, _STRUCT = TType.I32, TType.I64, TType.STRING, TType.LIST, TType.STRUCT
# parquet.thrift, the fields the checks read
_SchemaElement = _struct(
    "SchemaElement",
    (3, _I32, "repetition_type", None),
    (4, _BIN, "name", "BINARY"),
    (5, _I32, "num_children", None),
)
_ColumnMetaData = _struct(
    "ColumnMetaData",
    (1, _I32, "type", None),
    (2, _LIST, "encodings", (_I32, None, False)),
    (3, _LIST, "path_in_schema", (_BIN, "BINARY", False)),
    (4, _I32, "codec", None),
    (5, _I64, "num_values", None),
    (6, _I64, "total_uncompressed_size", None),
    (7, _I64, "total_compressed_size", None),
    (9, _I64, "data_page_offset", None),
    (11, _I64, "dictionary_page_offset", None),
)
_ColumnChunk = _struct("ColumnChunk", (3, _STRUCT, "meta_data", _of(_ColumnMetaData)))
_RowGroup = _struct(
    "RowGroup", (1, _LIST, "columns", (_STRUCT, _of(_ColumnChunk), False)), (3, _I64, "num_rows", None)
)
_FileMetaData = _struct(
    "FileMetaData",
    (2, _LIST, "schema", (_STRUCT, _of(_SchemaElement), False)),
    (3, _I64, "num_rows", None),
    (4, _LIST, "row_groups", (_STRUCT, _of(_RowGroup), False)),
)
_PageHeader = _struct(
    "PageHeader", (2, _I32, "uncompressed_page_size", None), (3, _I32, "compressed_page_size", None)
)


class _Protocol(TCompactProtocolAccelerated):
    """Compact protocol, C-accelerated where Thrift's extension is built; skipped string fields
    are read as bytes (statistics hold binary values, which the pure-Python skip would decode)."""

    def readString(self) -> bytes:  # noqa: N802 - Thrift's name
        return self.readBinary()


def _protocol(raw: bytes) -> tuple[TMemoryBuffer, TCompactProtocol]:
    buffer = TMemoryBuffer(raw)
    return buffer, _Protocol(buffer, fallback=True)


def read_footer(data: bytes) -> Footer:
    """The footer of a Parquet file held in ``data``; ``ParquetStructureError`` if unreadable."""
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise ParquetStructureError("not a Parquet file (no PAR1 at both ends)")
    length = int.from_bytes(data[-8:-4], "little")
    if length > len(data) - 12:
        raise ParquetStructureError(f"the footer declares {length} bytes in a {len(data)}-byte file")
    meta = _FileMetaData()
    try:
        meta.read(_protocol(bytes(data[-8 - length : -8]))[1])
        return _footer(meta)
    except ParquetStructureError:
        raise
    except Exception as exc:  # Thrift raises EOFError, struct.error, TProtocolException, ...
        raise ParquetStructureError(f"the footer is unreadable ({type(exc).__name__}: {exc})") from None


def _name(names: dict[int, str], value: object) -> str:
    return names.get(value, f"unknown({value})") if isinstance(value, int) else "missing"


def _int(value: object) -> int:
    return value if isinstance(value, int) else -1


def _footer(meta: _Struct) -> Footer:
    footer = Footer(num_rows=_int(meta.num_rows))
    for group in meta.row_groups or []:
        columns = []
        for chunk in group.columns or []:
            m = chunk.meta_data or _ColumnMetaData()
            columns.append(
                ColumnChunk(
                    path=".".join(p.decode("utf-8", "replace") for p in m.path_in_schema or []),
                    physical_type=_name(dict(enumerate(PHYSICAL_TYPES)), m.type),
                    encodings=[_name(ENCODING_NAMES, e) for e in m.encodings or []],
                    compression=_name(CODEC_NAMES, m.codec),
                    num_values=_int(m.num_values),
                    total_uncompressed_size=_int(m.total_uncompressed_size),
                    total_compressed_size=_int(m.total_compressed_size),
                    data_page_offset=_int(m.data_page_offset),
                    dictionary_page_offset=m.dictionary_page_offset,
                )
            )
        footer.row_groups.append(RowGroup(num_rows=_int(group.num_rows), columns=columns))
    elements = [
        ((e.name or b"").decode("utf-8", "replace"), _int(e.repetition_type), max(_int(e.num_children), 0))
        for e in meta.schema or []
    ]
    _leaves(elements, footer)
    return footer


def _leaves(elements: list[tuple[str, int, int]], footer: Footer) -> None:
    """Leaf column paths of the schema tree (the first element is the root)."""
    position = 1

    def walk(prefix: tuple[str, ...], repeated: bool, count: int) -> None:
        nonlocal position
        for _ in range(count):
            if position >= len(elements):
                raise ParquetStructureError("the footer's schema ends early")
            name, rep, children = elements[position]
            position += 1
            here, under = (*prefix, name), repeated or rep == _REPEATED
            if children > 0:
                walk(here, under, children)
            else:
                footer.columns.append(".".join(here))
                if under:
                    footer.repeated.add(".".join(here))

    if not elements:
        raise ParquetStructureError("the footer has no schema")
    walk((), False, elements[0][2])


def _page_sizes(data: bytes, pos: int) -> tuple[int, int, int]:
    """(header length, uncompressed size, compressed size) of the page header at ``pos``."""
    buffer, protocol = _protocol(bytes(data[pos : pos + MAX_PAGE_HEADER_BYTES]))
    header = _PageHeader()
    try:
        header.read(protocol)
    except Exception as exc:  # as in read_footer
        raise ParquetStructureError(
            f"page header at byte {pos} is unreadable ({type(exc).__name__})"
        ) from None
    sizes = header.uncompressed_page_size, header.compressed_page_size
    if not all(isinstance(v, int) for v in sizes):
        raise ParquetStructureError(f"page header at byte {pos} lacks its sizes")
    return buffer.cstringio_buf.tell(), *sizes


def check_compressed_pages(data: bytes, footer: Footer) -> None:
    """Refuse compressed column chunks whose pages claim more than the footer declares.

    Walks every page of every compressed chunk: each page must lie inside its chunk, and the
    pages' uncompressed sizes together must stay within the chunk's ``total_uncompressed_size``
    (which the footer check has already bounded per row). Uncompressed chunks are not walked:
    Arrow reads their pages in place, without a buffer sized by the header.
    """
    for group in footer.row_groups:
        for chunk in group.columns:
            if chunk.compression == "UNCOMPRESSED":
                continue
            start = chunk.dictionary_page_offset or chunk.data_page_offset
            end, allowed = start + chunk.total_compressed_size, chunk.total_uncompressed_size
            if start < 4 or chunk.total_compressed_size < 0 or end > len(data):
                raise ParquetStructureError(f"column {chunk.path!r} lies outside the payload")
            pos, claimed = start, 0
            while pos < end:
                header, uncompressed, compressed = _page_sizes(data, pos)
                claimed += max(uncompressed, 0)
                if uncompressed < 0 or compressed < 0 or claimed > allowed:
                    raise ParquetStructureError(
                        f"column {chunk.path!r} has a page declaring {uncompressed} uncompressed "
                        f"bytes; the footer allows {allowed} for the whole column"
                    )
                pos += header + compressed
            if pos != end:
                raise ParquetStructureError(f"column {chunk.path!r}'s pages overrun its footer entry")
