"""Vault transit through the real central ingest, against a real OpenBao server.

Devices get data keys with their own AppRole (``datakey/plaintext`` of their tenant's key
only); the ingest unwraps with the central AppRole (``decrypt`` only). Batches written
before and after a key rotation both ingest; batches wrapped under another tenant's key,
relabelled, or under a retired version are quarantined while good batches beside them
ingest in the same run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_sync.batch import write_batch
from edge_sync.identity import DeviceIdentity, LocalDeviceRegistry
from edge_sync.keys import DataKey
from edge_sync.objectstore import LocalObjectStore
from edge_sync.vault import VaultSession
from edge_sync.vault_keys import VaultTransitKeyService
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.sync.env import SyncEnv
from edgeplat.sync.ingest import ingest_objects
from tests.support.fleet import rows

pytestmark = [pytest.mark.services, pytest.mark.xdist_group("openbao")]


class Central:
    """The central side: lakehouse, store, registry, and transit with the central AppRole."""

    def __init__(self, root: Path, addr: str, creds: tuple[str, str]) -> None:
        self.store = LocalObjectStore(root / "objects")
        self.registry = LocalDeviceRegistry(root / "registry")
        self.lake = Lakehouse(
            LakehouseConfig(catalog=f"sqlite:{root}/catalog.sqlite", data_path=f"{root}/lake/")
        )
        self.lake.ensure_schema()
        self.keys = VaultTransitKeyService(VaultSession(addr, *creds))

    def env(self) -> SyncEnv:
        return SyncEnv(self.lake, self.store, self.keys, self.registry)

    def device(self, vault_admin, addr: str, tenant: str, device: str):
        """Enrol a device in Vault and in the registry; return (identity, its transit key service)."""
        identity = DeviceIdentity.generate(tenant, device)
        self.registry.register(tenant, device, identity.public_key_bytes())
        role_id, secret_id = vault_admin.enrol_device(tenant, device, token_ttl="60s")
        return identity, VaultTransitKeyService(VaultSession(addr, role_id, secret_id))

    def upload(self, tenant, device, identity, keys, seqs) -> str:
        b = write_batch(
            rows("telemetry", tenant, device, list(seqs)),
            tenant_id=tenant,
            device_id=device,
            stream="telemetry",
            key_service=keys,
            identity=identity,
        )
        self.store.put(b.key, b.data)
        return b.key

    def quarantine(self) -> dict[str, str]:
        with self.lake.session(read_only=True) as con:
            return dict(con.execute("SELECT object_key, reason FROM quarantine").fetchall())

    def rows(self, tenant: str, device: str) -> list[int]:
        with self.lake.session(read_only=True) as con:
            return [
                r[0]
                for r in con.execute(
                    "SELECT seq FROM telemetry WHERE tenant_id = ? AND device_id = ? ORDER BY seq",
                    [tenant, device],
                ).fetchall()
            ]


@pytest.fixture(scope="module")
def central_creds(vault_admin) -> tuple[str, str]:
    return vault_admin.enrol_central("transit-ingest")


@pytest.fixture
def central(tmp_path, openbao, central_creds) -> Central:
    return Central(tmp_path, openbao[0], central_creds)


class _WrapsWith:
    """A device whose data keys come from another key service (another tenant's device role)."""

    def __init__(self, other: VaultTransitKeyService, tenant: str) -> None:
        self.other, self.tenant = other, tenant

    def generate_data_key(self, tenant_id: str) -> DataKey:
        return self.other.generate_data_key(self.tenant)

    def unwrap(self, tenant_id, key_id, wrapped):  # pragma: no cover - writer only
        raise AssertionError("writer only")


class _Relabelled(_WrapsWith):
    """Another tenant's wrapped data key, labelled with this tenant's key id."""

    def __init__(
        self, other: VaultTransitKeyService, tenant: str, own: VaultTransitKeyService, own_tenant: str
    ):
        super().__init__(other, tenant)
        self.own, self.own_tenant = own, own_tenant

    def generate_data_key(self, tenant_id: str) -> DataKey:
        dk = self.other.generate_data_key(self.tenant)
        version = int(dk.key_id.rsplit(":v", 1)[1])
        return DataKey(dk.plaintext, dk.wrapped, self.own.key_id(self.own_tenant, version))


def test_batches_before_and_after_rotation_ingest_and_cross_tenant_keys_are_quarantined(
    central, openbao, vault_admin, unique_id
) -> None:
    addr = openbao[0]
    ta, tb = unique_id("t"), unique_id("t")
    ida, keys_a = central.device(vault_admin, addr, ta, "d1")
    idb, keys_b = central.device(vault_admin, addr, tb, "d1")

    before = central.upload(ta, "d1", ida, keys_a, range(1, 11))
    assert vault_admin.rotate_tenant_key(ta) == 2
    after = central.upload(ta, "d1", ida, keys_a, range(11, 21))
    other_b = central.upload(tb, "d1", idb, keys_b, range(1, 6))
    # device A's batch (A's path, A's signature) with a data key from tenant B's transit key
    cross = central.upload(ta, "d1", ida, _WrapsWith(keys_b, tb), range(21, 26))
    # ... and the same with B's wrapped key relabelled as A's key id: B's ciphertext does not open under A's key
    relabelled = central.upload(ta, "d1", ida, _Relabelled(keys_b, tb, keys_a, ta), range(26, 31))

    report = ingest_objects(central.env(), [before, after, other_b, cross, relabelled])

    assert central.quarantine() == {cross: "tenant_mismatch", relabelled: "decryption_failure"}
    assert report.accepted == 3
    assert central.rows(ta, "d1") == list(range(1, 21))  # v1 and v2 batches both ingested
    assert central.rows(tb, "d1") == list(range(1, 6))
    with central.lake.session(read_only=True) as con:
        key_ids = dict(con.execute("SELECT object_key, key_id FROM batches").fetchall())
    assert key_ids[before].endswith(":v1") and key_ids[after].endswith(":v2")
    assert f"tenant-{ta}" in key_ids[before] and f"tenant-{tb}" in key_ids[other_b]


def test_retired_key_version_is_quarantined_until_min_decryption_version_is_lowered(
    central, openbao, vault_admin, unique_id
) -> None:
    tenant = unique_id("t")
    ident, keys = central.device(vault_admin, openbao[0], tenant, "d1")
    late = central.upload(tenant, "d1", ident, keys, range(1, 6))  # written under v1, uploaded late
    vault_admin.rotate_tenant_key(tenant)
    fresh = central.upload(tenant, "d1", ident, keys, range(6, 11))
    vault_admin.set_min_decryption_version(tenant, 2)

    report = ingest_objects(central.env(), [late, fresh])

    assert central.quarantine() == {late: "decryption_failure"}
    assert report.accepted == 1 and central.rows(tenant, "d1") == list(range(6, 11))
    with central.lake.session(read_only=True) as con:
        ((detail,),) = con.execute("SELECT detail FROM quarantine").fetchall()
    assert "below_min_version" in detail
