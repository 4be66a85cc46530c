"""``settled_keys`` answers by key whatever else the ledger holds; a tick asks it once per key."""

from __future__ import annotations

from pathlib import Path

from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.simulator.settled_store import SettledLayout, fill_ledger
from edgeplat.sync.ledger import DEFERRED_REASON, settled_keys
from edgeplat.sync.queue_arrivals import TickLedger

LAYOUT = SettledLayout(tenants=2, devices_per_tenant=3, batches_per_device=2, rows_per_batch=10)
ACCEPTED = list(LAYOUT.object_keys())
NEW = "tenant=tenant-0/device=dev-00000/stream=telemetry/00000000000000000021-00000000000000000030.batch"
OTHER_TENANT = (
    "tenant=tenant-9/device=dev-00000/stream=telemetry/00000000000000000001-00000000000000000010.batch"
)
PENDING = "tenant=tenant-1/device=dev-00001/stream=telemetry/00000000000000000021-00000000000000000030.batch"
REJECTED = "tenant=tenant-1/device=dev-00002/stream=telemetry/00000000000000000021-00000000000000000030.batch"
MALFORMED = "tenant=tenant-0/not-a-batch.txt"
ARCHIVED = f"archive/{ACCEPTED[0]}"


def ledger(tmp_path: Path) -> Lakehouse:
    lake = Lakehouse(
        LakehouseConfig(catalog=f"sqlite:{tmp_path}/catalog.sqlite", data_path=f"{tmp_path}/lake/")
    )
    lake.ensure_schema()
    fill_ledger(lake, LAYOUT)

    def quarantine(con) -> None:
        for key, reason, deferred in (
            (PENDING, DEFERRED_REASON, True),
            (REJECTED, "bad_signature", False),
            (MALFORMED, "malformed_key", False),
        ):
            con.execute(
                "INSERT INTO quarantine (object_key, reason, detail, quarantined_at, deferred) "
                "VALUES (?, ?, 'test', now(), ?)",
                [key, reason, deferred],
            )
        # a row whose key names no tenant to prune on (as a replay from the archive could write)
        con.execute(
            "INSERT INTO batches (tenant_id, device_id, stream, object_key, ingested_at) "
            "VALUES ('tenant-0', 'dev-00000', 'telemetry', ?, now())",
            [ARCHIVED],
        )

    lake.write(quarantine, what="test quarantine")
    return lake


def test_settled_keys_answers_for_the_asked_keys_only(tmp_path: Path) -> None:
    lake = ledger(tmp_path)
    asked = [ACCEPTED[0], ACCEPTED[-1], NEW, OTHER_TENANT, PENDING, REJECTED]
    with lake.session(read_only=True) as con:
        assert settled_keys(con, asked) == {ACCEPTED[0], ACCEPTED[-1], PENDING, REJECTED}
        assert settled_keys(con, asked, pending_too=False) == {ACCEPTED[0], ACCEPTED[-1], REJECTED}
        # keys that are not batch keys are looked up without the tenant filter
        assert settled_keys(con, [MALFORMED, ARCHIVED, NEW, ACCEPTED[1]]) == {
            MALFORMED,
            ARCHIVED,
            ACCEPTED[1],
        }
        assert settled_keys(con, ACCEPTED + ACCEPTED) == set(ACCEPTED)  # duplicates asked once
        assert settled_keys(con, []) == set()
        assert settled_keys(con, [NEW, OTHER_TENANT]) == set()


def test_a_tick_asks_the_ledger_once_per_key(tmp_path: Path) -> None:
    lake = ledger(tmp_path)
    asked: list[list[str]] = []
    with lake.session(read_only=True) as con:

        def settled(keys: list[str]) -> set[str]:
            asked.append(list(keys))
            return settled_keys(con, keys)

        tick = TickLedger(settled)
        assert tick([ACCEPTED[0], NEW]) == {ACCEPTED[0]}
        assert tick([NEW, ACCEPTED[0], ACCEPTED[1]]) == {ACCEPTED[0], ACCEPTED[1]}
        assert tick([ACCEPTED[1], NEW]) == {ACCEPTED[1]}
    assert asked == [[ACCEPTED[0], NEW], [ACCEPTED[1]]]
    assert tick.calls == 2
