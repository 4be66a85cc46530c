"""Batches of agents from before a stream gained columns still read: the new columns are null.

The health stream gained ``update_state``, ``update_version`` and ``update_reason`` (the slot
installer's steps). An agent not yet upgraded keeps uploading health batches under the old
schema's fingerprint; the central side reads them instead of quarantining them."""

from __future__ import annotations

import pyarrow as pa
import pytest

import edge_sync.batch as batch_module
from edge_sync.batch import decode_batches, open_batch
from edge_sync.streams import STREAMS, StreamSpec
from tests.support.batches import assert_identical, make_table, read, reason_of, write

HEALTH = STREAMS["health"]
OLD = StreamSpec(
    "health",
    pa.schema([f for f in HEALTH.payload if f.name not in HEALTH.added]),
    priority=HEALTH.priority,
    ttl_seconds=HEALTH.ttl_seconds,
    group_by=HEALTH.group_by,
)


@pytest.fixture
def old_batch(keyring, ident, monkeypatch):
    """A health batch exactly as an agent from before ``added`` wrote it."""
    table = make_table("health").select(OLD.schema.names)
    with monkeypatch.context() as m:
        m.setattr(batch_module, "get_stream", lambda name: OLD)
        encoded = write(table, keyring, ident, stream="health")
    return table, encoded


def test_old_health_batch_reads_with_null_new_columns(old_batch, keyring, ident):
    table, encoded = old_batch
    assert encoded.manifest.schema_fingerprint == HEALTH.legacy_fingerprint != HEALTH.fingerprint
    got = read(encoded.data, keyring, ident).table
    assert got.schema == HEALTH.schema
    assert_identical(got.select(OLD.schema.names), table)
    for name in HEALTH.added:
        assert got.column(name).null_count == got.num_rows


def test_central_decode_mixes_old_and_new_batches(old_batch, keyring, ident):
    _, old = old_batch
    new = write(make_table("health", first_seq=1000), keyring, ident, stream="health")
    opened = [
        open_batch(b.data, key_service=keyring, public_keys=[ident.public_key_bytes()]) for b in (old, new)
    ]
    decoded = decode_batches(opened, [None, None])
    assert decoded.errors == {} and list(decoded.counts) == [23, 23]
    states = decoded.table.column("update_state").to_pylist()
    assert (
        states[:23] == [None] * 23
        and states[23:] == make_table("health", first_seq=1000).column("update_state").to_pylist()
    )


def test_an_unknown_schema_is_still_refused(keyring, ident, monkeypatch):
    other = StreamSpec("health", pa.schema([pa.field("version", pa.string())]), priority=30, ttl_seconds=None)
    monkeypatch.setattr(batch_module, "get_stream", lambda name: other)
    encoded = write(make_table("health").select(other.schema.names), keyring, ident, stream="health")
    monkeypatch.undo()

    assert reason_of(encoded.data, keyring, ident) == "unknown_schema"
