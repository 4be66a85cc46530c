"""The ingest looks a device's public keys up once per run (not once per batch), and a revocation counts from the next run."""

from __future__ import annotations

from collections import Counter

import pytest

from edgeplat.sync import decoding
from edgeplat.sync.ingest import ingest_objects
from tests.support.fleet import Fleet


class CountingRegistry:
    """The fleet's registry, counting ``public_keys`` lookups."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self.calls: Counter = Counter()

    def public_keys(self, tenant_id: str, device_id: str):
        self.calls[(tenant_id, device_id)] += 1
        return self.registry.public_keys(tenant_id, device_id)


def _upload_seven(fleet: Fleet) -> list[str]:
    keys = [
        fleet.upload(fleet.batch("t1", "d1", "telemetry", range(i * 10 + 1, i * 10 + 11))) for i in range(6)
    ]
    keys.append(fleet.upload(fleet.batch("t1", "d2", "telemetry", range(1, 11))))
    return keys


@pytest.mark.parametrize("workers", [0, 2])
def test_public_keys_are_looked_up_once_per_device_per_run(fleet: Fleet, workers: int) -> None:
    keys = _upload_seven(fleet)
    env = fleet.env(decode_workers=workers)  # 7 objects: decoded in the ingest's thread either way
    counting = CountingRegistry(fleet.registry)
    env.registry = counting
    rep = ingest_objects(env, keys)
    assert rep.accepted == 7 and not rep.quarantined
    assert counting.calls == Counter({("t1", "d1"): 1, ("t1", "d2"): 1})  # never once per batch


def test_decode_worker_processes_give_the_same_result(fleet: Fleet, monkeypatch) -> None:
    monkeypatch.setattr(decoding, "POOL_MIN_OBJECTS", 2)  # a pool for a handful of objects
    monkeypatch.setattr(decoding, "_GROUP_OBJECTS", 3)  # several tasks, the last one short
    keys = _upload_seven(fleet)
    forged = fleet.upload(fleet.batch("t1", "d3", "telemetry", range(1, 5)))  # d3 is not registered
    fleet.registry.revoke("t1", "d3", fleet.device("t1", "d3").key_id)
    rep = ingest_objects(fleet.env(decode_workers=2), [*keys, forged, "t1/gone.batch"])
    assert (rep.accepted, rep.rows_new, rep.missing) == (7, 70, 1)
    assert rep.quarantined == Counter({"unknown_device": 1})
    assert fleet.count("SELECT count(DISTINCT device_id), count(*) FROM telemetry") == [(2, 70)]


def test_a_key_revoked_between_runs_is_refused_by_the_next_run(fleet: Fleet) -> None:
    first = fleet.upload(fleet.batch("t1", "d1", "telemetry", range(1, 11)))
    assert ingest_objects(fleet.env(), [first]).accepted == 1
    fleet.registry.revoke("t1", "d1", fleet.device("t1", "d1").key_id)
    late = fleet.upload(fleet.batch("t1", "d1", "telemetry", range(11, 21)))
    assert ingest_objects(fleet.env(), [late]).quarantined == Counter({"unknown_device": 1})
