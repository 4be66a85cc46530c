"""Batch format (v2, and v1 still read): round trips of every stream, evictions, the manifest, and
the writer's checks of its input. Refusals: test_batch_refusals.py; object keys: test_batch_keys.py."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_sync import batch as batch_mod
from edge_sync.batch import FORMAT_VERSION, MAGIC, read_batch, read_manifest
from edge_sync.batch_keys import object_key
from edge_sync.batch_manifest import Manifest
from edge_sync.identity import DeviceIdentity, canonical_json
from edge_sync.streams import STREAMS, get_stream
from edgeplat.simulator import SimulationConfig
from edgeplat.simulator.vectorized import device_hour_batches
from tests.support.batches import D, T, assert_identical, make_table, read, write


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_round_trip_every_stream_with_nulls_unicode_and_empty_strings(stream, keyring, ident):
    table = make_table(stream)
    enc = write(table, keyring, ident, stream=stream)
    dec = read(enc.data, keyring, ident, expected_key=enc.key)
    assert_identical(dec.table, table)
    m = dec.manifest
    assert (m.tenant_id, m.device_id, m.stream) == (T, D, stream)
    assert (m.first_seq, m.last_seq, m.row_count) == (100, 144, 23)
    assert (m.hlc_min, m.hlc_max) == (pc.min(table["hlc"]).as_py(), pc.max(table["hlc"]).as_py())
    assert m.schema_fingerprint == get_stream(stream).fingerprint
    assert enc.key == object_key(T, D, stream, 100, 144)


def test_a_device_hour_of_realistic_telemetry_round_trips_bit_for_bit_and_within_budget(keyring):
    """The simulator's telemetry model (quantized drifting sensors, counters, jittered sampling):
    bench_batch_size measures the same budget on the shared reference yardstick."""
    identities: dict[str, DeviceIdentity] = {}
    config = SimulationConfig(devices=1, tenants=1, hours=1, seed=3)
    (vb,) = device_hour_batches(config, keyring, streams=("telemetry",), identities=identities)
    public_key = identities[vb.device.device_id].public_key_bytes()
    dec = read_batch(vb.batch.data, key_service=keyring, public_keys=[public_key], expected_key=vb.batch.key)
    assert vb.table.num_rows > 1000
    assert_identical(dec.table, vb.table)
    # the encoding budget: < 4.4 B/row uploaded (bench/bench_batch_size.py also measures the ratios)
    assert len(vb.batch.data) / vb.table.num_rows < 4.4


def test_node_id_other_than_device_and_column_order_is_normalised(keyring, ident):
    table = make_table("state")
    nodes = pa.array(["central" if i % 3 else D for i in range(table.num_rows)])
    table = table.set_column(5, "node_id", nodes).cast(get_stream("state").schema)
    shuffled = table.select(list(reversed(table.column_names)))
    dec = read(write(shuffled, keyring, ident, stream="state").data, keyring, ident)
    assert_identical(dec.table, table)


def test_evictions_round_trip_and_widen_the_range(keyring, ident):
    table = make_table("logs", n=5, first_seq=10)  # seqs 10, 12, ..., 18
    ev = [{"first_seq": 0, "last_seq": 9, "count": 10, "reason": "size_bound"}]
    enc = write(table, keyring, ident, stream="logs", evictions=ev)
    assert (enc.manifest.first_seq, enc.manifest.last_seq) == (0, 18)
    dec = read(enc.data, keyring, ident, expected_key=enc.key)
    assert [e.model_dump() for e in dec.manifest.evictions] == ev
    assert dec.manifest.evicted_count == 10


def test_eviction_only_batch(keyring, ident):
    empty = make_table("telemetry", n=0)
    ev = [{"first_seq": 5, "last_seq": 7, "count": 3, "reason": "ttl"}]
    enc = write(empty, keyring, ident, stream="telemetry", evictions=ev)
    dec = read(enc.data, keyring, ident, expected_key=enc.key)
    assert dec.table.num_rows == 0 and dec.table.schema.equals(get_stream("telemetry").schema)
    assert (dec.manifest.first_seq, dec.manifest.last_seq, dec.manifest.hlc_min) == (5, 7, None)


def test_read_manifest_without_keys(keyring, ident):
    enc = write(make_table("alerts"), keyring, ident, stream="alerts")
    assert read_manifest(enc.data) == enc.manifest
    assert enc.data[:5] == MAGIC + bytes([FORMAT_VERSION])


@st.composite
def telemetry_tables(draw):
    n = draw(st.integers(0, 60))
    seqs = sorted(draw(st.sets(st.integers(0, 2**63 - 1), min_size=n, max_size=n)))
    metric = draw(st.lists(st.sampled_from(["t", "h", "", "ünï", None]), min_size=n, max_size=n))
    value = draw(
        st.lists(
            st.one_of(
                st.none(),
                st.floats(allow_nan=True, allow_infinity=True),
                st.integers(-(10**6), 10**6).map(lambda i: round(i / 100, 2)),
            ),
            min_size=n,
            max_size=n,
        )
    )
    ts = draw(st.lists(st.integers(-(2**45), 2**45), min_size=n, max_size=n))
    hlc = draw(st.lists(st.integers(0, 2**63 - 1), min_size=n, max_size=n))
    return pa.Table.from_pydict(
        {
            "tenant_id": [T] * n,
            "device_id": [D] * n,
            "stream": ["telemetry"] * n,
            "seq": seqs,
            "hlc": hlc,
            "node_id": [D] * n,
            "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "metric": metric,
            "value": value,
        },
        schema=get_stream("telemetry").schema,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=telemetry_tables())
def test_hypothesis_round_trip_random_telemetry(table, keyring, ident):
    if table.num_rows == 0:
        with pytest.raises(ValueError, match="nothing to write"):
            write(table, keyring, ident, stream="telemetry")
        return
    enc = write(table, keyring, ident, stream="telemetry")
    assert_identical(read(enc.data, keyring, ident, expected_key=enc.key).table, table)


# ----------------------------------------------------------------------------- writer input checks
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda t: t.set_column(3, "seq", pa.array(list(range(23, 0, -1)), pa.int64())),
            "strictly ascending",
        ),
        (lambda t: t.set_column(3, "seq", pa.array([5] * 23, pa.int64())), "strictly ascending"),
        (lambda t: t.set_column(1, "device_id", pa.array(["dev-2"] * 23)), "device_id"),
        (lambda t: t.drop_columns(["value"]), "missing"),
        (lambda t: t.set_column(8, "value", pa.array([1.0] * 23, pa.float32())), "cast it first"),
        (lambda t: t.set_column(4, "hlc", pa.array([None] * 23, pa.int64())), "has nulls"),
    ],
)
def test_write_rejects_bad_tables(keyring, ident, mutate, message):
    with pytest.raises(ValueError, match=message):
        write(mutate(make_table("telemetry")), keyring, ident, stream="telemetry")


def test_write_rejects_foreign_identity_and_overlapping_eviction(keyring, ident):
    with pytest.raises(ValueError, match="identity"):
        write(make_table("telemetry", device="dev-2"), keyring, ident, device_id="dev-2")
    ev = [{"first_seq": 100, "last_seq": 100, "count": 1, "reason": "x"}]
    with pytest.raises(ValueError, match="overlaps"):
        write(make_table("telemetry"), keyring, ident, evictions=ev)
    with pytest.raises(ValueError, match="count"):
        write(
            make_table("telemetry"),
            keyring,
            ident,
            evictions=[{"first_seq": 1, "last_seq": 2, "count": 3, "reason": "x"}],
        )


# ----------------------------------------------------------------------------- manifest
def test_manifest_is_canonical_json(good):
    raw = good.manifest.canonical_bytes()
    assert b" " not in raw
    assert Manifest.model_validate_json(raw) == good.manifest
    # unset enrollment fields are left out: batches of agents without them keep their old bytes
    assert raw == canonical_json(good.manifest.model_dump(mode="json", exclude={"platform", "tags"}))
    assert batch_mod.FORMAT_VERSION == good.manifest.format_version == 2
