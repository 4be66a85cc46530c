"""DuckLake maintenance: :func:`compact`, and :func:`compact_isolated` to run it in a child process.

:func:`compact` flushes inlined data, merges small files, expires old snapshots, deletes files
no snapshot needs, and orphans of rolled-back ingests.

DuckLake's maintenance calls crash now and then (native heap corruption, evidence in
docs/decisions.md, "DuckLake maintenance in a child process"), and a native crash takes the
whole process with it: a Dagster run worker, or a test worker.

So :func:`compact_isolated` runs the maintenance in a spawned child, and a crash fails
that attempt only; the next attempt starts a fresh child. Retrying is safe: each
maintenance call commits in one catalog transaction, so a crashed attempt committed either
nothing or all of that call; files it wrote and never registered are orphans that a later
pass's ``ducklake_delete_orphaned_files`` removes.

A child that runs past its timeout is killed and not retried (:class:`CompactionTimedOut`):
what hangs once would likely hang again, and the next scheduled pass tries anew.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection

import duckdb

from edgeplat.lakehouse import LAKE, Lakehouse, LakehouseConfig, LakehouseError, retried

log = logging.getLogger(__name__)

ATTEMPTS = 3
# Longer than a pass over a big backlog of small files should take; the schedule runs every 15 minutes.
TIMEOUT = timedelta(hours=1)


def compact(
    con: duckdb.DuckDBPyConnection, *, keep_snapshots: timedelta = timedelta(days=7)
) -> dict[str, int]:
    """DuckLake maintenance; returns how many rows each call reported (files/snapshots touched)."""
    older = (datetime.now(UTC) - keep_snapshots).strftime("%Y-%m-%d %H:%M:%S+00")
    orphans = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S+00")
    calls = {
        "flush_inlined_data": f"CALL ducklake_flush_inlined_data('{LAKE}')",
        "merge_adjacent_files": f"CALL ducklake_merge_adjacent_files('{LAKE}')",
        "expire_snapshots": f"CALL ducklake_expire_snapshots('{LAKE}', older_than => TIMESTAMPTZ '{older}')",
        "cleanup_old_files": f"CALL ducklake_cleanup_old_files('{LAKE}', older_than => TIMESTAMPTZ '{older}')",
        # files of ingest transactions that rolled back (see edgeplat.lake_files); a day's grace
        # leaves a running ingest's not yet committed files alone
        "delete_orphaned_files": f"CALL ducklake_delete_orphaned_files('{LAKE}', older_than => TIMESTAMPTZ '{orphans}')",
    }
    out = {}
    for name, sql in calls.items():
        out[name] = retried(con, lambda c, s=sql: len(c.execute(s).fetchall()), what=name, transaction=False)
    return out


class CompactionCrashed(LakehouseError):
    """Every attempt's child process died from a signal; the message names it and what to do."""


class CompactionTimedOut(LakehouseError):
    """The maintenance child ran past its timeout and was killed."""


def compact_isolated(
    config: LakehouseConfig,
    *,
    keep_snapshots: timedelta = timedelta(days=7),
    attempts: int = ATTEMPTS,
    timeout: timedelta = TIMEOUT,
    target: Callable[[LakehouseConfig, timedelta], dict[str, int]] | None = None,
) -> dict[str, int]:
    """Run :func:`compact` on ``config``'s lakehouse in a child process, retrying a child that crashed.

    Returns what :func:`compact` returns. An error the maintenance raises (not a crash) is
    raised here as a :class:`LakehouseError` with the child's message, without a retry; a
    child still running after ``timeout`` is killed and :class:`CompactionTimedOut` raised.
    ``target`` replaces the maintenance (tests use it to crash or hang a child on purpose).
    """
    if timeout <= timedelta(0):
        raise ValueError(f"compaction timeout must be positive, got {timeout}")
    ctx = multiprocessing.get_context("spawn")  # not fork: the parent holds DuckDB's threads
    deaths = []
    for attempt in range(1, attempts + 1):
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(
            target=_child,
            args=(send, target or _compact, config, keep_snapshots),
            name="ducklake-maintenance",
            daemon=True,
        )
        child.start()
        send.close()  # so that recv() sees EOF when the child dies
        try:
            if not receive.poll(timeout.total_seconds()):
                child.kill()
                raise CompactionTimedOut(
                    f"DuckLake maintenance ran past its timeout ({timeout}) and its child process was killed. "
                    "Each maintenance call commits whole, so the lakehouse is as the last finished call left it. "
                    "A big backlog of small files can take that long: give it a longer timeout "
                    "(lakehouse_compaction's timeout_minutes), or run it while ingest is quiet."
                )
            outcome = receive.recv()
        except EOFError:
            outcome = None
        finally:
            receive.close()
            child.join()
        if outcome is not None:
            status, value = outcome
            if status == "ok":
                return value
            raise LakehouseError(f"DuckLake maintenance failed: {value}")
        deaths.append(_describe(child.exitcode))
        log.warning("DuckLake maintenance child died (%s), attempt %d of %d", deaths[-1], attempt, attempts)
    raise CompactionCrashed(
        f"DuckLake maintenance crashed in {attempts} child processes in a row ({', '.join(deaths)}). "
        "A crashed attempt leaves the lakehouse as it was; run reconcile_sync again, and if it keeps "
        "crashing, report it to DuckLake with the DuckDB and ducklake extension versions."
    )


def _compact(config: LakehouseConfig, keep_snapshots: timedelta) -> dict[str, int]:
    with Lakehouse(config).session() as con:
        return compact(con, keep_snapshots=keep_snapshots)


def _child(send: Connection, target: Callable, config: LakehouseConfig, keep_snapshots: timedelta) -> None:
    try:
        outcome = ("ok", target(config, keep_snapshots))
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which raises it
        outcome = ("error", f"{type(exc).__name__}: {exc}")
    send.send(outcome)
    send.close()


def _describe(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"
