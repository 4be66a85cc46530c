"""Every quarantine reason from a real crafted object, with good batches ingested in the same run."""

from __future__ import annotations

from edge_sync.keys import LocalKeyring
from edgeplat.sync.ingest import ingest_objects
from tests.support.batches import OtherTenantKeys
from tests.support.fleet import Fleet, forge


def test_each_reason_is_quarantined_and_good_batches_beside_it_are_ingested(fleet: Fleet, tmp_path) -> None:
    t, up = "t1", fleet.upload
    good = [
        up(fleet.batch(t, "good", "telemetry", range(1, 21))),
        up(fleet.batch(t, "good", "logs", range(1, 6))),
    ]
    bad: dict[str, str] = {}

    b = fleet.batch(t, "d1", "telemetry", range(1, 11))
    bad["bad_signature"] = up(b, data=b.data[:-1] + bytes([b.data[-1] ^ 1]))
    b = fleet.batch(t, "d1", "telemetry", range(11, 21))
    bad["truncated"] = up(b, data=b.data[:-100])
    stranger = fleet.batch(t, "stranger", "telemetry", range(1, 5))
    fleet.registry.revoke(t, "stranger", fleet.device(t, "stranger").key_id)
    bad["unknown_device"] = up(stranger)
    cross = fleet.batch(t, "d2", "telemetry", range(1, 5), key_service=OtherTenantKeys(fleet.keys, "t-other"))
    bad["tenant_mismatch"] = up(cross)
    other = fleet.batch(t, "d3", "telemetry", range(1, 5), key_service=LocalKeyring(tmp_path / "elsewhere"))
    bad["decryption_failure"] = up(other)
    key, data = forge(fleet, t, "d4", range(1, 5), {"plaintext_sha256": "0" * 64})
    bad["hash_mismatch"] = up(None, key=key, data=data)
    key, data = forge(fleet, t, "d5", range(1, 5), {"schema_fingerprint": "0123456789abcdef"})
    bad["unknown_schema"] = up(None, key=key, data=data)
    moved = fleet.batch(t, "d6", "telemetry", range(1, 5))
    bad["path_mismatch"] = up(moved, key=moved.key.replace("device=d6", "device=d7"))
    # the same seqs again with different content: a replay of a different object for a known range
    up(fleet.batch(t, "d8", "telemetry", range(1, 11)))
    ingest_objects(fleet.env(), [fleet.batch(t, "d8", "telemetry", range(1, 11)).key])
    bad["replay_conflict"] = up(fleet.batch(t, "d8", "telemetry", range(5, 13), salt="x"))
    ahead = fleet.batch(t, "d9", "telemetry", range(1, 5), base_ms=fleet.clock.ms + 86_400_000)
    bad["hlc_too_far_ahead"] = up(ahead)

    report = ingest_objects(fleet.env(), [*good, *bad.values()])

    assert dict(report.quarantined) == {reason: 1 for reason in bad}
    got = dict(fleet.count("SELECT object_key, reason FROM quarantine"))
    assert got == {key: reason for reason, key in bad.items()}
    assert fleet.count("SELECT count(*) FROM quarantine WHERE deferred")[0][0] == 1
    assert fleet.count("SELECT count(*) FROM telemetry WHERE device_id = 'good'")[0][0] == 20
    assert fleet.count("SELECT count(*) FROM logs WHERE device_id = 'good'")[0][0] == 5
    # nothing of a rejected object reached the tables; the replayed range keeps its first content
    assert (
        fleet.count("SELECT count(*) FROM telemetry WHERE device_id <> 'good' AND device_id <> 'd8'")[0][0]
        == 0
    )
    assert fleet.count("SELECT count(*), max(seq) FROM telemetry WHERE device_id = 'd8'")[0] == (10, 10)
    assert sorted(r[0] for r in fleet.count("SELECT object_key FROM batches")) == sorted(
        [*good, fleet.batch(t, "d8", "telemetry", range(1, 11)).key]
    )

    # a second run of the same objects changes nothing
    before = fleet.snapshot()
    again = ingest_objects(fleet.env(), [*good, *bad.values()])
    assert again.skipped_settled == len(good) + len(bad) and fleet.snapshot() == before


def test_key_service_outage_is_retried_then_fails_the_run_without_quarantine(fleet: Fleet) -> None:
    import pytest

    from edgeplat.sync.decoding import KeyServiceUnavailable

    key = fleet.upload(fleet.batch("t1", "d1", "telemetry", range(1, 5)))

    class Down:
        calls = 0

        def generate_data_key(self, tenant_id):  # pragma: no cover
            raise AssertionError

        def unwrap(self, tenant_id, key_id, wrapped):
            Down.calls += 1
            raise ConnectionError("vault unreachable")

    env = fleet.env(key_service_retries=1)
    env.key_service = Down()
    with pytest.raises(KeyServiceUnavailable, match="infrastructure"):
        ingest_objects(env, [key])
    assert Down.calls == 2
    assert fleet.count("SELECT count(*) FROM quarantine")[0][0] == 0
    assert ingest_objects(fleet.env(), [key]).accepted == 1
