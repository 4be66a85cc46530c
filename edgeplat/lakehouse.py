"""The lakehouse: DuckDB with a DuckLake catalog attached, shared by every process.

Local default: a SQLite catalog and a Parquet data folder under ``EDGEPLAT_HOME``, so
sensors, runs, the CLI and an analyst's SQL session can read and write at once.
Production: a PostgreSQL catalog and an ``s3://`` data path (httpfs, credentials through
a DuckDB secret). Extensions come from the pip packages (edge_sync.duck); automatic
download stays off.

Writers that commit at the same moment can collide in the catalog ("database is locked"
on SQLite, serialization failures on PostgreSQL); ``write`` retries the whole unit of
work with jittered backoff, so callers write idempotent units. On a SQLite catalog every
statement waits for a busy catalog (``META_BUSY_TIMEOUT``); attaching, opening a session
and every statement of a read-only connection (:class:`ReadRetrying`) retry the locks
SQLite refuses without waiting, so readers do not fail while writers commit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import duckdb

from edge_sync.duck import connect
from edge_sync.private_files import private_dir
from edgeplat.lakehouse_schema import TABLES

log = logging.getLogger(__name__)
T = TypeVar("T")

LAKE = "lake"
# One attached connection per (config, mode, process); see Lakehouse.connect.
_ROOTS: dict[tuple, duckdb.DuckDBPyConnection] = {}
_ROOTS_LOCK = threading.Lock()
_MAX_ROOTS = 8
_SCHEMA_CHECKED: set[tuple] = set()
# Catalog errors that mean "another writer committed first: try the unit again".
_RETRYABLE = ("database is locked", "conflict", "could not serialize", "deadlock", "database is busy")
# How long one SQLite catalog statement waits for another process's lock before failing.
_SQLITE_BUSY_TIMEOUT_MS = 10_000


class LakehouseError(RuntimeError):
    """The lakehouse could not be reached or written; the message says what to fix."""


@dataclass(frozen=True)
class S3Settings:
    """Where and how DuckDB reaches an S3 API endpoint for the lakehouse data."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000; None = AWS
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str = "us-east-1"
    url_style: str = "path"


def redact_catalog(catalog: str) -> str:
    """The catalog string with any password replaced by ``***``, for errors and logs.

    Covers libpq's key/value form (``password=pw``, ``password='a b'`` with ``\\'`` escapes),
    the URI form (``postgresql://user:pw@host/db``) and a ``password`` URI parameter.
    """
    text = re.sub(r"(://[^:/@\s]*:)[^\s]*@", r"\1***@", catalog)
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]+)", r"\1***", text, flags=re.IGNORECASE)


@dataclass(frozen=True, repr=False)
class LakehouseConfig:
    """Catalog and data location.

    ``catalog`` is ``sqlite:<path>`` or ``postgres:<libpq DSN>``; ``data_path`` a folder or
    ``s3://bucket/prefix/``. ``metadata_schema`` isolates several lakehouses in one
    PostgreSQL database (tests use it).
    """

    catalog: str
    data_path: str
    s3: S3Settings | None = None
    metadata_schema: str | None = None
    max_retries: int = 20

    def __repr__(self) -> str:
        return (
            f"LakehouseConfig(catalog={redact_catalog(self.catalog)!r}, data_path={self.data_path!r}, "
            f"s3={self.s3!r}, metadata_schema={self.metadata_schema!r})"
        )

    @property
    def extensions(self) -> tuple[str, ...]:
        exts = ["ducklake"]
        exts.append("postgres_scanner" if self.catalog.startswith("postgres:") else "sqlite_scanner")
        if self.data_path.startswith("s3://"):
            exts.append("httpfs")
        return tuple(exts)

    def validate(self) -> None:
        if not (self.catalog.startswith("sqlite:") or self.catalog.startswith("postgres:")):
            raise LakehouseError(
                f"lakehouse catalog {redact_catalog(self.catalog)!r} is not supported: "
                "use 'sqlite:<path>' or 'postgres:<dsn>'"
            )
        if self.data_path.startswith("s3://") and self.s3 is None:
            raise LakehouseError(f"data path {self.data_path} is on S3 but no S3 settings were given")


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: Iterable[str]) -> str:
    """The distinct ``values`` as a sorted list of SQL strings for ``IN (...)``; NULL (no match) if none."""
    return ", ".join(_sql_str(v) for v in sorted(set(values))) or "NULL"


class Lakehouse:
    """Connections to the lakehouse, schema creation and retried writes."""

    def __init__(self, config: LakehouseConfig) -> None:
        config.validate()
        self.config = config

    # -- connections -------------------------------------------------------------------
    def connect(self, *, read_only: bool = False, fresh: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection with the lakehouse attached as ``lake`` and in use.

        Loading the extensions and attaching the catalog is the slow part (a fraction of a
        second), so by default this is a cursor on one attached connection per process and
        mode: cheap, independent transactions, and it sees other processes' commits.
        ``fresh=True`` gives a connection of its own (its in-memory catalog is private).
        A read-only connection retries a statement that meets a locked catalog (see ReadRetrying).
        """
        if fresh:
            con = self._attach(read_only)
            return ReadRetrying(con) if read_only else con
        key = (self.config, read_only, os.getpid())
        with _ROOTS_LOCK:
            root = _ROOTS.get(key)
            if root is None:
                root = self._attach(read_only)
                _ROOTS[key] = root
                # a bounded cache: a dropped root stays alive only while its cursors do
                while len(_ROOTS) > _MAX_ROOTS:
                    _ROOTS.pop(next(iter(_ROOTS)))
        cursor = root.cursor()
        # USE reads the catalog's latest snapshot, which can meet a lock SQLite will not wait on
        retried(cursor, lambda c: c.execute(f"USE {LAKE}"), what="open a session", transaction=False)
        return ReadRetrying(cursor) if read_only else cursor

    def _attach(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        cfg = self.config
        if not read_only:
            self._make_local_folders()
        con = connect(extensions=cfg.extensions)
        try:
            if cfg.s3 is not None:
                con.execute(self._secret_sql(cfg.s3))
            options = [f"DATA_PATH {_sql_str(cfg.data_path)}"]
            if cfg.metadata_schema:
                options.append(f"METADATA_SCHEMA {_sql_str(cfg.metadata_schema)}")
            if cfg.catalog.startswith("sqlite:"):
                # Not WAL mode: DuckDB's SQLite scanner crashes in it when writers in several
                # processes share the catalog (docs/decisions.md, "SQLite catalog without WAL").
                options.append(f"META_BUSY_TIMEOUT {_SQLITE_BUSY_TIMEOUT_MS}")
            if read_only:
                options.append("READ_ONLY")
            attach = f"ATTACH {_sql_str('ducklake:' + cfg.catalog)} AS {LAKE} ({', '.join(options)})"
            retried(con, lambda c: c.execute(attach), what="attach", transaction=False)
            con.execute(f"USE {LAKE}")
        except duckdb.Error as exc:
            con.close()
            raise LakehouseError(
                f"cannot attach the lakehouse (catalog {self._redacted_catalog()}, data {cfg.data_path}): "
                f"{redact_catalog(str(exc))}"
            ) from exc
        return con

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.connect(read_only=read_only)
        try:
            yield con
        finally:
            con.close()

    def read_only(self, *, fresh: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection for queries: writes through it are refused by DuckDB."""
        return self.connect(read_only=True, fresh=fresh)

    # -- writes ------------------------------------------------------------------------
    def write(self, unit: Callable[[duckdb.DuckDBPyConnection], T], *, what: str = "write") -> T:
        """Run ``unit(con)`` in one transaction, retrying when a concurrent commit collides."""
        with self.session() as con:
            return retried(con, unit, what=what, max_retries=self.config.max_retries)

    # -- schema ------------------------------------------------------------------------
    def ensure_schema(self) -> list[str]:
        """Create missing tables and columns; returns the tables created. Idempotent."""

        def unit(con: duckdb.DuckDBPyConnection) -> list[str]:
            existing = {
                r[0]
                for r in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [LAKE]
                ).fetchall()
            }
            created = []
            for table in TABLES.values():
                if table.name not in existing:
                    con.execute(table.create_sql())
                    if table.partitioned_by:
                        con.execute(table.partition_sql())
                    created.append(table.name)
                    continue
                have = {
                    r[0]
                    for r in con.execute(
                        "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND table_name = ?",
                        [LAKE, table.name],
                    ).fetchall()
                }
                added = [(name, type_) for name, type_ in table.columns if name not in have]
                for name, type_ in added:
                    con.execute(f'ALTER TABLE "{table.name}" ADD COLUMN "{name}" {type_}')
                # A new partition key column (``day``) means the table is still partitioned by
                # transforms of ts: switch it, in the same transaction. DuckLake keeps the files
                # written before under their keys; only new files follow the new ones.
                if {name for name, _ in added} & set(table.partitioned_by):
                    con.execute(table.partition_sql())
            return created

        return self.write(unit, what="schema")

    def ensure_created(self) -> None:
        """Bring the schema up to date once per process (tables and columns added since)."""
        key = (self.config, os.getpid())
        if key not in _SCHEMA_CHECKED:
            self.ensure_schema()
            _SCHEMA_CHECKED.add(key)

    def table_counts(self) -> dict[str, int]:
        with self.session(read_only=True) as con:
            return {name: con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in TABLES}

    # -- helpers -----------------------------------------------------------------------
    def _make_local_folders(self) -> None:
        """A writer creates the local folders it uses: a SQLite catalog's and local data.

        Both hold every tenant's rows, so they are private to this user (0700): DuckDB writes
        its files with the process umask, and a closed folder keeps them unreadable to others.
        """
        if self.config.catalog.startswith("sqlite:"):
            private_dir(Path(self.config.catalog.removeprefix("sqlite:")).parent)
        if "://" not in self.config.data_path:
            private_dir(self.config.data_path, tighten=True)

    @staticmethod
    def _secret_sql(s3: S3Settings) -> str:
        parts = ["TYPE s3", f"REGION {_sql_str(s3.region)}", f"URL_STYLE {_sql_str(s3.url_style)}"]
        if s3.access_key_id:
            parts.append(f"KEY_ID {_sql_str(s3.access_key_id)}")
        if s3.secret_access_key:
            parts.append(f"SECRET {_sql_str(s3.secret_access_key)}")
        if s3.session_token:
            parts.append(f"SESSION_TOKEN {_sql_str(s3.session_token)}")
        if s3.endpoint_url:
            url = urlparse(s3.endpoint_url)
            parts.append(f"ENDPOINT {_sql_str(url.netloc)}")
            parts.append(f"USE_SSL {'true' if url.scheme == 'https' else 'false'}")
        return f"CREATE OR REPLACE SECRET edgeplat_lake_s3 ({', '.join(parts)})"

    def _redacted_catalog(self) -> str:
        # DSNs may carry a password: never echo it into errors or logs.
        return redact_catalog(self.config.catalog)


class ReadRetrying:
    """A read-only connection whose ``execute`` is retried when the catalog is locked.

    Every statement on a DuckLake catalog first reads the latest snapshot. On a SQLite catalog
    that read can meet a lock that SQLite's busy timeout does not cover while another process
    commits ("database is locked": one reader in ten failed under three writers). A failed
    read-only statement had no effect, so running it again is safe. Everything else is the
    wrapped connection's.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def execute(self, query: str, parameters: object = None) -> duckdb.DuckDBPyConnection:
        def run(c: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
            return c.execute(query) if parameters is None else c.execute(query, parameters)

        return retried(self._con, run, what="read", transaction=False)

    def __getattr__(self, name: str) -> object:
        return getattr(self._con, name)

    def __enter__(self) -> ReadRetrying:
        return self

    def __exit__(self, *exc: object) -> None:
        self._con.close()


def retried(
    con: duckdb.DuckDBPyConnection,
    unit: Callable[[duckdb.DuckDBPyConnection], T],
    *,
    what: str,
    max_retries: int = 20,
    transaction: bool = True,
) -> T:
    """Run ``unit(con)`` in one transaction (unless it manages its own), retried whole with
    jittered backoff when a concurrent commit collides; other errors propagate at once."""
    for attempt in range(1, max_retries + 1):
        if transaction:
            con.execute("BEGIN TRANSACTION")
        try:
            result = unit(con)
            if transaction:
                con.execute("COMMIT")
            return result
        except duckdb.Error as exc:
            if transaction:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
            if not is_retryable(exc) or attempt == max_retries:
                raise
            log.info("lakehouse %s collided with another writer (attempt %d): %s", what, attempt, exc)
            time.sleep(min(2.0, 0.02 * 2 ** min(attempt, 7)) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def is_retryable(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, duckdb.TransactionException) or any(k in text for k in _RETRYABLE)
