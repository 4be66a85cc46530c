"""Poison objects among good batches: each quarantined with a named reason, the run goes on.

Only a failure of the platform's own services (key service, device registry, store) may fail
a run; nothing an object holds may.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgeplat.sync.decoding import KeyServiceUnavailable
from edgeplat.sync.ingest import ingest_objects, quarantine_reasons
from tests.support import poison
from tests.support.fleet import Fleet, forge

T = "t1"


def _plant(fleet: Fleet) -> dict[str, str]:
    """Every poison object in the store: object key -> the reason it must be quarantined for."""
    planted = {
        poison.object_key(T, "p-empty"): (poison.empty(), "truncated"),
        poison.object_key(T, "p-random"): (poison.random_bytes(), "bad_magic"),
        poison.object_key(T, "p-deep"): (poison.deep_array_manifest(), "bad_manifest"),
        poison.object_key(T, "p-deep-field"): (poison.deep_field_manifest(T, "p-deep-field"), "bad_manifest"),
        poison.object_key(T, "p-huge-payload"): (
            poison.huge_payload_length(T, "p-huge-payload"),
            "truncated",
        ),
        poison.object_key(T, "p-huge-manifest"): (poison.huge_manifest_length(), "oversized_manifest"),
    }
    key, data = _amplification(fleet, "p-amplified")
    planted[key] = (data, "corrupt_payload")
    key, data = forge(fleet, T, "p-row-count", range(1, 11), {"row_count": 11})
    planted[key] = (data, "bad_range")
    for key, (data, _) in planted.items():
        fleet.store.put(key, data)
    return {key: reason for key, (_, reason) in planted.items()}


def _amplification(fleet: Fleet, device: str) -> tuple[str, bytes]:
    """The device signs a tiny payload whose Parquet declares hundreds of millions of rows, and
    a manifest that agrees with it."""
    changes = {"row_count": poison.AMPLIFIED_ROWS}
    return forge(fleet, T, device, range(1, 11), changes, payload=poison.parquet_amplification())


def _good(fleet: Fleet) -> list[str]:
    return [
        fleet.upload(fleet.batch(T, "good", "telemetry", range(1, 21))),
        fleet.upload(fleet.batch(T, "good", "logs", range(1, 6))),
    ]


def test_poison_objects_are_quarantined_and_every_good_row_lands(fleet: Fleet) -> None:
    good = _good(fleet)
    bad = _plant(fleet)

    report = ingest_objects(fleet.env(), [*good, *bad])

    assert report.accepted == len(good)
    assert dict(fleet.count("SELECT object_key, reason FROM quarantine")) == bad
    assert set(bad.values()) <= set(quarantine_reasons())
    assert fleet.count("SELECT count(*) FROM telemetry WHERE device_id = 'good'")[0][0] == 20
    assert fleet.count("SELECT count(*) FROM logs WHERE device_id = 'good'")[0][0] == 5

    before = fleet.snapshot()
    again = ingest_objects(fleet.env(), [*good, *bad])
    assert again.skipped_settled == len(good) + len(bad) and again.accepted == 0
    assert not again.quarantined and fleet.snapshot() == before


class _DownRegistry:
    def public_keys(self, tenant_id: str, device_id: str) -> list:
        raise ConnectionError("registry unreachable")


class _DownStore:
    """The fleet's store, except that reading an object fails as an unreachable S3 would."""

    def __init__(self, store) -> None:
        self._store = store

    def get(self, key: str) -> bytes:
        raise ConnectionError("object store unreachable")

    def __getattr__(self, name: str):
        return getattr(self._store, name)


def test_only_service_failures_fail_the_run(fleet: Fleet) -> None:
    good = _good(fleet)
    bad = _plant(fleet)

    env = fleet.env(key_service_retries=1)
    env.registry = _DownRegistry()
    with pytest.raises(KeyServiceUnavailable, match="infrastructure"):
        ingest_objects(env, [*bad, *good])
    env = fleet.env()
    env.store = _DownStore(fleet.store)
    with pytest.raises(ConnectionError, match="object store unreachable"):
        ingest_objects(env, [*bad, *good])
    assert fleet.count("SELECT count(*) FROM quarantine")[0][0] == 0
    assert fleet.count("SELECT count(*) FROM batches")[0][0] == 0

    # the poison alone never fails a run
    assert sum(ingest_objects(fleet.env(), list(bad)).quarantined.values()) == len(bad)
    assert ingest_objects(fleet.env(), good).accepted == len(good)


_DECODE_ONE = """
import resource, sys
from edge_sync.batch import decode_batches, open_batch
from edge_sync.identity import LocalDeviceRegistry
from edge_sync.keys import LocalKeyring

root, key, path = sys.argv[1:]
data = open(path, "rb").read()
keys, registry = LocalKeyring(root + "/keys"), LocalDeviceRegistry(root + "/devices")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
opened = open_batch(data, key_service=keys, public_keys=registry.public_keys, expected_key=key)
got = decode_batches([opened], [key])
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(got.errors[0].reason, grown // 1024)
"""


def test_parquet_amplification_is_refused_by_the_footer_within_a_memory_bound(
    fleet: Fleet, tmp_path: Path
) -> None:
    assert len(poison.parquet_amplification()) < 2048
    key, data = _amplification(fleet, "p-amplified")
    (tmp_path / "bomb").write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _DECODE_ONE, str(fleet.root), key, str(tmp_path / "bomb")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    reason, grown_mb = done.stdout.split()
    assert reason == "corrupt_payload"
    assert int(grown_mb) < 200, f"decoding grew the peak resident set by {grown_mb} MB"
