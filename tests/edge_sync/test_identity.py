"""Device identities, the device registry, the platform signer and id validation."""

from __future__ import annotations

import copy
import stat

import pytest

from edge_sync.identity import (
    DeviceIdentity,
    DeviceRegistry,
    LocalDeviceRegistry,
    PlatformSigner,
    SignatureError,
    canonical_json,
    key_fingerprint,
    verify_document,
    verify_signature,
)
from edge_sync.ids import validate_id


def test_identity_sign_save_load(tmp_path):
    ident = DeviceIdentity.generate("tenant-a", "dev-1")
    path = tmp_path / "id" / "device.pem"
    ident.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "-----BEGIN PRIVATE KEY-----" in path.read_text()
    loaded = DeviceIdentity.load(path)
    assert (loaded.tenant_id, loaded.device_id) == ("tenant-a", "dev-1")
    assert loaded.public_key_bytes() == ident.public_key_bytes() and len(ident.public_key_bytes()) == 32
    sig = loaded.sign(b"hello")
    assert len(sig) == 64
    assert verify_signature(ident.public_key_bytes(), sig, b"hello")
    assert not verify_signature(ident.public_key_bytes(), sig, b"hellO")
    assert not verify_signature(
        DeviceIdentity.generate("tenant-a", "dev-1").public_key_bytes(), sig, b"hello"
    )
    assert ident.key_id == key_fingerprint(ident.public_key_bytes()) and ident.key_id.startswith("ed25519:")


def test_load_rejects_files_without_header_or_key(tmp_path):
    bare = tmp_path / "bare.pem"
    PlatformSigner.generate().save(bare)  # a PEM without the device header lines
    with pytest.raises(ValueError, match="Tenant-Id"):
        DeviceIdentity.load(bare)
    junk = tmp_path / "junk.pem"
    junk.write_text("Tenant-Id: t\nDevice-Id: d\n")
    junk.chmod(0o600)
    with pytest.raises(ValueError, match="no PEM"):
        DeviceIdentity.load(junk)


@pytest.mark.parametrize("bad", ["../x", "a/b", "a=b", "", "..", "-lead"])
def test_identity_rejects_unsafe_ids(bad):
    with pytest.raises(ValueError, match="invalid"):
        DeviceIdentity.generate(bad, "dev-1")
    with pytest.raises(ValueError, match="invalid device id"):
        DeviceIdentity.generate("tenant-a", bad)


def test_validate_id_names_kind_value_and_rule():
    assert validate_id("tenant", "tenant-01") == "tenant-01"
    assert validate_id("device", "a.b_c-D9") == "a.b_c-D9"
    with pytest.raises(ValueError) as info:
        validate_id("device", "../etc")
    msg = str(info.value)
    assert "device" in msg and "'../etc'" in msg and "A-Z" in msg
    with pytest.raises(ValueError, match="must be a string"):
        validate_id("tenant", 5)
    with pytest.raises(ValueError, match="unknown id kind"):
        validate_id("planet", "earth")


def test_registry_register_rotate_revoke_and_isolation(tmp_path):
    reg = LocalDeviceRegistry(tmp_path / "reg")
    assert isinstance(reg, DeviceRegistry)
    old, new = DeviceIdentity.generate("tenant-a", "dev-1"), DeviceIdentity.generate("tenant-a", "dev-1")
    assert reg.public_keys("tenant-a", "dev-1") == []
    k1 = reg.register("tenant-a", "dev-1", old.public_key_bytes())
    assert reg.register("tenant-a", "dev-1", old.public_key_bytes()) == k1  # idempotent
    k2 = reg.register("tenant-a", "dev-1", new.public_key_bytes())
    assert dict(reg.public_keys("tenant-a", "dev-1")) == {
        k1: old.public_key_bytes(),
        k2: new.public_key_bytes(),
    }
    reg.revoke("tenant-a", "dev-1", k1)
    assert reg.public_keys("tenant-a", "dev-1") == [(k2, new.public_key_bytes())]
    # another tenant's device of the same name has no keys
    assert reg.public_keys("tenant-b", "dev-1") == []
    assert LocalDeviceRegistry(tmp_path / "reg").public_keys("tenant-a", "dev-1") == [
        (k2, new.public_key_bytes())
    ]
    with pytest.raises(KeyError):
        reg.revoke("tenant-a", "dev-1", "ed25519:nope")
    with pytest.raises(ValueError, match="invalid tenant id"):
        reg.public_keys("../tenant-a", "dev-1")


def test_platform_signer_round_trip_and_tamper(tmp_path):
    signer = PlatformSigner.generate()
    doc = {"device": "dev-1", "revision": 7, "components": {"app": "1.2.3"}, "note": "ünïcode"}
    signed = signer.sign_document(doc)
    assert verify_document(signed, signer.public_key_bytes()) == doc
    assert (
        PlatformSigner.verify_document(
            signed, [PlatformSigner.generate().public_key_bytes(), signer.public_key_bytes()]
        )
        == doc
    )

    tampered = copy.deepcopy(signed)
    tampered["document"]["revision"] = 8
    with pytest.raises(SignatureError, match="does not verify"):
        verify_document(tampered, signer.public_key_bytes())
    with pytest.raises(SignatureError):
        verify_document(signed, PlatformSigner.generate().public_key_bytes())
    with pytest.raises(SignatureError, match="not a signed document"):
        verify_document({"document": doc}, signer.public_key_bytes())
    with pytest.raises(SignatureError, match="base64"):
        verify_document({**signed, "signature": "***"}, signer.public_key_bytes())

    path = tmp_path / "platform.pem"
    signer.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PlatformSigner.load(path).public_key_bytes() == signer.public_key_bytes()


def test_canonical_json_is_sorted_and_compact():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": "é"}]}) == b'{"a":[1,{"c":"\\u00e9","d":2}],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
