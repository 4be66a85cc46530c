"""The lakehouse on the local default (SQLite catalog): schema, concurrency, read-only."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from edgeplat.lakehouse import Lakehouse, LakehouseConfig, LakehouseError
from edgeplat.lakehouse_schema import TABLES

REQUIRED = {
    "devices",
    "telemetry",
    "alerts",
    "logs",
    "device_health",
    "device_state",
    "state_conflicts",
    "batches",
    "quarantine",
    "rollouts",
    "rollout_events",
}


@pytest.fixture
def lake(tmp_path: Path) -> Lakehouse:
    lh = Lakehouse(
        LakehouseConfig(catalog=f"sqlite:{tmp_path}/catalog.sqlite", data_path=f"{tmp_path}/data/")
    )
    lh.ensure_schema()
    return lh


def columns(lake: Lakehouse, table: str) -> set[str]:
    with lake.session(read_only=True) as con:
        return {r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()}


def all_columns(lake: Lakehouse) -> dict[str, set[str]]:
    with lake.session(read_only=True) as con:
        return {name: {r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall()} for name in TABLES}


def test_schema_has_the_contract_tables_and_columns(lake: Lakehouse) -> None:
    assert REQUIRED <= set(TABLES)
    cols = all_columns(lake)
    for name in TABLES:
        assert "tenant_id" in cols[name], name
    for stream_table in ("telemetry", "alerts", "logs", "health"):
        assert {"device_id", "stream", "seq", "hlc", "ts", "node_id"} <= cols[stream_table]
    assert {"metric", "value"} <= cols["telemetry"]


def test_schema_creation_is_idempotent_and_adds_new_columns(lake: Lakehouse, monkeypatch) -> None:
    assert lake.ensure_schema() == []
    from edgeplat import lakehouse_schema

    t = TABLES["devices"]
    monkeypatch.setitem(
        lakehouse_schema.TABLES,
        "devices",
        type(t)(t.name, t.columns + [("firmware", "VARCHAR")], t.partitioned_by),
    )
    assert lake.ensure_schema() == []
    assert "firmware" in columns(lake, "devices")


def test_stream_tables_are_partitioned_by_tenant_and_day(lake: Lakehouse, tmp_path: Path) -> None:
    # Enough rows that DuckLake writes Parquet files instead of inlining them in the catalog.
    lake.write(
        lambda con: con.execute(
            "INSERT INTO telemetry (tenant_id, device_id, stream, seq, hlc, node_id, ts, metric, value, day) "
            "SELECT 't1', 'd1', 'telemetry', i, i, 'd1', TIMESTAMPTZ '2026-01-02 03:04:05+00', 'cpu', 1.0, "
            "DATE '2026-01-02' FROM range(5000) r(i)"
        )
    )
    files = [p.relative_to(tmp_path / "data").as_posix() for p in (tmp_path / "data").rglob("*.parquet")]
    # (tenant_id, day): `day` is the UTC date of ts, filled by the writer (see lakehouse_schema)
    assert any("tenant_id=t1/day=2026-01-02/" in f for f in files), files


def test_read_only_connection_refuses_writes(lake: Lakehouse) -> None:
    con = lake.read_only()
    try:
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("INSERT INTO devices (tenant_id, device_id) VALUES ('t', 'd')")
    finally:
        con.close()


def test_bad_catalog_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LakehouseError, match="use 'sqlite:<path>' or 'postgres:<dsn>'"):
        Lakehouse(LakehouseConfig(catalog=f"{tmp_path}/x.sqlite", data_path=str(tmp_path)))


def test_write_retries_a_commit_conflict(lake: Lakehouse) -> None:
    calls = []

    def unit(con):
        calls.append(1)
        if len(calls) < 3:
            raise duckdb.TransactionException("Failed to commit DuckLake transaction: database is locked")
        con.execute("INSERT INTO devices (tenant_id, device_id) VALUES ('t', 'd')")
        return "done"

    assert lake.write(unit) == "done"
    assert len(calls) == 3
    assert lake.table_counts()["devices"] == 1


def test_write_does_not_retry_a_real_error(lake: Lakehouse) -> None:
    calls = []

    def unit(con):
        calls.append(1)
        con.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(duckdb.CatalogException):
        lake.write(unit)
    assert len(calls) == 1


@pytest.mark.slow
def test_several_processes_write_and_read_at_once(lake: Lakehouse, tmp_path: Path) -> None:
    # Two readers opening 30 sessions each against three writers: before read-only statements
    # were retried on a locked catalog, about one reader process in three failed with
    # "database is locked".
    catalog, data = lake.config.catalog, lake.config.data_path
    worker = str(Path(__file__).with_name("lakehouse_worker.py"))

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, worker, args[0], catalog, data, *args[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    procs = [start("write", str(w), "15") for w in range(3)] + [start("read", "r", "30") for _ in range(2)]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert [o["wrote"] for o in outputs[:3]] == [15, 15, 15]
    for reader in outputs[3:]:
        seen = reader["seen"]
        assert seen == sorted(seen) and all(0 <= n <= 45 for n in seen)  # committed snapshots only
    with lake.session(read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT device_id) FROM devices").fetchone() == (45, 45)


def test_a_read_waits_out_a_locked_catalog(lake: Lakehouse) -> None:
    # another process in the middle of a commit holds the SQLite catalog exclusively for a while
    path = lake.config.catalog.removeprefix("sqlite:")
    locker = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.0, lambda: locker.execute("COMMIT"))
    release.start()
    try:
        with lake.session(read_only=True) as con:
            assert con.execute("SELECT count(*) FROM devices").fetchone() == (0,)
    finally:
        release.join()
        locker.close()
