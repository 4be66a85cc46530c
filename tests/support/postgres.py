"""A fresh PostgreSQL schema per test on the machine's server (``require_service`` when there is none)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.services import require_service

PG_DSN = os.environ.get("EDGEPLAT_TEST_PG_DSN", "dbname=test host=127.0.0.1 port=5432 user=postgres")


@contextmanager
def fresh_schema(prefix: str = "edgeplat_test") -> Iterator[str]:
    """A schema name nobody uses yet; dropped with everything in it afterwards."""
    try:
        import psycopg2
    except ImportError as exc:
        require_service("PostgreSQL", f"its driver psycopg2 does not import ({exc})")
    try:
        conn = psycopg2.connect(PG_DSN, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        require_service("PostgreSQL", f"nothing answers at '{PG_DSN}': {exc}")
    conn.autocommit = True
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()
