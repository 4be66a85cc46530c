"""Batch format (v2, and v1 still read): round trips, size, and every way a batch must be refused (with its reason)."""

from __future__ import annotations

import struct

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_sync import batch as batch_mod
from edge_sync.batch import (
    FORMAT_VERSION,
    MAGIC,
    MAX_MANIFEST_BYTES,
    BatchError,
    Manifest,
    ObjectKey,
    object_key,
    parse_object_key,
    read_batch,
    read_manifest,
    write_batch,
)
from edge_sync.identity import DeviceIdentity, LocalDeviceRegistry, canonical_json
from edge_sync.keys import LocalKeyring
from edge_sync.streams import STREAMS, get_stream
from edgeplat.simulator import SimulationConfig
from edgeplat.simulator.vectorized import device_hour_batches
from tests.support.batches import (
    D,
    OtherTenantKeys,
    T,
    assert_identical,
    forge,
    make_table,
    read,
    reason_of,
    write,
)


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


# ----------------------------------------------------------------------------- refusals
@pytest.fixture
def good(keyring, ident):
    return write(make_table("telemetry"), keyring, ident, stream="telemetry")


def flip(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 0x01
    return bytes(b)


def manifest_span(data: bytes) -> tuple[int, int]:
    length = struct.unpack_from(">I", data, 5)[0]
    return 9, 9 + length


def test_tampered_ciphertext_fails_signature(good, keyring, ident):
    start, end = manifest_span(good.data)
    assert reason_of(flip(good.data, end + 5), keyring, ident) == "bad_signature"


def test_tampered_ciphertext_resigned_fails_decryption(good, keyring, ident):
    body = flip(good.data[:-64], manifest_span(good.data)[1] + 5)
    assert reason_of(body + ident.sign(body), keyring, ident) == "decryption_failure"


def test_tampered_manifest_fails_signature(good, keyring, ident):
    start, end = manifest_span(good.data)
    pos = good.data.index(b'"created_ms":') + len(b'"created_ms":') + 2  # a digit: still valid JSON
    assert start < pos < end
    assert reason_of(flip(good.data, pos), keyring, ident) == "bad_signature"


def test_tampered_manifest_resigned_fails_decryption(good, keyring, ident):
    pos = good.data.index(b'"created_ms":') + len(b'"created_ms":') + 2
    body = flip(good.data[:-64], pos)
    assert reason_of(body + ident.sign(body), keyring, ident) == "decryption_failure"


def test_garbled_manifest_is_bad_manifest(good, keyring, ident):
    assert reason_of(flip(good.data, 9), keyring, ident) == "bad_manifest"  # '{' -> 'z'


def test_tampered_signature(good, keyring, ident):
    assert reason_of(flip(good.data, len(good.data) - 10), keyring, ident) == "bad_signature"


@pytest.mark.parametrize("cut", [0, 3, 8, 9, 40, "manifest", "manifest+10", "-64", "-1"])
def test_truncated_objects(good, keyring, ident, cut):
    end = manifest_span(good.data)[1]
    n = {"manifest": end, "manifest+10": end + 10, "-64": len(good.data) - 64, "-1": len(good.data) - 1}.get(
        cut, cut
    )
    assert reason_of(good.data[:n], keyring, ident) == "truncated"


def test_trailing_bytes_are_refused(good, keyring, ident):
    assert reason_of(good.data + b"\0", keyring, ident) == "truncated"


def test_bad_magic(good, keyring, ident):
    assert reason_of(b"PAR1" + good.data[4:], keyring, ident) == "bad_magic"


@pytest.mark.parametrize("version", [0, 3, 255])
def test_downgraded_or_unknown_format_version(good, keyring, ident, version):
    data = good.data[:4] + bytes([version]) + good.data[5:]
    assert reason_of(data, keyring, ident) == "unsupported_version"


def test_oversized_manifest_refused_before_parsing(keyring, ident):
    data = (
        MAGIC + bytes([1]) + struct.pack(">I", MAX_MANIFEST_BYTES + 1) + b"\xff" * (MAX_MANIFEST_BYTES + 200)
    )
    assert reason_of(data, keyring, ident) == "oversized_manifest"


def test_wrong_device_identity(good, keyring):
    other = DeviceIdentity.generate(T, D)
    assert reason_of(good.data, keyring, other) == "bad_signature"


def test_unknown_device_via_registry(good, keyring, ident, tmp_path):
    registry = LocalDeviceRegistry(tmp_path / "reg")
    assert reason_of(good.data, keyring, ident, public_keys=registry.public_keys) == "unknown_device"
    registry.register(T, D, ident.public_key_bytes())
    assert read(good.data, keyring, ident, public_keys=registry.public_keys).table.num_rows == 23
    registry.revoke(T, D, ident.key_id)
    assert reason_of(good.data, keyring, ident, public_keys=registry.public_keys) == "unknown_device"


def test_device_key_rotation_accepts_any_registered_key(keyring, ident, tmp_path):
    registry = LocalDeviceRegistry(tmp_path / "reg")
    new = DeviceIdentity.generate(T, D)
    registry.register(T, D, ident.public_key_bytes())
    registry.register(T, D, new.public_key_bytes())
    for who in (ident, new):
        enc = write(make_table("logs"), keyring, who, stream="logs")
        read(enc.data, keyring, who, public_keys=registry.public_keys)


def test_wrong_tenant_key(keyring, ident):
    enc = write_batch(
        make_table("telemetry"),
        tenant_id=T,
        device_id=D,
        stream="telemetry",
        key_service=OtherTenantKeys(keyring, "tenant-b"),
        identity=ident,
    )
    with pytest.raises(BatchError) as info:
        read(enc.data, keyring, ident)
    assert info.value.reason == "tenant_mismatch"
    assert "tenant-b" in str(info.value)


def test_keyring_of_another_installation(good, ident, tmp_path):
    assert reason_of(good.data, LocalKeyring(tmp_path / "other"), ident) == "decryption_failure"


def test_rotation_keeps_old_batches_until_min_decryption_version(keyring, ident):
    old = write(make_table("telemetry"), keyring, ident, stream="telemetry")
    assert keyring.rotate(T) == 2
    new = write(make_table("telemetry", first_seq=1000), keyring, ident, stream="telemetry")
    assert old.manifest.key_id == "local:tenant-a:v1" and new.manifest.key_id == "local:tenant-a:v2"
    assert read(old.data, keyring, ident).table.num_rows == 23
    keyring.set_min_decryption_version(T, 2)
    with pytest.raises(BatchError) as info:
        read(old.data, keyring, ident)
    assert (info.value.reason, info.value.detail) == ("decryption_failure", "below_min_version")
    assert read(new.data, keyring, ident).table.num_rows == 23


def test_path_mismatch(good, keyring, ident):
    assert read(good.data, keyring, ident, expected_key=good.key).manifest == good.manifest
    for wrong in (
        object_key(T, "dev-2", "telemetry", 100, 144),
        object_key("tenant-b", D, "telemetry", 100, 144),
        object_key(T, D, "logs", 100, 144),
        object_key(T, D, "telemetry", 100, 145),
        "somewhere/else.batch",
    ):
        assert reason_of(good.data, keyring, ident, expected_key=wrong) == "path_mismatch", wrong


def test_unknown_schema_fingerprint(keyring, ident):
    data = forge(ident, keyring, changes={"schema_fingerprint": "0123456789abcdef"})
    assert reason_of(data, keyring, ident) == "unknown_schema"
    data = forge(ident, keyring, changes={"schema_fingerprint": get_stream("logs").fingerprint})
    assert reason_of(data, keyring, ident) == "unknown_schema"


def test_forged_batch_reads_when_consistent(keyring, ident):
    """The forge helper itself builds valid batches, so the refusals below are about the change made."""
    assert read(forge(ident, keyring), keyring, ident).table.num_rows == 23


def test_hash_mismatch(keyring, ident):
    assert (
        reason_of(forge(ident, keyring, changes={"plaintext_sha256": "0" * 64}), keyring, ident)
        == "hash_mismatch"
    )


@pytest.mark.parametrize(
    "changes",
    [{"row_count": 22}, {"first_seq": 99}, {"last_seq": 150}, {"hlc_max": 1}, {"hlc_min": 1}],
)
def test_bad_range(keyring, ident, changes):
    assert reason_of(forge(ident, keyring, changes=changes), keyring, ident) == "bad_range"


def test_eviction_overlapping_rows_is_bad_range(keyring, ident):
    ev = [{"first_seq": 102, "last_seq": 102, "count": 1, "reason": "size_bound"}]  # 102 is a row's seq
    assert reason_of(forge(ident, keyring, changes={"evictions": ev}), keyring, ident) == "bad_range"


def test_payload_that_is_not_parquet(keyring, ident):
    assert (
        reason_of(forge(ident, keyring, payload=b"not parquet at all"), keyring, ident) == "corrupt_payload"
    )


def test_signed_but_invalid_manifest(keyring, ident):
    assert (
        reason_of(forge(ident, keyring, changes={"format_version": 1}), keyring, ident)
        == "unsupported_version"
    )
    assert reason_of(forge(ident, keyring, changes={"extra_field": 1}), keyring, ident) == "bad_manifest"


def test_error_names_the_object(good, keyring, ident):
    with pytest.raises(BatchError, match=r"batch tenant=tenant-a/device=dev-1/.*\.batch: .*re-upload"):
        read(good.data[:20], keyring, ident, expected_key=good.key)


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


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "a..b", "a=b", "", ".hidden", "x" * 129, "a b", "a\\b"])
def test_path_traversal_ids_rejected(keyring, ident, bad):
    with pytest.raises(ValueError, match="invalid tenant id"):
        object_key(bad, D, "telemetry", 0, 1)
    with pytest.raises(ValueError, match="invalid device id"):
        object_key(T, bad, "telemetry", 0, 1)
    with pytest.raises(ValueError, match="invalid device id"):
        write(make_table("telemetry"), keyring, ident, device_id=bad)


# ----------------------------------------------------------------------------- object keys
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


def test_manifest_is_canonical_json(good):
    raw = good.manifest.canonical_bytes()
    assert b" " not in raw
    assert Manifest.model_validate_json(raw) == good.manifest
    assert raw == canonical_json(good.manifest.model_dump(mode="json"))
    assert batch_mod.FORMAT_VERSION == good.manifest.format_version == 2
