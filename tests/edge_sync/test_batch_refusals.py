"""Every way a batch must be refused, each with its reason: tampering, truncation, versions, sizes,
unknown or revoked devices, foreign keys, paths that do not match, forged manifests."""

from __future__ import annotations

import struct

import pytest

from edge_sync import batch
from edge_sync.batch import MAGIC, MAX_MANIFEST_BYTES, BatchError, read_batch, write_batch
from edge_sync.batch_errors import ServiceError
from edge_sync.batch_keys import object_key
from edge_sync.identity import DeviceIdentity, LocalDeviceRegistry
from edge_sync.keys import LocalKeyring
from edge_sync.streams import get_stream
from tests.support import poison
from tests.support.batches import D, OtherTenantKeys, T, forge, make_table, read, reason_of, write


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


def test_deeply_nested_manifest_is_bad_manifest_not_recursion(keyring, ident):
    assert reason_of(poison.deep_array_manifest(), keyring, ident) == "bad_manifest"
    assert reason_of(poison.deep_field_manifest(T, D), keyring, ident) == "bad_manifest"


def test_registry_that_refuses_the_ids_is_bad_manifest(good, keyring):
    def refuses(tenant_id, device_id):
        raise ValueError("invalid device id")

    with pytest.raises(BatchError) as err:
        read_batch(good.data, key_service=keyring, public_keys=refuses)
    assert err.value.reason == "bad_manifest"


class _Down:
    def unwrap(self, tenant_id, key_id, wrapped):
        raise ConnectionError("key service unreachable")


def test_service_failures_are_service_errors_not_batch_errors(good, keyring, ident):
    def down(tenant_id, device_id):
        raise TimeoutError("registry unreachable")

    with pytest.raises(ServiceError, match="registry"):
        read_batch(good.data, key_service=keyring, public_keys=down)
    with pytest.raises(ServiceError, match="key service"):
        read_batch(good.data, key_service=_Down(), public_keys=[ident.public_key_bytes()])


def test_an_unexpected_failure_while_opening_is_malformed(good, keyring, ident, monkeypatch):
    def explode(*args, **kwargs):
        raise OverflowError("a parser's own error")

    monkeypatch.setattr(batch, "_stream_for_fingerprint", explode)
    assert reason_of(good.data, keyring, ident) == "malformed"
