"""Vault transit as the platform's KeyService, against a real OpenBao server.

Devices generate data keys with their own AppRole token; the central ingest unwraps them
with the central policy. Rotation, retirement (min_decryption_version) and cross-tenant
attempts must give the same machine-readable reasons as the local keyring.
"""

from __future__ import annotations

import pytest

from edge_sync.keys import KeyService, KeyServiceError, TenantMismatch
from edge_sync.vault import VaultSession
from edge_sync.vault_keys import VaultTransitKeyService

pytestmark = [pytest.mark.services, pytest.mark.xdist_group("openbao")]


@pytest.fixture(scope="module")
def central(openbao, vault_admin) -> VaultTransitKeyService:
    role_id, secret_id = vault_admin.enrol_central("transit-tests")
    return VaultTransitKeyService(VaultSession(openbao[0], role_id, secret_id))


def _device_keys(openbao, vault_admin, tenant: str, device: str) -> VaultTransitKeyService:
    role_id, secret_id = vault_admin.enrol_device(tenant, device)
    return VaultTransitKeyService(VaultSession(openbao[0], role_id, secret_id))


def _reason(fn) -> str:
    with pytest.raises(KeyServiceError) as err:
        fn()
    return err.value.reason


def test_data_key_round_trip_device_to_central(openbao, vault_admin, central, unique_id):
    tenant = unique_id("t")
    device = _device_keys(openbao, vault_admin, tenant, unique_id("d"))
    assert isinstance(device, KeyService)

    dk = device.generate_data_key(tenant)
    assert len(dk.plaintext) == 32
    assert dk.key_id == f"vault:transit/tenant-{tenant}:v1"
    assert dk.wrapped.startswith(b"vault:v1:") and dk.plaintext not in dk.wrapped
    assert central.unwrap(tenant, dk.key_id, dk.wrapped) == dk.plaintext
    assert device.generate_data_key(tenant).plaintext != dk.plaintext
    # The central policy unwraps but does not hand out data keys.
    assert _reason(lambda: central.generate_data_key(tenant)) == "permission_denied"


def test_rotation_keeps_old_keys_until_min_decryption_version_retires_them(
    openbao, vault_admin, central, unique_id
):
    tenant = unique_id("t")
    device = _device_keys(openbao, vault_admin, tenant, unique_id("d"))
    before = device.generate_data_key(tenant)
    assert vault_admin.rotate_tenant_key(tenant) == 2
    after = device.generate_data_key(tenant)
    assert after.key_id.endswith(":v2") and after.wrapped.startswith(b"vault:v2:")

    assert central.unwrap(tenant, before.key_id, before.wrapped) == before.plaintext
    assert central.unwrap(tenant, after.key_id, after.wrapped) == after.plaintext

    vault_admin.set_min_decryption_version(tenant, 2)
    assert _reason(lambda: central.unwrap(tenant, before.key_id, before.wrapped)) == "below_min_version"
    assert central.unwrap(tenant, after.key_id, after.wrapped) == after.plaintext

    with pytest.raises(ValueError, match="rotate the key first"):
        vault_admin.set_min_decryption_version(tenant, 3)


def test_key_of_one_tenant_presented_as_another_is_refused(openbao, vault_admin, central, unique_id):
    tenant_a, tenant_b = unique_id("t"), unique_id("t")
    vault_admin.ensure_tenant(tenant_b)
    dk = _device_keys(openbao, vault_admin, tenant_a, unique_id("d")).generate_data_key(tenant_a)

    with pytest.raises(TenantMismatch) as err:
        central.unwrap(tenant_b, dk.key_id, dk.wrapped)
    assert err.value.reason == "tenant_mismatch"
    # Relabelling the key id as tenant B's key does not help: B's key cannot decrypt it.
    forged_id = dk.key_id.replace(f"tenant-{tenant_a}", f"tenant-{tenant_b}")
    assert _reason(lambda: central.unwrap(tenant_b, forged_id, dk.wrapped)) == "unwrap_failed"


def test_malformed_relabelled_and_unknown_keys_have_reasons(openbao, vault_admin, central, unique_id):
    tenant = unique_id("t")
    dk = _device_keys(openbao, vault_admin, tenant, unique_id("d")).generate_data_key(tenant)
    assert _reason(lambda: central.unwrap(tenant, f"local:{tenant}:v1", dk.wrapped)) == "bad_key_id"
    assert _reason(lambda: central.unwrap(tenant, dk.key_id.replace("transit/", "other/"), dk.wrapped)) == (
        "bad_key_id"
    )
    v9 = dk.key_id.replace(":v1", ":v9")
    assert _reason(lambda: central.unwrap(tenant, v9, dk.wrapped)) == "unwrap_failed"  # label != ciphertext
    assert _reason(lambda: central.unwrap(tenant, v9, dk.wrapped.replace(b"vault:v1:", b"vault:v9:"))) == (
        "unknown_key"
    )
    tampered = dk.wrapped[:-6] + (b"AAAAAA" if not dk.wrapped.endswith(b"AAAAAA") else b"BBBBBB")
    assert _reason(lambda: central.unwrap(tenant, dk.key_id, tampered)) == "unwrap_failed"
    assert _reason(lambda: central.unwrap("bad/tenant", dk.key_id, dk.wrapped)) == "bad_request"
