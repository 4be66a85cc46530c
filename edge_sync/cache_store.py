"""The encrypted DuckDB file behind the device cache: schema, counters, writes and reads.

One DuckDB database attached as ``c`` with the device key (AES-GCM, DuckDB's own
encryption; writing needs the httpfs extension's crypto module). Tables:

- ``stream_<name>``: unsent rows of each stream (``seq, hlc, ts, nbytes`` + payload);
- ``stream_counters``: last issued seq and acknowledged watermark per stream;
- ``clock``: the last HLC issued or observed, so a reopened cache stays monotonic;
- ``evictions``: every eviction as a contiguous seq range, with reason and report flag;
- ``state_current``: the device's current view of keyed state;
- ``cache_info``: which tenant and device the file belongs to.

Counters and clock are written in the same transaction as the rows they describe, so a
crash never leaves a seq issued in the file without its row (or the reverse).

Memory (an agent draining a backlog must stay small): no vacuum, a checkpoint every
``CHECKPOINT_DELETED_ROWS`` deleted rows, and ``pending`` reads a seq range (see
``CONNECTION_CONFIG`` and ``pending``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import duckdb
import pyarrow as pa

from edge_sync import duck
from edge_sync.cache_rows import storage_schema
from edge_sync.streams import STREAMS, StreamSpec

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEY_BYTES = 32

STATE_SCHEMA = pa.schema(
    [
        pa.field("namespace", pa.string()),
        pa.field("key", pa.string()),
        pa.field("field", pa.string()),
        pa.field("value", pa.string()),
        pa.field("hlc", pa.int64()),
        pa.field("node_id", pa.string()),
        pa.field("origin", pa.string()),
    ]
)

# The cache's DuckDB instance: no vacuum on checkpoint. The cache is a queue, deleted from the
# front, so a row group is dropped whole once its last row is acknowledged or evicted; vacuum
# would instead rewrite the whole table into fewer row groups as soon as the deleted rows add
# up to one, costing the draining agent memory to reclaim file space the size bound does not
# count (docs/decisions.md, "Agent memory").
CONNECTION_CONFIG: dict[str, int] = {"max_vacuum_tasks": 0}
# DuckDB keeps the versions of deleted rows in memory until a checkpoint, so a long drain would
# grow without one; acks and evictions checkpoint once this many rows were deleted since the last.
CHECKPOINT_DELETED_ROWS = 50_000
_STATE_ROWS_PER_STATEMENT = 256  # state upserts are bound as parameters, this many rows a statement
_SQL_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}


class CacheKeyError(ValueError):
    """The device key does not open the cache file (wrong key, or the file is not encrypted)."""


def table_name(stream: str) -> str:
    return f"c.stream_{stream}"


def _ddl(spec: StreamSpec) -> str:
    cols = ", ".join(f'"{f.name}" {_SQL_TYPES[f.type]}' for f in storage_schema(spec))
    return f"CREATE TABLE IF NOT EXISTS {table_name(spec.name)} ({cols})"


class CacheStore:
    """The DuckDB connection and every SQL statement of the cache."""

    def __init__(self, path: str | os.PathLike, key: bytes, tenant_id: str, device_id: str) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise CacheKeyError(
                f"the device key for {path} must be {KEY_BYTES} bytes (got "
                f"{len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__}); "
                "pass the raw key from the keyring or Vault, not a hex or base64 string"
            )
        self.path = Path(path)
        self._key_text = bytes(key).hex()
        self.tenant_id, self.device_id = tenant_id, device_id
        self.con = self._attach()
        self._deleted_since_checkpoint = 0
        self._create_schema()

    # -- connection ---------------------------------------------------------------------
    def _attach(self) -> duckdb.DuckDBPyConnection:
        con = duck.connect(":memory:", extensions=("httpfs",), **CONNECTION_CONFIG)
        try:
            con.execute(f"ATTACH '{self.path}' AS c (ENCRYPTION_KEY '{self._key_text}')")
        except duckdb.InvalidInputException as exc:
            con.close()
            if "encryption key" in str(exc).lower():
                raise CacheKeyError(
                    f"cache file {self.path}: the device key does not match the key it was encrypted with "
                    "(wrong key from the keyring/Vault, or a file from another device)"
                ) from None
            raise
        except duckdb.CatalogException as exc:
            con.close()
            if "not encrypted" in str(exc):
                raise CacheKeyError(
                    f"cache file {self.path} is not encrypted, so the device key does not match it; "
                    "move it away and let the cache create a new encrypted file"
                ) from None
            raise
        return con

    def reconnect(self) -> None:
        """Drop a connection DuckDB invalidated (e.g. after a failed write) and attach again."""
        with contextlib.suppress(duckdb.Error):
            self.con.close()
        self.con = self._attach()

    def rollback(self) -> None:
        with contextlib.suppress(duckdb.Error):  # no transaction open, or the connection is gone
            self.con.execute("ROLLBACK")

    def close(self) -> None:
        try:
            self.con.execute("CHECKPOINT c")
        finally:
            self.con.close()

    def _create_schema(self) -> None:
        con = self.con
        con.execute("BEGIN")
        fresh = not con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'c' AND table_name = 'cache_info'"
        ).fetchone()[0]
        if fresh:
            self._create_tables()
        info = con.execute("SELECT tenant_id, device_id, format FROM c.cache_info").fetchall()
        if not info:
            con.execute(
                "INSERT INTO c.cache_info VALUES (?, ?, ?)", [self.tenant_id, self.device_id, FORMAT_VERSION]
            )
            con.execute("INSERT INTO c.clock VALUES (0)")
        elif info[0][:2] != (self.tenant_id, self.device_id):
            con.execute("ROLLBACK")
            raise ValueError(
                f"cache file {self.path} belongs to tenant {info[0][0]!r} device {info[0][1]!r}, "
                f"not tenant {self.tenant_id!r} device {self.device_id!r}; use that device's own cache path"
            )
        known = {r[0] for r in con.execute("SELECT stream FROM c.stream_counters").fetchall()}
        for name in STREAMS:
            if name not in known:  # a stream added to streams.py after the file was made
                con.execute(_ddl(STREAMS[name]))
                con.execute("INSERT INTO c.stream_counters VALUES (?, 0, 0)", [name])
            else:
                self._add_new_columns(STREAMS[name])
        con.execute("COMMIT")

    def _add_new_columns(self, spec: StreamSpec) -> None:
        """Columns appended to a stream's payload after the file was made (at the end, like the spec)."""
        have = {
            r[0]
            for r in self.con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = 'c' AND table_name = ?",
                [table_name(spec.name).removeprefix("c.")],
            ).fetchall()
        }
        for f in storage_schema(spec):
            if f.name not in have:
                self.con.execute(
                    f'ALTER TABLE {table_name(spec.name)} ADD COLUMN "{f.name}" {_SQL_TYPES[f.type]}'
                )

    def _create_tables(self) -> None:
        con = self.con
        con.execute(
            "CREATE TABLE IF NOT EXISTS c.cache_info (tenant_id VARCHAR, device_id VARCHAR, format INTEGER)"
        )
        con.execute(
            "CREATE TABLE IF NOT EXISTS c.stream_counters (stream VARCHAR, last_seq BIGINT, acked_seq BIGINT)"
        )
        con.execute("CREATE TABLE IF NOT EXISTS c.clock (last_hlc BIGINT)")
        con.execute(
            "CREATE TABLE IF NOT EXISTS c.evictions (id BIGINT, stream VARCHAR, first_seq BIGINT, last_seq BIGINT, "
            "count BIGINT, reason VARCHAR, evicted_ms BIGINT, reported BOOLEAN)"
        )
        con.execute(
            "CREATE TABLE IF NOT EXISTS c.state_current (namespace VARCHAR, key VARCHAR, field VARCHAR, "
            "value VARCHAR, hlc BIGINT, node_id VARCHAR, origin VARCHAR, PRIMARY KEY (namespace, key, field))"
        )

    # -- reads on open ------------------------------------------------------------------
    def counters(self) -> dict[str, tuple[int, int]]:
        rows = self.con.execute("SELECT stream, last_seq, acked_seq FROM c.stream_counters").fetchall()
        return {s: (last, acked) for s, last, acked in rows}

    def last_hlc(self) -> int:
        return int(self.con.execute("SELECT max(last_hlc) FROM c.clock").fetchone()[0])

    def usage(self, stream: str) -> tuple[int, int]:
        """(rows, accounted bytes) stored for a stream."""
        rows, nbytes = self.con.execute(
            f"SELECT count(*), coalesce(sum(nbytes), 0) FROM {table_name(stream)}"
        ).fetchone()
        return int(rows), int(nbytes)

    def next_eviction_id(self) -> int:
        return int(self.con.execute("SELECT coalesce(max(id), 0) + 1 FROM c.evictions").fetchone()[0])

    # -- writes -------------------------------------------------------------------------
    def write(
        self,
        tables: dict[str, list[pa.Table]],
        last_seqs: dict[str, int],
        last_hlc: int,
        state_rows: pa.Table | None = None,
    ) -> None:
        """One transaction: insert the batches, upsert current state, move counters and clock."""
        con = self.con
        con.execute("BEGIN")
        try:
            for stream, batches in tables.items():
                for i, batch in enumerate(batches):
                    view = f"_ins_{stream}_{i}"
                    con.register(view, batch)
                    try:
                        con.execute(f"INSERT INTO {table_name(stream)} SELECT * FROM {view}")
                    finally:
                        con.unregister(view)
            if state_rows is not None and state_rows.num_rows:
                self._upsert_state(state_rows)
            for stream, last in last_seqs.items():
                con.execute("UPDATE c.stream_counters SET last_seq = ? WHERE stream = ?", [last, stream])
            con.execute("UPDATE c.clock SET last_hlc = greatest(last_hlc, ?)", [last_hlc])
            con.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise

    def save_clock(self, last_hlc: int) -> None:
        self.con.execute("UPDATE c.clock SET last_hlc = greatest(last_hlc, ?)", [last_hlc])

    def _upsert_state(self, rows: pa.Table) -> None:
        # rows are already deduplicated by (namespace, key, field): INSERT OR REPLACE would keep
        # the first of duplicates inside one statement. Bound as parameters, not registered as an
        # Arrow view: registering makes DuckDB import pyarrow.dataset, whose memory an agent
        # would otherwise pay for its per-sync bookkeeping rows alone.
        values = list(zip(*(rows.column(c).to_pylist() for c in STATE_SCHEMA.names), strict=True))
        width = len(STATE_SCHEMA.names)
        for start in range(0, len(values), _STATE_ROWS_PER_STATEMENT):
            chunk = values[start : start + _STATE_ROWS_PER_STATEMENT]
            placeholders = ", ".join(["(" + ", ".join(["?"] * width) + ")"] * len(chunk))
            self.con.execute(
                f"INSERT OR REPLACE INTO c.state_current VALUES {placeholders}",
                [v for row in chunk for v in row],
            )

    def replace_state(self, rows: pa.Table, last_hlc: int) -> None:
        con = self.con
        con.execute("BEGIN")
        try:
            self._upsert_state(rows)
            con.execute("UPDATE c.clock SET last_hlc = greatest(last_hlc, ?)", [last_hlc])
            con.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise

    def ack(self, stream: str, upto_seq: int) -> tuple[int, int]:
        """Delete delivered rows and move the watermark; returns (rows, bytes) removed."""
        con = self.con
        con.execute("BEGIN")
        try:
            rows, nbytes = con.execute(
                f"SELECT count(*), coalesce(sum(nbytes), 0) FROM {table_name(stream)} WHERE seq <= ?",
                [upto_seq],
            ).fetchone()
            con.execute(f"DELETE FROM {table_name(stream)} WHERE seq <= ?", [upto_seq])
            con.execute("UPDATE c.stream_counters SET acked_seq = ? WHERE stream = ?", [upto_seq, stream])
            con.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        self.deleted(int(rows))
        return int(rows), int(nbytes)

    def deleted(self, rows: int) -> None:
        """Count rows deleted by a committed transaction; checkpoint every ``CHECKPOINT_DELETED_ROWS``."""
        self._deleted_since_checkpoint += rows
        if self._deleted_since_checkpoint < CHECKPOINT_DELETED_ROWS:
            return
        try:
            self.con.execute("CHECKPOINT c")
        except duckdb.Error as exc:  # the deletes are committed; the next one tries again
            log.warning("cache %s: checkpoint after deletes failed (%s); retrying later", self.path, exc)
            try:
                self.con.execute("SELECT 1 FROM c.clock").fetchall()
            except duckdb.Error:  # DuckDB invalidates a database after a failed write
                with contextlib.suppress(duckdb.Error):
                    self.reconnect()
            return
        self._deleted_since_checkpoint = 0

    # -- reads --------------------------------------------------------------------------
    def pending(
        self, spec: StreamSpec, after_seq: int, max_rows: int | None, last_seq: int | None = None
    ) -> pa.Table:
        """Rows past ``after_seq`` in seq order, with the full stream schema of streams.py.

        With ``max_rows``, the rows are first read as the seq range ``after_seq + 1 ..
        after_seq + max_rows`` (seqs are unique, so at most ``max_rows`` rows): the zone maps
        skip every other row group, where ``ORDER BY seq LIMIT`` would read the whole backlog
        on every batch. Only when that range has holes (evicted rows) and ``last_seq``, the
        last seq in the file, says rows may follow, is the backlog read in full.
        """
        payload = ", ".join(f'"{n}"' for n in spec.payload_names)
        select = f"SELECT seq, hlc, ts, {payload} FROM {table_name(spec.name)}"
        stored = None
        if max_rows is not None:
            upper = after_seq + int(max_rows)
            stored = self.con.execute(
                f"{select} WHERE seq > ? AND seq <= ? ORDER BY seq", [after_seq, upper]
            ).to_arrow_table()
            if stored.num_rows < max_rows and (last_seq is None or upper < last_seq):
                stored = None  # holes in the range and rows past it: read in seq order
        if stored is None:
            limit = "" if max_rows is None else f" LIMIT {int(max_rows)}"
            stored = self.con.execute(
                f"{select} WHERE seq > ? ORDER BY seq{limit}", [after_seq]
            ).to_arrow_table()
        n = stored.num_rows

        def const(v: str) -> pa.Array:
            return pa.repeat(pa.scalar(v, pa.string()), n)

        envelope = {
            "tenant_id": const(self.tenant_id),
            "device_id": const(self.device_id),
            "stream": const(spec.name),
            "seq": stored.column("seq"),
            "hlc": stored.column("hlc"),
            "node_id": const(self.device_id),
            "ts": stored.column("ts").cast(pa.timestamp("ms", tz="UTC")),
        }
        cols = [envelope[f.name] if f.name in envelope else stored.column(f.name) for f in spec.schema]
        cols = [c if isinstance(c, pa.ChunkedArray) else pa.chunked_array([c], c.type) for c in cols]
        return pa.Table.from_arrays(cols, schema=spec.schema)

    def state_table(self, namespace: str | None = None, key: str | None = None) -> pa.Table:
        where, params = "", []
        if namespace is not None:
            where, params = " WHERE namespace = ? AND key = ?", [namespace, key]
        t = self.con.execute(
            f"SELECT namespace, key, field, value, hlc, node_id, origin FROM c.state_current{where} "
            "ORDER BY namespace, key, field",
            params,
        ).to_arrow_table()
        return t.cast(STATE_SCHEMA)

    def eviction_report(self, stream: str) -> list[dict]:
        rows = self.con.execute(
            "SELECT id, first_seq, last_seq, count, reason, evicted_ms FROM c.evictions "
            "WHERE stream = ? AND NOT reported ORDER BY id",
            [stream],
        ).fetchall()
        keys = ("id", "first_seq", "last_seq", "count", "reason", "evicted_ms")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def mark_evictions_reported(self, stream: str, upto_id: int) -> int:
        where = "WHERE stream = ? AND id <= ? AND NOT reported"
        n = self.con.execute(f"SELECT count(*) FROM c.evictions {where}", [stream, upto_id]).fetchone()[0]
        self.con.execute(f"UPDATE c.evictions SET reported = true {where}", [stream, upto_id])
        return int(n)

    def eviction_totals(self) -> dict[tuple[str, str], int]:
        rows = self.con.execute("SELECT stream, reason, sum(count) FROM c.evictions GROUP BY ALL").fetchall()
        return {(stream, reason): int(n) for stream, reason, n in rows}

    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}.wal")) if p.exists())
