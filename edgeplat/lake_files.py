"""Append Arrow rows to a DuckLake table as Parquet files written by pyarrow.

DuckDB's ``INSERT`` converts every value through its Arrow scan and re-encodes it with its
own Parquet writer; pyarrow's writer takes a fraction of that CPU for the same rows, since
dictionary columns are written as they are (docs/decisions.md, "Ingest writes its own
Parquet files"). So the ingest writes the files itself, one per partition, at the hive
path DuckLake expects for that partition (``<table path>/tenant_id=<t>/day=<d>/``: DuckLake
reads the partition values from it and refuses a file whose path disagrees), and registers
them with ``ducklake_add_data_files`` in the caller's transaction: the rows, the ledger and
the catalog still commit or roll back together.

A transaction that rolls back leaves its files behind unregistered. They are never read;
reconciliation's compaction deletes orphaned files older than a day
(``ducklake_delete_orphaned_files``), which leaves a running ingest's fresh files alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from urllib.parse import urlparse

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from edgeplat.lakehouse import LAKE, LakehouseConfig
from edgeplat.lakehouse_schema import Table

# DuckDB's row-group size: its scans parallelize by row group.
ROW_GROUP_ROWS = 122_880
# Files written at once by one append.
WRITERS = 2
# Columns whose min/max go into the files (and so DuckLake's file statistics): the ones queries
# filter stream tables by. Payload, node and batch-key statistics would cost write time for no query.
STATS_COLUMNS = frozenset({"tenant_id", "device_id", "stream", "seq", "hlc", "ts", "day", "ingested_at"})
# Integer columns that rise within a batch, written DELTA_BINARY_PACKED: smaller files, cheaper
# to write and faster for DuckDB to scan than plain (docs/decisions.md, "Ingest writes its own
# Parquet files").
DELTA_COLUMNS = frozenset({"seq", "hlc", "ts"})
# Past this many runs of one partition the rows are sorted once instead of sliced run by run.
_MAX_RUNS = 4_096

_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "DATE": pa.date32(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
}

_EPOCH = date(1970, 1, 1)
# Days a stage's rows may span before their day codes are hashed rather than offset from the first.
_MAX_DAY_SPAN = 4_096
_FILESYSTEMS: dict[LakehouseConfig, tuple[pafs.FileSystem, str]] = {}
_FS_LOCK = threading.Lock()


def append_rows(con: duckdb.DuckDBPyConnection, config: LakehouseConfig, table: Table, rows: pa.Table) -> int:
    """Write ``rows`` (every column of ``table``, by name) as Parquet files and register them.

    Runs inside the caller's open transaction; returns the number of files written.
    """
    if rows.num_rows == 0:
        return 0
    rows = conform(rows, table)
    names = {name for name, _ in table.columns}
    if not set(table.partitioned_by) <= names:
        # Partition transforms (``year(ts)``: a table not switched to ``day``) are DuckLake's to compute.
        insert_rows(con, table.name, rows)
        return 0
    fs, root = _filesystem(config)
    jobs = []
    for values, part in partitions(rows, table.partitioned_by):
        hive = (f"{k}={v}" for k, v in zip(table.partitioned_by, values, strict=True))
        folder = "/".join([f"{root}main/{table.name}", *hive])
        jobs.append((folder, f"{folder}/ingest-{uuid.uuid4().hex}.parquet", part))
    # pyarrow writes without the GIL: partitions are written side by side
    with cf.ThreadPoolExecutor(min(WRITERS, len(jobs)), thread_name_prefix="lake-write") as pool:
        written = list(pool.map(lambda job: _write(fs, *job), jobs))
    prefix = "s3://" if config.data_path.startswith("s3://") else ""
    for path in written:
        con.execute("CALL ducklake_add_data_files(?, ?, ?)", [LAKE, table.name, prefix + path])
    return len(written)


def _write(fs: pafs.FileSystem, folder: str, path: str, part: pa.Table) -> str:
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(folder, recursive=True)
    pq.write_table(
        part,
        path,
        filesystem=fs,
        compression="zstd",
        row_group_size=ROW_GROUP_ROWS,
        # dictionaries for strings only: for unique numbers pyarrow builds one and drops it
        use_dictionary=[f.name for f in part.schema if _is_text(f.type)],
        # statistics where queries filter (and DuckLake prunes files); payload columns and batch
        # keys are not worth their cost
        write_statistics=[n for n in part.column_names if n in STATS_COLUMNS],
        column_encoding={f.name: "DELTA_BINARY_PACKED" for f in part.schema if _is_delta(f)},
    )
    return path


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """``INSERT`` ``rows`` (columns by name) through DuckDB: small tables and partition transforms."""
    if rows.num_rows == 0:
        return
    view = f"_insert_{uuid.uuid4().hex}"
    con.register(view, rows)
    try:
        cols = ", ".join(f'"{c}"' for c in rows.column_names)
        con.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM {view}')
    finally:
        con.unregister(view)


def conform(rows: pa.Table, table: Table) -> pa.Table:
    """``rows`` with exactly ``table``'s columns, in its order and types (dictionary strings kept)."""
    missing = [name for name, _ in table.columns if name not in rows.column_names]
    if missing:
        raise ValueError(f"rows for table {table.name!r} lack columns {missing}")
    arrays, fields = [], []
    for name, sql_type in table.columns:
        want = _ARROW_TYPES[sql_type]
        column = rows.column(name)
        have = column.type
        if have != want and not (pa.types.is_dictionary(have) and have.value_type == want):
            column = column.cast(want)
        arrays.append(column)
        fields.append(pa.field(name, column.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def partitions(rows: pa.Table, keys: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], pa.Table]]:
    """(hive path values, rows) per distinct value of the partition ``keys``.

    Stream rows arrive grouped by batch, so each partition is a few long runs: those are
    sliced (zero-copy) rather than filtered.
    """
    if not keys:
        yield (), rows
        return
    if rows.num_rows == 0:
        return
    codes = np.zeros(rows.num_rows, dtype=np.int64)
    uniques = []
    for key in keys:
        column = rows.column(key)
        if column.null_count:
            raise ValueError(f"partition column {key!r} has nulls; every row needs a value to be stored")
        positions, distinct = _codes(column)
        codes = codes * len(distinct) + positions
        uniques.append(distinct)
    edges = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    if len(edges) >= _MAX_RUNS:
        order = np.argsort(codes, kind="stable")
        rows, codes = rows.take(pa.array(order)), codes[order]
        edges = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = [0, *edges.tolist()]
    ends = [*edges.tolist(), rows.num_rows]
    runs: dict[int, list[pa.Table]] = {}
    for a, b in zip(starts, ends, strict=True):
        runs.setdefault(int(codes[a]), []).append(rows.slice(a, b - a))
    for code, parts in sorted(runs.items()):
        values = []
        for distinct in reversed(uniques):
            code, i = divmod(code, len(distinct))
            values.append(_hive_value(distinct[i]))
        yield tuple(reversed(values)), pa.concat_tables(parts)


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """A code per row of a non-empty partition column (which has no nulls), and the values the codes index.

    The values may include some no row has (a dictionary can hold more than its rows use):
    only codes that occur become partitions.
    """
    if pa.types.is_dictionary(column.type):
        # Look up the dictionary's few values, not every row's string: one dictionary for the
        # column (combining a stage's thousands of slices costs less than a lookup per slice).
        combined = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        distinct = pc.unique(combined.dictionary)
        lookup = np.asarray(pc.index_in(combined.dictionary, value_set=distinct), dtype=np.int64)
        return lookup[combined.indices.to_numpy(zero_copy_only=False)], distinct.to_pylist()
    if pa.types.is_date32(column.type):  # the day: offsets from the first, no hashing
        days = column.cast(pa.int32()).to_numpy().astype(np.int64)
        first, span = int(days.min()), int(days.max() - days.min()) + 1
        if span <= _MAX_DAY_SPAN:  # else a clock far off: hashed below, so only days present are listed
            return days - first, [_EPOCH + timedelta(days=first + i) for i in range(span)]
    distinct = pc.unique(column)
    return np.asarray(pc.index_in(column, value_set=distinct), dtype=np.int64), distinct.to_pylist()


def _is_delta(field: pa.Field) -> bool:
    return field.name in DELTA_COLUMNS and (
        pa.types.is_integer(field.type) or pa.types.is_timestamp(field.type)
    )


def _is_text(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or (
        pa.types.is_dictionary(type_) and pa.types.is_string(type_.value_type)
    )


def _hive_value(value: object) -> str:
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    if "/" in text or text in ("", ".", ".."):
        raise ValueError(f"partition value {text!r} cannot be a path segment")
    return text


def _filesystem(config: LakehouseConfig) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for the data path, and the data path as that filesystem names it."""
    with _FS_LOCK:
        hit = _FILESYSTEMS.get(config)
        if hit is not None:
            return hit
        path = config.data_path if config.data_path.endswith("/") else config.data_path + "/"
        if path.startswith("s3://"):
            s3 = config.s3
            url = urlparse(s3.endpoint_url) if s3 and s3.endpoint_url else None
            fs: pafs.FileSystem = pafs.S3FileSystem(
                access_key=s3.access_key_id if s3 else None,
                secret_key=s3.secret_access_key if s3 else None,
                session_token=s3.session_token if s3 else None,
                region=s3.region if s3 else "us-east-1",
                endpoint_override=url.netloc if url else None,
                scheme=url.scheme if url else "https",
                force_virtual_addressing=bool(s3 and s3.url_style == "vhost"),
            )
            hit = (fs, path.removeprefix("s3://"))
        else:
            hit = (pafs.LocalFileSystem(), path)
        _FILESYSTEMS[config] = hit
        return hit
