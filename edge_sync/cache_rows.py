"""Row staging for the device cache: check rows, buffer them by column, build Arrow batches.

The cache stores each stream as ``seq, hlc, ts, nbytes`` plus the payload columns. The
envelope columns that are the same on every row of one cache (tenant, device, stream,
node id) are added back when rows are read (see ``cache_store.CacheStore.pending``).

``nbytes`` is the accounted size of a row (see ``row_nbytes``): the cache's size bound is
measured with it, because a DuckDB file never shrinks after deletes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edge_sync.streams import ENVELOPE_NAMES, StreamSpec

# Bytes accounted per row for seq, hlc, ts and nbytes itself, plus per payload column.
ROW_OVERHEAD_BYTES = 28
FIXED_BYTES = 8  # int64 / float64 payload value
STRING_OVERHEAD_BYTES = 4  # offset of a string value; its UTF-8 bytes are added on top

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

STRING, FLOAT, INT = "string", "float", "int"


def _kind(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return STRING
    if pa.types.is_floating(t):
        return FLOAT
    if pa.types.is_integer(t):
        return INT
    raise TypeError(f"the cache cannot store payload type {t}; use string, int64 or float64")


def storage_schema(spec: StreamSpec) -> pa.Schema:
    """The columns the cache keeps for one stream, in table order."""
    head = [
        pa.field("seq", pa.int64()),
        pa.field("hlc", pa.int64()),
        pa.field("ts", pa.int64()),
        pa.field("nbytes", pa.int64()),
    ]
    return pa.schema(head + [pa.field(f.name, f.type) for f in spec.payload])


def ts_to_ms(value: Any, what: str = "ts") -> int:
    """Device wall time as epoch milliseconds from an aware datetime or an int of ms."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{what} {value!r} has no time zone; pass an aware datetime (e.g. tzinfo=UTC)")
        return (value - _EPOCH) // _MS
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(
        f"{what} must be an aware datetime or epoch milliseconds (int), not {type(value).__name__}"
    )


class StreamBuffer:
    """Un-flushed single-row records of one stream, kept column by column."""

    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.names = spec.payload_names
        self._kinds = [(name, _kind(spec.payload.field(name).type)) for name in self.names]
        self._allowed = frozenset(self.names) | {"ts"}
        self.seq: list[int] = []
        self.hlc: list[int] = []
        self.ts: list[int] = []
        self.values: list[list[Any]] = [[] for _ in self.names]

    def __len__(self) -> int:
        return len(self.seq)

    def check(self, row: dict[str, Any]) -> None:
        """Reject a row before it takes a seq, so a bad value never poisons a later flush."""
        if not row.keys() <= self._allowed:
            extra = sorted(set(row) - self._allowed)
            envelope = [k for k in extra if k in ENVELOPE_NAMES]
            hint = f" ({', '.join(envelope)} are set by the cache)" if envelope else ""
            raise ValueError(
                f"stream {self.spec.name!r} has no column(s) {extra}{hint}; "
                f"its columns are {list(self.names)} and optional 'ts'"
            )
        for name, kind in self._kinds:
            v = row.get(name)
            if v is None:
                continue
            if kind == STRING:
                ok = isinstance(v, str)
            elif isinstance(v, bool):
                ok = False
            elif kind == FLOAT:
                ok = isinstance(v, (int, float))
            else:
                ok = isinstance(v, int) and _INT64_MIN <= v <= _INT64_MAX
            if not ok:
                raise ValueError(
                    f"{self.spec.name}.{name} must be {kind} (or None), got {type(v).__name__} {v!r}"
                )

    def append(self, seq: int, hlc: int, ts: int, row: dict[str, Any]) -> None:
        self.seq.append(seq)
        self.hlc.append(hlc)
        self.ts.append(ts)
        get = row.get
        for column, name in zip(self.values, self.names, strict=True):
            column.append(get(name))

    def clear(self) -> None:
        self.seq, self.hlc, self.ts = [], [], []
        self.values = [[] for _ in self.names]

    def to_table(self) -> pa.Table:
        payload = [
            pa.array(col, type=self.spec.payload.field(name).type)
            for col, name in zip(self.values, self.names, strict=True)
        ]
        return with_nbytes(
            self.spec,
            pa.array(self.seq, pa.int64()),
            pa.array(self.hlc, pa.int64()),
            pa.array(self.ts, pa.int64()),
            payload,
        )


def row_nbytes(spec: StreamSpec, payload: list[pa.Array | pa.ChunkedArray], n: int) -> pa.Array:
    """Accounted bytes of each row: fixed widths, string offsets and UTF-8 bytes of strings."""
    fixed = ROW_OVERHEAD_BYTES
    strings = []
    for field, col in zip(spec.payload, payload, strict=True):
        if _kind(field.type) == STRING:
            fixed += STRING_OVERHEAD_BYTES
            strings.append(col)
        else:
            fixed += FIXED_BYTES
    total = np.full(n, fixed, dtype=np.int64)
    for col in strings:
        lengths = pc.fill_null(pc.binary_length(col), 0)
        if isinstance(lengths, pa.ChunkedArray):
            lengths = lengths.combine_chunks()
        total += lengths.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return pa.array(total)


def with_nbytes(spec: StreamSpec, seq, hlc, ts, payload: list) -> pa.Table:
    n = len(seq)
    nbytes = row_nbytes(spec, payload, n)
    return pa.Table.from_arrays([seq, hlc, ts, nbytes, *payload], schema=storage_schema(spec))


def batch_table(spec: StreamSpec, table: pa.Table, first_seq: int, first_hlc: int, now_ms: int) -> pa.Table:
    """The storage table for ``record_batch``: seq/hlc ranges, ts, accounted bytes, payload."""
    allowed = set(spec.payload_names) | {"ts"}
    extra = [c for c in table.column_names if c not in allowed]
    if extra:
        raise ValueError(
            f"record_batch({spec.name!r}): unknown column(s) {extra}; "
            f"allowed are {list(spec.payload_names)} and optional 'ts' (envelope columns are set by the cache)"
        )
    n = table.num_rows
    payload = []
    for field in spec.payload:
        if field.name not in table.column_names:
            payload.append(pa.nulls(n, field.type))
            continue
        col = table.column(field.name)
        try:
            payload.append(col if col.type == field.type else col.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(
                f"record_batch({spec.name!r}): column {field.name!r} ({col.type}) "
                f"cannot be stored as {field.type}: {exc}"
            ) from None
    if "ts" in table.column_names:
        ts = table.column("ts")
        if ts.null_count:
            raise ValueError(
                f"record_batch({spec.name!r}): 'ts' has nulls; drop the column to use device time"
            )
        if pa.types.is_timestamp(ts.type):
            ts = ts.cast(pa.timestamp("ms", tz=ts.type.tz)).cast(pa.int64())
        elif pa.types.is_integer(ts.type):
            ts = ts.cast(pa.int64())
        else:
            raise ValueError(
                f"record_batch({spec.name!r}): 'ts' must be a timestamp or int64 ms, not {ts.type}"
            )
    else:
        ts = pa.array(np.full(n, now_ms, dtype=np.int64))
    seq = pa.array(np.arange(first_seq, first_seq + n, dtype=np.int64))
    hlc = pa.array(np.arange(first_hlc, first_hlc + n, dtype=np.int64))
    return with_nbytes(spec, seq, hlc, ts, payload)
