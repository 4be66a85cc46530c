"""Retried units of work on one open lakehouse connection.

``Lakehouse.write`` opens a fresh connection per unit, and attaching the lakehouse costs
about a second on a loaded machine (extension loads, catalog attach). A sync step runs
several units, so it opens one connection and runs each unit here with the same
semantics: one transaction, retried whole when a concurrent commit collides.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import duckdb

from edgeplat.lakehouse import is_retryable

log = logging.getLogger(__name__)
T = TypeVar("T")


def retried(con: duckdb.DuckDBPyConnection, unit: Callable[[duckdb.DuckDBPyConnection], T], *,
            what: str, max_retries: int = 20, transaction: bool = True) -> T:
    """Run ``unit(con)`` in one transaction (unless it manages its own), retrying on commit collisions."""
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
