"""LocalKeyring: wrapping, rotation, retirement and tenant isolation of data keys."""

from __future__ import annotations

import json
import stat

import pytest

from edge_sync.keys import (
    DataKey,
    KeyService,
    KeyServiceError,
    KeyUnavailable,
    LocalKeyring,
    TenantMismatch,
    UnwrapFailed,
)


@pytest.fixture
def ring(tmp_path):
    return LocalKeyring(tmp_path / "keys")


def test_is_a_key_service(ring):
    assert isinstance(ring, KeyService)


def test_generate_and_unwrap(ring, tmp_path):
    dk = ring.generate_data_key("tenant-a")
    assert isinstance(dk, DataKey) and len(dk.plaintext) == 32
    assert dk.key_id == "local:tenant-a:v1"
    assert dk.plaintext not in dk.wrapped
    assert "plaintext" not in repr(dk) and dk.plaintext.hex() not in repr(dk)
    assert ring.unwrap("tenant-a", dk.key_id, dk.wrapped) == dk.plaintext
    assert ring.generate_data_key("tenant-a").plaintext != dk.plaintext  # fresh every time


def test_key_file_created_on_first_use_with_mode_0600(ring, tmp_path):
    path = tmp_path / "keys" / "tenant-a.json"
    assert not path.exists()
    ring.generate_data_key("tenant-a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["tenant_id"] == "tenant-a" and doc["current"] == 1 and list(doc["keys"]) == ["1"]


def test_rotation_keeps_old_versions_readable(ring):
    v1 = ring.generate_data_key("tenant-a")
    assert ring.rotate("tenant-a") == 2
    v2 = ring.generate_data_key("tenant-a")
    assert v2.key_id == "local:tenant-a:v2"
    assert ring.unwrap("tenant-a", v1.key_id, v1.wrapped) == v1.plaintext
    assert ring.unwrap("tenant-a", v2.key_id, v2.wrapped) == v2.plaintext
    assert ring.current_version("tenant-a") == 2


def test_min_decryption_version_retires_old_keys(ring):
    v1 = ring.generate_data_key("tenant-a")
    ring.rotate("tenant-a")
    ring.set_min_decryption_version("tenant-a", 2)
    with pytest.raises(KeyUnavailable) as info:
        ring.unwrap("tenant-a", v1.key_id, v1.wrapped)
    assert info.value.reason == "below_min_version"
    ring.set_min_decryption_version("tenant-a", 1)  # lowering it restores access, as in Vault transit
    assert ring.unwrap("tenant-a", v1.key_id, v1.wrapped) == v1.plaintext
    with pytest.raises(KeyServiceError) as bad:
        ring.set_min_decryption_version("tenant-a", 3)
    assert bad.value.reason == "bad_request"


def test_wrong_tenant_is_refused(ring):
    b = ring.generate_data_key("tenant-b")
    ring.generate_data_key("tenant-a")
    with pytest.raises(TenantMismatch) as info:
        ring.unwrap("tenant-a", b.key_id, b.wrapped)
    assert info.value.reason == "tenant_mismatch"
    # relabelling tenant B's wrapped key as tenant A's fails authentication (tenant in the AAD)
    with pytest.raises(UnwrapFailed):
        ring.unwrap("tenant-a", "local:tenant-a:v1", b.wrapped)


def test_unknown_version_and_tenant(ring):
    dk = ring.generate_data_key("tenant-a")
    with pytest.raises(KeyUnavailable) as info:
        ring.unwrap("tenant-a", "local:tenant-a:v9", dk.wrapped)
    assert info.value.reason == "unknown_key"
    with pytest.raises(KeyUnavailable):
        ring.unwrap("tenant-c", "local:tenant-c:v1", dk.wrapped)


def test_tampered_wrapped_key_and_foreign_key_ids(ring):
    dk = ring.generate_data_key("tenant-a")
    bad = bytearray(dk.wrapped)
    bad[20] ^= 1
    with pytest.raises(UnwrapFailed) as info:
        ring.unwrap("tenant-a", dk.key_id, bytes(bad))
    assert info.value.reason == "unwrap_failed"
    for key_id in ("vault:transit/tenant-a:v1", "local:tenant-a:v0", "local:tenant-a", ""):
        with pytest.raises(KeyServiceError) as info:
            ring.unwrap("tenant-a", key_id, dk.wrapped)
        assert info.value.reason == "bad_key_id"


def test_other_keyring_cannot_unwrap(ring, tmp_path):
    dk = ring.generate_data_key("tenant-a")
    other = LocalKeyring(tmp_path / "other")
    other.generate_data_key("tenant-a")
    with pytest.raises(UnwrapFailed):
        other.unwrap("tenant-a", dk.key_id, dk.wrapped)


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "a=b", ""])
def test_path_traversal_tenant_ids(ring, tmp_path, bad):
    with pytest.raises(ValueError, match="invalid tenant id"):
        ring.generate_data_key(bad)
    with pytest.raises(ValueError, match="invalid tenant id"):
        ring.rotate(bad)
    assert not (tmp_path / "x.json").exists()


def test_a_second_instance_sees_rotation(ring, tmp_path):
    ring.generate_data_key("tenant-a")
    LocalKeyring(tmp_path / "keys").rotate("tenant-a")
    assert ring.generate_data_key("tenant-a").key_id == "local:tenant-a:v2"
