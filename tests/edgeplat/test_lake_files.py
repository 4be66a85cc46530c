"""The ingest's own Parquet files: partitioning, column conformance and registration in DuckLake."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeplat import lake_files
from edgeplat.lake_files import append_rows, conform, partitions
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.lakehouse_schema import TABLES
from tests.support.lake import ingest_rows

DAY = dt.date(2026, 3, 4)


def rows(tenants: list[str], days: list[dt.date]) -> pa.Table:
    ts = pa.array([dt.datetime.combine(d, dt.time(12), dt.UTC) for d in days], pa.timestamp("ms", tz="UTC"))
    return ingest_rows(tenants, ts, [float(i) for i in range(len(tenants))], pa.array(days, pa.date32()))


def test_partitions_group_runs_by_value_and_keep_every_row() -> None:
    d2 = DAY + dt.timedelta(days=1)
    table = rows(["a", "a", "b", "b", "a", "a"], [DAY, d2, DAY, DAY, DAY, d2])
    parts = {values: part["seq"].to_pylist() for values, part in partitions(table, ("tenant_id", "day"))}
    assert parts == {
        ("a", "2026-03-04"): [0, 4],
        ("a", "2026-03-05"): [1, 5],
        ("b", "2026-03-04"): [2, 3],
    }


def test_dictionary_partition_columns_with_a_dictionary_per_chunk() -> None:
    # the ingest's tenant column: dictionary chunks, each decoded group with its own dictionary
    d2 = DAY + dt.timedelta(days=1)
    plain = rows(["a", "a", "b", "b", "a", "c"], [DAY, d2, DAY, DAY, DAY, d2])
    tenant = pa.chunked_array(
        [pa.array(["a", "a", "b"]).dictionary_encode(), pa.array(["b", "a", "c"]).dictionary_encode()]
    )
    coded = plain.set_column(0, "tenant_id", tenant)
    got = {values: part["seq"].to_pylist() for values, part in partitions(coded, ("tenant_id", "day"))}
    assert got == {
        values: part["seq"].to_pylist() for values, part in partitions(plain, ("tenant_id", "day"))
    }
    assert got[("c", "2026-03-05")] == [5]


@pytest.mark.parametrize(
    "last", [DAY + dt.timedelta(days=5), dt.date(9999, 12, 31)], ids=["near", "clock-far-off"]
)
def test_days_partition_whether_close_together_or_far_apart(last: dt.date) -> None:
    # close days are coded as offsets from the first; a clock far off (no code for every day
    # in between) falls back to hashing the values
    table = rows(["a", "a", "a", "b"], [DAY + dt.timedelta(days=2), DAY, last, DAY])
    got = {values: part["seq"].to_pylist() for values, part in partitions(table, ("tenant_id", "day"))}
    assert got == {
        ("a", "2026-03-04"): [1],
        ("a", "2026-03-06"): [0],
        ("a", last.isoformat()): [2],
        ("b", "2026-03-04"): [3],
    }
    assert list(partitions(table.slice(0, 0), ("tenant_id", "day"))) == []


def test_partitions_sort_once_when_values_alternate(monkeypatch) -> None:
    monkeypatch.setattr(lake_files, "_MAX_RUNS", 4)
    table = rows(["a", "b"] * 10, [DAY] * 20)
    parts = dict(partitions(table, ("tenant_id", "day")))
    assert {k: v.num_rows for k, v in parts.items()} == {("a", "2026-03-04"): 10, ("b", "2026-03-04"): 10}
    assert parts[("b", "2026-03-04")]["seq"].to_pylist() == list(range(1, 20, 2))


def test_bad_partition_values_and_missing_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot be a path segment"):
        list(partitions(rows(["a/b"], [DAY]), ("tenant_id",)))
    nulls = rows(["a"], [DAY]).set_column(11, "day", pa.array([None], pa.date32()))
    with pytest.raises(ValueError, match="'day' has nulls"):
        list(partitions(nulls, ("tenant_id", "day")))
    with pytest.raises(ValueError, match=r"lack columns \['value'\]"):
        conform(rows(["a"], [DAY]).drop_columns(["value"]), TABLES["telemetry"])


def test_appended_files_are_read_back_with_the_tables_types(tmp_path) -> None:
    config = LakehouseConfig(catalog=f"sqlite:{tmp_path}/catalog.sqlite", data_path=f"{tmp_path}/data/")
    lake = Lakehouse(config)
    lake.ensure_schema()
    table = rows(["a", "b", "b"], [DAY, DAY, DAY + dt.timedelta(days=1)])
    assert lake.write(lambda con: append_rows(con, config, TABLES["telemetry"], table)) == 3
    with lake.session(read_only=True) as con:
        got = con.execute(
            "SELECT tenant_id, seq, ts, batch_key, day, value FROM telemetry ORDER BY seq"
        ).fetchall()
        types = con.execute(
            "SELECT typeof(ts), typeof(day), typeof(batch_key) FROM telemetry LIMIT 1"
        ).fetchone()
    assert [(r[0], r[1], r[3], r[4].isoformat(), r[5]) for r in got] == [
        ("a", 0, "k", "2026-03-04", 0.0),
        ("b", 1, "k", "2026-03-04", 1.0),
        ("b", 2, "k", "2026-03-05", 2.0),
    ]
    assert got[0][2] == dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
    assert types == ("TIMESTAMP WITH TIME ZONE", "DATE", "VARCHAR")
    files = sorted(
        p.relative_to(tmp_path / "data").parent.as_posix() for p in (tmp_path / "data").rglob("*.parquet")
    )
    assert files == [
        "main/telemetry/tenant_id=a/day=2026-03-04",
        "main/telemetry/tenant_id=b/day=2026-03-04",
        "main/telemetry/tenant_id=b/day=2026-03-05",
    ]


def test_rising_integer_columns_are_delta_encoded_and_read_back_exactly(tmp_path) -> None:
    config = LakehouseConfig(catalog=f"sqlite:{tmp_path}/catalog.sqlite", data_path=f"{tmp_path}/data/")
    lake = Lakehouse(config)
    lake.ensure_schema()
    n = 5_000
    table = rows(["a"] * n, [DAY] * n)
    # rising with gaps, then a second run starting lower (contested rows are appended after the
    # others): deltas of both signs and of large magnitude
    seq = [i * 3 for i in range(n // 2)] + [7 + i for i in range(n - n // 2)]
    hlc = [(1_780_000_000_000 + s) << 16 | (s % 5) for s in seq]
    ts = [dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC) + dt.timedelta(milliseconds=37 * s) for s in seq]
    table = table.set_column(3, "seq", pa.array(seq, pa.int64())).set_column(
        4, "hlc", pa.array(hlc, pa.int64())
    )
    table = table.set_column(6, "ts", pa.array(ts, pa.timestamp("ms", tz="UTC")))
    assert lake.write(lambda con: append_rows(con, config, TABLES["telemetry"], table)) == 1

    (path,) = (tmp_path / "data").rglob("*.parquet")
    meta = pq.ParquetFile(path).metadata
    for rg in range(meta.num_row_groups):
        encodings = {
            meta.schema.column(i).name: meta.row_group(rg).column(i).encodings
            for i in range(meta.num_columns)
        }
        for name in ("seq", "hlc", "ts"):
            assert "DELTA_BINARY_PACKED" in encodings[name], (name, encodings[name])
        assert "DELTA_BINARY_PACKED" not in encodings["value"]
    with lake.session(read_only=True) as con:
        got = con.execute("SELECT seq, hlc, ts FROM telemetry").fetchall()
    assert sorted(got) == sorted(zip(seq, hlc, ts, strict=True))
