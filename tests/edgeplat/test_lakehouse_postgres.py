"""The production lakehouse: PostgreSQL catalog, data in an S3 bucket on a moto server."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from edgeplat.lake_files import append_rows
from edgeplat.lakehouse import Lakehouse, LakehouseConfig, S3Settings
from edgeplat.lakehouse_schema import TABLES, utc_day
from tests.support.lake import ingest_rows
from tests.support.moto_server import moto_client
from tests.support.postgres import PG_DSN, fresh_schema

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture
def pg_schema() -> Iterator[str]:
    with fresh_schema() as schema:
        yield schema


@pytest.fixture
def config(pg_schema: str, s3_bucket: tuple[str, str]) -> LakehouseConfig:
    """The production layout: the catalog in a fresh PostgreSQL schema, the data in a fresh bucket."""
    endpoint, bucket = s3_bucket
    return LakehouseConfig(
        catalog=f"postgres:{PG_DSN}",
        data_path=f"s3://{bucket}/lake/",
        metadata_schema=pg_schema,
        s3=S3Settings(endpoint_url=endpoint, access_key_id="testing", secret_access_key="testing"),
    )


def lake_keys(s3_bucket: tuple[str, str]) -> list[str]:
    endpoint, bucket = s3_bucket
    return [
        o["Key"]
        for o in moto_client(endpoint).list_objects_v2(Bucket=bucket, Prefix="lake/").get("Contents", [])
    ]


def test_postgres_catalog_with_s3_data(config: LakehouseConfig, s3_bucket: tuple[str, str]) -> None:
    lake = Lakehouse(config)
    assert "telemetry" in lake.ensure_schema()
    assert lake.ensure_schema() == []
    lake.write(
        lambda con: con.execute(
            "INSERT INTO telemetry (tenant_id, device_id, stream, seq, hlc, node_id, ts, metric, value) "
            "SELECT 'tenant-' || (i % 2), 'd1', 'telemetry', i, i, 'd1', TIMESTAMPTZ '2026-03-04 05:06:07+00', "
            "'cpu', i * 0.5 FROM range(3000) r(i)"
        )
    )
    with lake.session(read_only=True) as con:
        assert con.execute("SELECT count(*), sum(value) FROM telemetry").fetchone() == (
            3000,
            0.5 * sum(range(3000)),
        )
    keys = lake_keys(s3_bucket)
    assert any(k.endswith(".parquet") and "tenant_id=tenant-1" in k for k in keys), keys


def test_ingest_files_are_written_to_s3_and_registered_in_the_transaction(
    config: LakehouseConfig, s3_bucket: tuple[str, str]
) -> None:
    """The ingest's own Parquet files (``lake_files.append_rows``) on the production layout."""
    lake = Lakehouse(config)
    lake.ensure_schema()
    n = 4000
    day_ms = 86_400_000
    ts = pa.array([1_772_000_000_000 + i * (day_ms // 1000) for i in range(n)], pa.timestamp("ms", tz="UTC"))
    rows = ingest_rows([f"tenant-{i % 2}" for i in range(n)], ts, [i * 0.5 for i in range(n)], utc_day(ts))

    def rolled_back(con) -> None:
        append_rows(con, config, TABLES["telemetry"], rows)
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError, match="abort"):
        lake.write(rolled_back)
    written = lake.write(lambda con: append_rows(con, config, TABLES["telemetry"], rows))
    assert written == 2 * 5  # two tenants x the five days the rows span
    with lake.session(read_only=True) as con:
        assert con.execute("SELECT count(*), sum(value), count(DISTINCT day) FROM telemetry").fetchone() == (
            n,
            0.5 * sum(range(n)),
            5,
        )
        pruned = con.execute(
            "EXPLAIN ANALYZE SELECT count(*) FROM telemetry WHERE tenant_id = 'tenant-9'"
        ).fetchall()
        assert "EMPTY_RESULT" in pruned[0][1]  # the partition values are in the catalog: no file read
    keys = lake_keys(s3_bucket)
    ingest_files = [k for k in keys if "/ingest-" in k]
    # the rolled-back attempt's files stay behind unregistered (orphans, removed by compaction)
    assert len(ingest_files) == 2 * written
    assert all(k.startswith("lake/main/telemetry/tenant_id=tenant-") and "/day=" in k for k in ingest_files)
