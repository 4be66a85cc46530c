"""Settled objects leave the hot prefix: archived, never re-ingested, replayed exactly once on demand."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg
import pytest

from edge_sync.batch_keys import parse_object_key
from edge_sync.identity import LocalDeviceRegistry
from edge_sync.objectstore import ListPage, ObjectInfo, ObjectStore, StoreUnavailable
from edge_sync.objectstore_s3 import S3ObjectStore
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.sync.archive import (
    ARCHIVE_PREFIX,
    QUARANTINE_ARCHIVE_PREFIX,
    ReplayRange,
    archive_settled,
    replay_archive,
)
from edgeplat.sync.arrivals import ArrivalCursor, plan_arrivals
from edgeplat.sync.ingest import ingest_objects
from edgeplat.sync.ledger import settled_keys
from edgeplat.sync.reconcile import reconcile
from tests.support.cli import cli
from tests.support.fleet import STREAM_TABLES, T0_MS, Fleet
from tests.support.moto_server import MOTO_CREDENTIALS, moto_client

DAY_MS = 86_400_000
T = "t1"
# what reconciliation may change on its own (offline marking): left out of the comparisons
DATA_TABLES = tuple(t for t in STREAM_TABLES if t != "devices")


@dataclass
class Uploaded:
    ingested: list[str]
    quarantined: str
    deferred: str


def settle(fleet: Fleet) -> Uploaded:
    """Two devices' batches ingested, one quarantined, one deferred (clock a month ahead)."""
    up = fleet.upload
    ingested = [
        up(fleet.batch(T, "d1", "telemetry", range(1, 11))),
        up(fleet.batch(T, "d1", "telemetry", range(11, 21))),
        up(fleet.batch(T, "d1", "health", range(1, 4))),
        up(fleet.batch(T, "d1", "state", range(1, 4))),
        up(fleet.batch(T, "d2", "telemetry", range(1, 6))),
    ]
    b = fleet.batch(T, "d3", "telemetry", range(1, 5))
    bad = up(b, data=b.data[:-1] + bytes([b.data[-1] ^ 1]))
    deferred = up(fleet.batch(T, "d4", "telemetry", range(1, 4), base_ms=T0_MS + 30 * DAY_MS))
    report = ingest_objects(fleet.env(), [*ingested, bad, deferred])
    assert report.accepted == 5 and sum(report.quarantined.values()) == 2
    return Uploaded(ingested, bad, deferred)


def hot_keys(fleet: Fleet) -> list[str]:
    return [o.key for o in fleet.store.list("tenant=").objects if o.key.endswith(".batch")]


def archived(fleet: Fleet) -> list[str]:
    return [o.key for o in fleet.store.list(ARCHIVE_PREFIX).objects]


def tables(fleet: Fleet) -> dict[str, list]:
    snap = fleet.snapshot()
    return {t: snap[t] for t in DATA_TABLES}


def test_archived_objects_are_never_listed_or_reingested_by_reconciliation(fleet: Fleet) -> None:
    u = settle(fleet)
    env = fleet.env()
    before = tables(fleet)

    fleet.clock.ms += 3_600_000  # within the retention: nothing moves
    rep = archive_settled(env, archive_after=timedelta(hours=72))
    assert rep.as_dict() | {"listed": 7, "recent": 6, "unsettled": 1} == rep.as_dict()
    assert rep.moved == {"ingested": 0, "quarantined": 0} and archived(fleet) == []

    fleet.clock.ms += 72 * 3_600_000
    rep = archive_settled(env, archive_after=timedelta(hours=72))
    assert rep.moved == {"ingested": 5, "quarantined": 1} and rep.unsettled == 1
    assert hot_keys(fleet) == [u.deferred]  # pending deferred batches stay for reconciliation
    assert sorted(archived(fleet)) == sorted(
        [ARCHIVE_PREFIX + k for k in u.ingested] + [QUARANTINE_ARCHIVE_PREFIX + u.quarantined]
    )
    for key in archived(fleet):  # the archive prefix never parses as a hot batch key
        with pytest.raises(ValueError, match="not a batch object key"):
            parse_object_key(key)
    assert ingest_objects(env, archived(fleet)).objects == 0  # however an archive key reaches the ingest
    assert fleet.count("SELECT settled, count(*) FROM archived_batches GROUP BY ALL ORDER BY 1") == [
        ("ingested", 5),
        ("quarantined", 1),
    ]

    # the arrival listing and the reconciliation see only the hot prefix
    with fleet.lake.session(read_only=True) as con:
        plan = plan_arrivals(fleet.store, ArrivalCursor(), settled=lambda keys: settled_keys(con, keys))
    assert (plan.listed, plan.runs) == (1, [])
    rec = reconcile(env, compaction=False)
    assert rec.listed == 1 and rec.missed.objects == 0 and rec.missed.accepted == 0
    assert tables(fleet) == before

    # a device re-uploads an archived batch (re-cut after a crash): settled, so skipped, then archived
    again = fleet.store.get(ARCHIVE_PREFIX + u.ingested[0])
    fleet.store.put(u.ingested[0], again)
    rec = reconcile(env, compaction=False)
    assert rec.listed == 2 and rec.missed.objects == 0 and tables(fleet) == before
    rep = archive_settled(env, archive_after=timedelta(hours=72))
    assert rep.resumed == 1 and hot_keys(fleet) == [u.deferred]
    assert fleet.count("SELECT count(*) FROM archived_batches")[0][0] == 6


@pytest.mark.slow
def test_replay_restores_lost_rows_once_and_adds_nothing_to_an_intact_lakehouse(
    fleet: Fleet, tmp_path
) -> None:
    u = settle(fleet)
    env = fleet.env()
    fleet.clock.ms += 73 * 3_600_000
    archive_settled(env, archive_after=timedelta(hours=72))
    recent = fleet.upload(fleet.batch(T, "d1", "telemetry", range(21, 31)))  # within the retention: hot
    assert ingest_objects(env, [recent]).rows_new == 10
    before = tables(fleet)

    # intact lakehouse: every row is there already, nothing is added
    rep = replay_archive(env, ReplayRange(T, "d1"))
    assert (rep.archived, rep.hot, rep.ingest.accepted) == (4, 1, 5)
    assert rep.ingest.rows_new == 0 and rep.ingest.duplicates_dropped == rep.ingest.rows_in == 36
    assert tables(fleet) == before

    # rows lost from a table: the range's batches, archived and hot, restore exactly them
    with fleet.lake.session() as con:
        con.execute("DELETE FROM telemetry WHERE device_id = 'd1' AND seq BETWEEN 5 AND 25")
    assert fleet.count("SELECT count(*) FROM telemetry WHERE device_id = 'd1'")[0][0] == 9
    rep = replay_archive(env, ReplayRange(T, "d1", "telemetry", from_seq=5, to_seq=25))
    assert (rep.archived, rep.hot, rep.ingest.rows_new, rep.ingest.replay_mismatches) == (2, 1, 21, 0)
    assert tables(fleet) == before
    assert replay_archive(env, ReplayRange(T, "d1", "telemetry", 5, 25)).ingest.rows_new == 0
    assert tables(fleet) == before

    assert replay_archive(env, ReplayRange(T, "d1", "telemetry", 12, 20)).found == 1
    assert replay_archive(env, ReplayRange(T, "d9")).found == 0
    with pytest.raises(ValueError, match="from-seq <= to-seq"):
        ReplayRange(T, "d1", "telemetry", 9, 3)

    # a fresh lakehouse: replaying every device rebuilds the tables and the ledger
    fresh = Lakehouse(
        LakehouseConfig(catalog=f"sqlite:{tmp_path}/fresh.sqlite", data_path=f"{tmp_path}/fresh/")
    )
    fresh.ensure_schema()
    fleet.lake = fresh
    env = fleet.env()
    for device in ("d1", "d2"):
        replay_archive(env, ReplayRange(T, device))
    got = tables(fleet)
    for table in ("telemetry", "health", "state_edits", "device_state"):
        assert got[table] == before[table], table
    assert fleet.count("SELECT count(*) FROM batches")[0][0] == 6
    assert fleet.count("SELECT count(*) FROM archived_batches")[0][0] == 5
    assert replay_archive(env, ReplayRange(T, "d1")).ingest.rows_new == 0
    assert fleet.count("SELECT count(*) FROM batches")[0][0] == 6
    assert u.quarantined not in {k for (k,) in fleet.count("SELECT object_key FROM batches")}


class FailingStore(ObjectStore):
    """The fleet's store, failing one operation after ``after`` successful calls of it (a crash)."""

    def __init__(self, store: ObjectStore, op: str, after: int) -> None:
        self.store, self.op, self.left = store, op, after
        self.url = store.url

    def _maybe_fail(self, op: str) -> None:
        if op == self.op:
            if self.left == 0:
                raise StoreUnavailable(f"{op} failed (simulated crash)")
            self.left -= 1

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._maybe_fail("put_if_absent")
        return self.store.put_if_absent(key, data)

    def put(self, key: str, data: bytes) -> None:
        self.store.put(key, data)

    def get(self, key: str) -> bytes:
        return self.store.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        return self.store.head(key)

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ListPage:
        return self.store.list(prefix, after=after, limit=limit)

    def delete(self, key: str) -> None:
        self._maybe_fail("delete")
        self.store.delete(key)


@pytest.mark.parametrize("op", ["put_if_absent", "delete"])
def test_a_crash_between_copy_and_delete_loses_nothing_and_ingests_nothing_twice(
    fleet: Fleet, op: str
) -> None:
    u = settle(fleet)
    fleet.clock.ms += 73 * 3_600_000
    before = tables(fleet)
    env = fleet.env()
    crashing = fleet.env()
    crashing.store = FailingStore(fleet.store, op, after=2)
    with pytest.raises(StoreUnavailable, match="simulated crash"):
        archive_settled(crashing, archive_after=timedelta(hours=72))
    # each settled object is hot, archived, or both; a delete only follows the record
    hot = set(hot_keys(fleet))
    copies = {k.removeprefix(QUARANTINE_ARCHIVE_PREFIX).removeprefix(ARCHIVE_PREFIX) for k in archived(fleet)}
    assert {*u.ingested, u.quarantined} <= hot | copies and u.deferred in hot
    recorded = {k for (k,) in fleet.count("SELECT object_key FROM archived_batches")}
    assert recorded <= copies and not (set(u.ingested) - hot) - recorded
    assert (len(hot), len(copies), len(recorded)) == ((7, 2, 0) if op == "put_if_absent" else (5, 6, 6))

    rec = reconcile(env, compaction=False)
    assert rec.missed.objects == 0 and tables(fleet) == before

    rep = archive_settled(env, archive_after=timedelta(hours=72))
    assert (rep.resumed, sum(rep.moved.values())) == ((2, 6) if op == "put_if_absent" else (4, 4))
    assert hot_keys(fleet) == [u.deferred] and len(archived(fleet)) == 6
    assert fleet.count("SELECT count(*), count(DISTINCT object_key) FROM archived_batches")[0] == (6, 6)
    assert tables(fleet) == before
    assert replay_archive(env, ReplayRange(T, "d2")).ingest.rows_new == 0


def test_the_archive_schedule_config_fits_the_job() -> None:
    from pipelines.jobs import archive_settled
    from pipelines.schedules import archive_settled_hourly

    request = archive_settled_hourly.evaluate_tick(dg.build_schedule_context()).run_requests[0]
    assert dg.validate_run_config(archive_settled, request.run_config)
    config = request.run_config["ops"]["archive_settled_objects"]["config"]
    assert config["archive_after_h"] == 72


@pytest.mark.slow
def test_cli_archives_and_replays_through_the_jobs(tmp_path) -> None:
    home = tmp_path / "home"
    fleet = Fleet(home)  # the fleet writes where the local environment reads (edgeplat.settings.paths)
    fleet.registry = LocalDeviceRegistry(home / "devices" / "registry")
    fleet.lake = Lakehouse(
        LakehouseConfig(
            catalog=f"sqlite:{home}/lakehouse/catalog.sqlite", data_path=f"{home}/lakehouse/data/"
        )
    )
    fleet.lake.ensure_schema()
    u = settle(fleet)

    out = json.loads(cli("sync", "archive", "--after-hours", "0", "--json", home=home).stdout)
    assert (out["moved_ingested"], out["moved_quarantined"], out["unsettled"]) == (5, 1, 1)
    assert hot_keys(fleet) == [u.deferred]
    with fleet.lake.session() as con:
        con.execute("DELETE FROM telemetry WHERE device_id = 'd2'")

    out = json.loads(cli("sync", "replay", "--tenant", T, "--device", "d2", "--json", home=home).stdout)
    assert (out["archived"], out["hot"], out["rows_new"], out["duplicates_dropped"]) == (1, 0, 5, 0)
    assert fleet.count("SELECT count(*), count(DISTINCT seq) FROM telemetry WHERE device_id = 'd2'")[0] == (
        5,
        5,
    )

    missing = cli("sync", "replay", "--tenant", T, "--device", "nobody", home=home, check=False)
    assert missing.returncode == 2 and "no batches of t1/nobody/*" in missing.stderr


@pytest.mark.services
def test_archive_and_replay_on_s3(fleet: Fleet, s3_bucket) -> None:
    endpoint, bucket = s3_bucket
    creds = {
        "access_key_id": MOTO_CREDENTIALS["aws_access_key_id"],
        "secret_access_key": MOTO_CREDENTIALS["aws_secret_access_key"],
    }
    fleet.store = S3ObjectStore(bucket, "fleet", endpoint_url=endpoint, **creds)
    u = settle(fleet)
    env = fleet.env()
    fleet.clock.ms += 73 * 3_600_000
    assert archive_settled(env, archive_after=timedelta(hours=72)).moved == {"ingested": 5, "quarantined": 1}
    client = moto_client(endpoint)
    stored = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    client.close()
    assert stored == {f"fleet/{ARCHIVE_PREFIX}{k}" for k in u.ingested} | {
        f"fleet/{QUARANTINE_ARCHIVE_PREFIX}{u.quarantined}",
        f"fleet/{u.deferred}",
    }
    assert reconcile(env, compaction=False).listed == 1
    with fleet.lake.session() as con:
        con.execute("DELETE FROM telemetry WHERE device_id = 'd1' AND seq > 10")
    rep = replay_archive(env, ReplayRange(T, "d1", "telemetry"))
    assert (rep.archived, rep.ingest.rows_new, rep.ingest.duplicates_dropped) == (2, 10, 10)
    assert fleet.count("SELECT count(*), count(DISTINCT seq) FROM telemetry WHERE device_id = 'd1'")[0] == (
        20,
        20,
    )
