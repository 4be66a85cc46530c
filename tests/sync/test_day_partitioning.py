"""The stream tables' ``day`` partition key: filled at ingest, and an old-layout lakehouse migrated in place.

Old layout: partitioned by ``year(ts), month(ts), day(ts)`` (DuckLake computed them with ICU on
every insert). New: a ``day DATE`` column (UTC date of ts) and ``(tenant_id, day)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from edge_sync.hlc import pack
from edgeplat import lakehouse_schema
from edgeplat.lakehouse_schema import BY_TENANT_AND_DAY, TABLES, utc_day
from edgeplat.sync.ingest import ingest_objects
from edgeplat.sync.views import create_views
from tests.support.fleet import T0_MS, Fleet

OLD_KEYS = ("tenant_id", "year(ts)", "month(ts)", "day(ts)")
DAY_MS = 86_400_000
START = T0_MS - T0_MS % DAY_MS - 5 * DAY_MS - 3_600_000  # 2026-09-15 23:00 UTC
ROWS = 3000  # more than DuckLake inlines in the catalog: the rows go to Parquet files


def old_layout_tables() -> dict:
    """The schema as it was: stream tables without ``day``, partitioned by the ICU transforms of ts."""
    return {
        name: dataclasses.replace(t, columns=[c for c in t.columns if c[0] != "day"], partitioned_by=OLD_KEYS)
        if t.partitioned_by == BY_TENANT_AND_DAY
        else t
        for name, t in TABLES.items()
    }


def partition_keys(fleet: Fleet, table: str) -> list[tuple[str, str]]:
    """The table's current partition keys, from DuckLake's catalog: [(column, transform)]."""
    meta = "__ducklake_metadata_lake"
    with fleet.lake.session(read_only=True) as con:
        return con.execute(
            f"""
            SELECT c.column_name, pc.transform
            FROM {meta}.ducklake_partition_info pi
            JOIN {meta}.ducklake_partition_column pc USING (partition_id, table_id)
            JOIN {meta}.ducklake_table t ON t.table_id = pi.table_id AND t.end_snapshot IS NULL
            JOIN {meta}.ducklake_column c ON c.table_id = t.table_id AND c.column_id = pc.column_id
                                         AND c.end_snapshot IS NULL
            WHERE t.table_name = ? AND pi.end_snapshot IS NULL
            ORDER BY pc.partition_key_index
            """,
            [table],
        ).fetchall()


def data_files(fleet: Fleet, table: str) -> list[str]:
    base = Path(fleet.lake.config.data_path) / "main" / table
    return sorted(p.relative_to(base).parent.as_posix() for p in base.rglob("*.parquet"))


def upload_span(fleet: Fleet, tenant: str, device: str, first: int, n: int) -> str:
    """``n`` telemetry rows from seq ``first``, one per 50 s from 2026-09-15 23:00 UTC (all before "now")."""
    seqs = range(first, first + n)
    ts = [START + (s - 1) * 50_000 for s in seqs]
    values = {"ts": pa.array(ts, pa.timestamp("ms", tz="UTC")), "hlc": [pack(t, 0) for t in ts]}
    return fleet.upload(fleet.batch(tenant, device, "telemetry", seqs, values=values))


def test_utc_day_is_the_utc_date_whatever_the_unit_zone_or_nulls() -> None:
    ms = [-1, 0, DAY_MS - 1, DAY_MS, None, T0_MS]
    want = pa.array([-1, 0, 0, 1, None, T0_MS // DAY_MS], pa.int32()).cast(pa.date32()).to_pylist()
    for unit, per_ms in (("ms", 1), ("us", 1000), ("ns", 1_000_000)):
        for tz in ("UTC", "America/New_York", "Asia/Tokyo"):
            ts = pa.array([None if v is None else v * per_ms for v in ms], pa.timestamp(unit, tz=tz))
            assert utc_day(ts).to_pylist() == want, (unit, tz)
    chunked = pa.chunked_array([pa.array([0, DAY_MS], pa.timestamp("ms", tz="UTC"))] * 2)
    assert utc_day(chunked).num_chunks == 2 and utc_day(chunked).to_pylist()[1].isoformat() == "1970-01-02"
    secs = pa.array(np.array([-1, 86_400], dtype=np.int64), pa.timestamp("s"))
    assert [d.isoformat() for d in utc_day(secs).to_pylist()] == ["1969-12-31", "1970-01-02"]
    with pytest.raises(TypeError, match="timestamp column"):
        utc_day(pa.array([1, 2]))


def test_ingest_fills_day_and_partitions_new_files_by_tenant_and_day(fleet: Fleet) -> None:
    key = upload_span(fleet, "t1", "d1", 1, ROWS)  # 3000 rows x 50 s: 2026-09-15 23:00 to 09-17 16:40
    rep = ingest_objects(fleet.env(), [key])
    assert rep.rows_new == ROWS
    assert partition_keys(fleet, "telemetry") == [("tenant_id", "identity"), ("day", "identity")]
    wrong = fleet.count(
        "SELECT count(*) FROM telemetry WHERE day IS DISTINCT FROM CAST(timezone('UTC', ts) AS DATE)"
    )
    assert wrong == [(0,)]
    days = [r[0].isoformat() for r in fleet.count("SELECT DISTINCT day FROM telemetry ORDER BY 1")]
    assert days == ["2026-09-15", "2026-09-16", "2026-09-17"]
    dirs = set(data_files(fleet, "telemetry"))
    assert dirs == {f"tenant_id=t1/day={d}" for d in days}, dirs


def test_an_old_layout_lakehouse_gets_day_and_the_new_partitioning_and_keeps_working(
    fleet: Fleet, monkeypatch
) -> None:
    # A lakehouse made by the previous schema, with rows ingested by the previous layout.
    old = fleet.root / "old"
    old.mkdir()
    with monkeypatch.context() as m:
        m.setattr(lakehouse_schema, "TABLES", old_layout_tables())
        m.setattr("edgeplat.lakehouse.TABLES", lakehouse_schema.TABLES)
        m.setattr("edgeplat.sync.ingest.TABLES", lakehouse_schema.TABLES)
        fleet.lake = type(fleet.lake)(
            dataclasses.replace(
                fleet.lake.config, catalog=f"sqlite:{old}/catalog.sqlite", data_path=f"{old}/lake/"
            )
        )
        fleet.lake.ensure_schema()
        first = upload_span(fleet, "t1", "d1", 1, ROWS)
        assert ingest_objects(fleet.env(), [first]).rows_new == ROWS
        assert partition_keys(fleet, "telemetry") == [
            ("tenant_id", "identity"),
            ("ts", "year"),
            ("ts", "month"),
            ("ts", "day"),
        ]
        assert "day" not in {
            r[0]
            for r in fleet.count("SELECT column_name FROM duckdb_columns() WHERE table_name = 'telemetry'")
        }
    old_dirs = set(data_files(fleet, "telemetry"))
    assert all("/year=" in d for d in old_dirs), old_dirs

    # The current code opens it: the schema step adds `day` and switches the partitioning, once.
    assert fleet.lake.ensure_schema() == []
    for table in ("telemetry", "alerts", "logs", "health", "state_edits"):
        assert partition_keys(fleet, table) == [("tenant_id", "identity"), ("day", "identity")], table
    with fleet.lake.session(read_only=True) as con:
        infos = con.execute(
            "SELECT count(*) FROM __ducklake_metadata_lake.ducklake_partition_info"
        ).fetchone()
    assert fleet.lake.ensure_schema() == []
    with fleet.lake.session(read_only=True) as con:
        assert (
            con.execute("SELECT count(*) FROM __ducklake_metadata_lake.ducklake_partition_info").fetchone()
            == infos
        )

    # New rows land in (tenant, day) files; a re-delivery overlapping old rows is still a duplicate
    # (the fingerprint ignores `day`, which old rows lack), not a replay conflict.
    second = upload_span(fleet, "t1", "d1", ROWS + 1, ROWS)
    recut = upload_span(fleet, "t1", "d1", ROWS - 99, 200)
    rep = ingest_objects(fleet.env(), [first, second, recut])
    assert rep.skipped_settled == 1 and rep.rows_new == ROWS and rep.duplicates_dropped == 200
    assert not rep.quarantined
    new_dirs = set(data_files(fleet, "telemetry")) - old_dirs
    assert new_dirs and all(d.startswith("tenant_id=t1/day=") for d in new_dirs), new_dirs
    assert fleet.count("SELECT count(*), count(day), count(DISTINCT seq) FROM telemetry") == [
        (2 * ROWS, ROWS, 2 * ROWS)
    ]
    # Old files stay as they were, readable; their rows have `day` NULL (documented): days are selected by ts.
    assert fleet.count("SELECT count(*) FROM telemetry WHERE day IS NULL AND seq <= ?", [ROWS]) == [(ROWS,)]
    with fleet.lake.session() as con:
        assert "telemetry_hourly" in create_views(con)
    hourly = fleet.count("SELECT sum(samples) FROM telemetry_hourly WHERE tenant_id = 't1'")
    assert hourly == [(2 * ROWS,)]
