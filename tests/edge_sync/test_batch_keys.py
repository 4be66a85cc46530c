"""Batch object keys: deterministic, parsed back, and nothing else accepted; ids that could leave
their prefix are refused by the key and by the writer."""

from __future__ import annotations

import pytest

from edge_sync.batch_keys import ObjectKey, object_key, parse_object_key
from tests.support.batches import D, T, make_table, write


def test_object_keys_are_deterministic_and_parse_back():
    key = object_key(T, D, "telemetry", 7, 3_579)
    assert (
        key == "tenant=tenant-a/device=dev-1/stream=telemetry/00000000000000000007-00000000000000003579.batch"
    )
    assert key == object_key(T, D, "telemetry", 7, 3_579)
    assert parse_object_key(key) == ObjectKey(T, D, "telemetry", 7, 3_579)
    big = object_key(T, D, "logs", 0, 2**63 - 1)
    assert parse_object_key(big).last_seq == 2**63 - 1


@pytest.mark.parametrize(
    "key",
    [
        "tenant=a/device=b/stream=telemetry/1-2.batch",
        "tenant=a/device=b/stream=telemetry/00000000000000000002-00000000000000000001.batch",
        "tenant=../device=b/stream=telemetry/00000000000000000001-00000000000000000002.batch",
        "tenant=a/device=b/stream=nope/00000000000000000001-00000000000000000002.batch",
        "x/tenant=a/device=b/stream=telemetry/00000000000000000001-00000000000000000002.batch",
        "tenant=a/device=b/stream=telemetry/00000000000000000001-00000000000000000002.batch.tmp",
    ],
)
def test_parse_object_key_rejects_anything_else(key):
    with pytest.raises(ValueError):
        parse_object_key(key)


def test_object_key_rejects_bad_ranges():
    with pytest.raises(ValueError, match="seq range"):
        object_key(T, D, "telemetry", 5, 4)
    with pytest.raises(ValueError, match="seq range"):
        object_key(T, D, "telemetry", -1, 4)
    with pytest.raises(ValueError, match="unknown stream"):
        object_key(T, D, "video", 0, 4)


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "a..b", "a=b", "", ".hidden", "x" * 129, "a b", "a\\b"])
def test_path_traversal_ids_rejected(keyring, ident, bad):
    with pytest.raises(ValueError, match="invalid tenant id"):
        object_key(bad, D, "telemetry", 0, 1)
    with pytest.raises(ValueError, match="invalid device id"):
        object_key(T, bad, "telemetry", 0, 1)
    with pytest.raises(ValueError, match="invalid device id"):
        write(make_table("telemetry"), keyring, ident, device_id=bad)
