"""The ingest looks a device's public keys up once per run (not once per batch), and a revocation counts from the next run."""

from __future__ import annotations

from collections import Counter

import pytest

from edgeplat.sync.ingest import ingest_objects
from tests.sync.conftest import Fleet


class CountingRegistry:
    """The fleet's registry, counting ``public_keys`` lookups."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self.calls: Counter = Counter()

    def public_keys(self, tenant_id: str, device_id: str):
        self.calls[(tenant_id, device_id)] += 1
        return self.registry.public_keys(tenant_id, device_id)


@pytest.mark.parametrize("workers", [0, 2])
def test_public_keys_are_looked_up_once_per_device_per_run(fleet: Fleet, workers: int) -> None:
    keys = [
        fleet.upload(fleet.batch("t1", "d1", "telemetry", range(i * 10 + 1, i * 10 + 11))) for i in range(6)
    ]
    keys.append(fleet.upload(fleet.batch("t1", "d2", "telemetry", range(1, 11))))
    env = fleet.env(decode_workers=workers)
    counting = CountingRegistry(fleet.registry)
    env.registry = counting
    if workers:  # each decode thread makes its own registry with the decoder: count those too
        made = []

        def decoder():
            keys_service, registry = fleet.keys, CountingRegistry(fleet.registry)
            made.append(registry)
            return keys_service, registry

        env.decoder = decoder
    rep = ingest_objects(env, keys)
    assert rep.accepted == 7 and not rep.quarantined
    calls = counting.calls if not workers else sum((r.calls for r in made), Counter())
    # once per device per decoding registry (a thread has its own): never once per batch
    assert set(calls) == {("t1", "d1"), ("t1", "d2")}
    assert all(n <= max(1, workers) for n in calls.values()), calls


def test_a_key_revoked_between_runs_is_refused_by_the_next_run(fleet: Fleet) -> None:
    first = fleet.upload(fleet.batch("t1", "d1", "telemetry", range(1, 11)))
    assert ingest_objects(fleet.env(), [first]).accepted == 1
    fleet.registry.revoke("t1", "d1", fleet.device("t1", "d1").key_id)
    late = fleet.upload(fleet.batch("t1", "d1", "telemetry", range(11, 21)))
    assert ingest_objects(fleet.env(), [late]).quarantined == Counter({"unknown_device": 1})
