"""Tenant isolation across paths (ARCHITECTURE invariant 7): Vault, object-store prefixes, SQL, rollouts.

Complements test_vault_tokens.py (a device cannot datakey or read another tenant's KV
secrets), tests/edgeplat/test_tenant_sql.py (the SQL guard's escapes) and test_attacks.py
(the batch refusals): here the same device and tenant ids exist in two tenants, and every
path is checked with real data of both.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hvac import exceptions as hvac_exc

from edge_sync.batch import write_batch
from edge_sync.identity import DeviceIdentity, LocalDeviceRegistry, canonical_json
from edge_sync.keys import LocalKeyring
from edge_sync.objectstore import LocalObjectStore
from edge_sync.vault import VaultSession
from edge_sync.vault_admin import device_kv_path, device_role_name, shared_kv_path, tenant_key_name
from edge_sync.vault_keys import VaultTransitKeyService
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.rollouts.cohorts import target_devices
from edgeplat.rollouts.selection import assign_phases
from edgeplat.rollouts.spec import load_spec
from edgeplat.settings import Paths
from edgeplat.sync.env import SyncEnv
from edgeplat.sync.ingest import ingest_objects
from edgeplat.tenant_sql import tenant_relations
from tests.support.cli import cli
from tests.support.fleet import rows

A, B = "tenant-a", "tenant-b"
SHARED_IDS = ("d1", "d2")  # the same device ids exist in both tenants


# ----------------------------------------------------------------------------- Vault
@pytest.mark.services
@pytest.mark.xdist_group("openbao")
def test_device_token_of_tenant_a_reaches_nothing_of_tenant_b(openbao, vault_admin, unique_id) -> None:
    ta, tb = unique_id("t"), unique_id("t")
    vault_admin.ensure_tenant(tb)
    creds_b = vault_admin.enrol_device(tb, "d1", token_ttl="60s")
    vault_admin.write_device_secret(tb, "d1", "mqtt", {"password": "b-only"})
    vault_admin.write_shared_secret(tb, "cloud", {"api_key": "b-only"})
    session = VaultSession(openbao[0], *vault_admin.enrol_device(ta, "d1", token_ttl="60s"))
    key_b = tenant_key_name(tb)
    dk_b = VaultTransitKeyService(VaultSession(openbao[0], *creds_b)).generate_data_key(tb)

    attempts = {
        "read B's transit key": lambda c: c.secrets.transit.read_key(key_b),
        "encrypt under B's key": lambda c: c.secrets.transit.encrypt_data(key_b, "aGVsbG8="),
        "decrypt B's data key": lambda c: c.secrets.transit.decrypt_data(key_b, dk_b.wrapped.decode()),
        "rewrap B's data key": lambda c: c.secrets.transit.rewrap_data(key_b, dk_b.wrapped.decode()),
        "datakey/wrapped of B": lambda c: c.secrets.transit.generate_data_key(key_b, key_type="wrapped"),
        "rotate B's key": lambda c: c.secrets.transit.rotate_key(key_b),
        "list B's KV secrets": lambda c: c.secrets.kv.v2.list_secrets(
            device_kv_path(tb, "d1"), mount_point="edgeplat"
        ),
        "read B's KV metadata": lambda c: c.secrets.kv.v2.read_secret_metadata(
            device_kv_path(tb, "d1", "mqtt"), mount_point="edgeplat"
        ),
        "overwrite B's shared secret": lambda c: c.secrets.kv.v2.create_or_update_secret(
            shared_kv_path(tb, "cloud"), secret={"api_key": "evil"}, mount_point="edgeplat"
        ),
        "read B's device policy": lambda c: c.sys.read_policy(device_role_name(tb, "d1")),
        "mint a secret id for B's device": lambda c: c.auth.approle.generate_secret_id(
            device_role_name(tb, "d1"), mount_point="approle"
        ),
        "read B's device role id": lambda c: c.auth.approle.read_role_id(device_role_name(tb, "d1")),
        "create a token": lambda c: c.auth.token.create(policies=[device_role_name(tb, "d1")]),
    }
    allowed = []
    for what, call in attempts.items():
        try:
            session.call(call)
            allowed.append(what)
        except hvac_exc.Forbidden:
            pass
    assert allowed == []
    assert session.logins == 1, "every refusal was a policy denial, not a dead token"
    # B's secrets are unchanged
    assert vault_admin.client.secrets.kv.v2.read_secret_version(
        shared_kv_path(tb, "cloud"), mount_point="edgeplat", raise_on_deleted_version=True
    )["data"]["data"] == {"api_key": "b-only"}


@pytest.mark.services
@pytest.mark.xdist_group("openbao")
def test_tenant_a_device_batches_never_land_in_tenant_b(openbao, vault_admin, unique_id, tmp_path) -> None:
    ta, tb = unique_id("t"), unique_id("t")
    vault_admin.ensure_tenant(tb)
    registry = LocalDeviceRegistry(tmp_path / "registry")
    store = LocalObjectStore(tmp_path / "objects")
    lake = Lakehouse(LakehouseConfig(catalog=f"sqlite:{tmp_path}/c.sqlite", data_path=f"{tmp_path}/lake/"))
    lake.ensure_schema()
    central = VaultTransitKeyService(VaultSession(openbao[0], *vault_admin.enrol_central("isolation")))
    ids = {t: DeviceIdentity.generate(t, "d1") for t in (ta, tb)}
    for t, ident in ids.items():
        registry.register(t, "d1", ident.public_key_bytes())
    keys_a = VaultTransitKeyService(VaultSession(openbao[0], *vault_admin.enrol_device(ta, "d1")))

    good = write_batch(
        rows("telemetry", ta, "d1", range(1, 6)),
        tenant_id=ta,
        device_id="d1",
        stream="telemetry",
        key_service=keys_a,
        identity=ids[ta],
    )
    store.put(good.key, good.data)
    # A's genuine batch copied under B's prefix (A's object-store credentials must not allow this at all;
    # if they did, or an operator copied it, the ingest still refuses it)
    moved = good.key.replace(f"tenant={ta}/", f"tenant={tb}/")
    store.put(moved, good.data)
    # A's device key signing a manifest that claims to be B's device d1 (a device cannot write B's batch)
    claim = write_batch(
        rows("telemetry", ta, "d1", range(6, 11)),
        tenant_id=ta,
        device_id="d1",
        stream="telemetry",
        key_service=keys_a,
        identity=ids[ta],
    )
    length = int.from_bytes(claim.data[5:9], "big")
    manifest = json.loads(claim.data[9 : 9 + length]) | {"tenant_id": tb}
    mb = canonical_json(manifest)
    body = claim.data[:5] + len(mb).to_bytes(4, "big") + mb + claim.data[9 + length : -64]
    forged_key = claim.key.replace(f"tenant={ta}/", f"tenant={tb}/")
    store.put(forged_key, body + ids[ta].sign(body))

    report = ingest_objects(SyncEnv(lake, store, central, registry), [good.key, moved, forged_key])

    with lake.session(read_only=True) as con:
        quarantined = dict(con.execute("SELECT object_key, reason FROM quarantine").fetchall())
        by_tenant = con.execute("SELECT tenant_id, count(*) FROM telemetry GROUP BY 1").fetchall()
    assert quarantined[moved] == "path_mismatch"
    assert quarantined[forged_key] == "bad_signature"  # B's d1 key does not verify A's signature
    assert report.accepted == 1 and by_tenant == [(ta, 5)]


# ----------------------------------------------------------------------------- SQL
@pytest.fixture
def two_tenant_home(tmp_path: Path) -> Path:
    """An EDGEPLAT_HOME whose lakehouse holds real ingested data of two tenants with the same device ids."""
    p = Paths(tmp_path)
    p.lakehouse.mkdir(parents=True)
    lake = Lakehouse(LakehouseConfig(catalog=f"sqlite:{p.catalog}", data_path=f"{p.lake_data}/"))
    lake.ensure_schema()
    keys, registry, store = (
        LocalKeyring(tmp_path / "k"),
        LocalDeviceRegistry(tmp_path / "r"),
        LocalObjectStore(tmp_path / "o"),
    )
    objects = []
    for tenant in (A, B):
        for device in SHARED_IDS:
            ident = DeviceIdentity.generate(tenant, device)
            registry.register(tenant, device, ident.public_key_bytes())
            for stream, n in (("telemetry", 20), ("alerts", 2), ("logs", 3), ("health", 4), ("state", 2)):
                b = write_batch(
                    rows(stream, tenant, device, range(1, n + 1)),
                    tenant_id=tenant,
                    device_id=device,
                    stream=stream,
                    key_service=keys,
                    identity=ident,
                )
                store.put(b.key, b.data)
                objects.append(b.key)
    report = ingest_objects(SyncEnv(lake, store, keys, registry), objects)
    assert report.accepted == len(objects)
    return tmp_path


@pytest.mark.slow
def test_edgeplat_sql_tenant_shows_no_other_tenant_rows_in_any_relation(two_tenant_home: Path) -> None:
    p = Paths(two_tenant_home)
    lake = Lakehouse(LakehouseConfig(catalog=f"sqlite:{p.catalog}", data_path=f"{p.lake_data}/"))
    with lake.read_only() as con:
        relations = tenant_relations(con)
    assert {
        "telemetry",
        "alerts",
        "logs",
        "health",
        "state_edits",
        "device_state",
        "devices",
        "batches",
    } <= set(relations)
    query = " UNION ALL ".join(
        f"SELECT '{r}' AS rel, count(*) AS n, count(*) FILTER (WHERE tenant_id IS DISTINCT FROM '{A}') AS other "
        f"FROM {r}"
        for r in relations
    )
    out = json.loads(cli("sql", query, "--tenant", A, "--format", "json", home=two_tenant_home).stdout)
    seen = {r["rel"]: (r["n"], r["other"]) for r in out}
    assert set(seen) == set(relations)
    assert {rel: other for rel, (_, other) in seen.items() if other} == {}
    assert (
        seen["telemetry"][0] == 40 and seen["devices"][0] == 2
    )  # A's rows are there: the filter is not "none"
    # control: tenant B's rows are really in the lakehouse
    with lake.read_only() as con:
        assert con.execute("SELECT count(*) FROM lake.telemetry WHERE tenant_id = ?", [B]).fetchone() == (40,)


# ----------------------------------------------------------------------------- rollouts
def _spec(tenants: list[str], tags: dict | None = None):
    return load_spec(
        {
            "name": "inference-2-1-0",
            "release": {
                "name": "inference",
                "version": "2.1.0",
                "greengrass": {"component": "com.acme.Inference", "version": "2.1.0"},
                "iot_edge": {"module": "inference", "image": "acme/inference:2.1.0"},
            },
            "target": {"tenants": tenants, **({"tags": tags} if tags else {})},
            "strategy": {"type": "canary", "phases": [{"percent": 50}, {"percent": 100}]},
        }
    )


def test_rollout_spec_of_tenant_a_selects_none_of_tenant_bs_devices(tmp_path: Path) -> None:
    lake = Lakehouse(LakehouseConfig(catalog=f"sqlite:{tmp_path}/c.sqlite", data_path=f"{tmp_path}/lake/"))
    lake.ensure_schema()
    now = datetime(2026, 11, 1, tzinfo=UTC)

    def fill(con):
        for tenant, region in ((A, "eu"), (B, "us")):
            for device in (*SHARED_IDS, f"only-{tenant}"):
                for platform in ("greengrass", "iot_edge"):
                    con.execute(
                        "INSERT INTO devices (tenant_id, device_id, platform, tags, status, updated_at) "
                        "VALUES (?, ?, ?, ?, 'online', ?)",
                        [tenant, f"{device}-{platform}", platform, json.dumps({"region": region}), now],
                    )

    lake.write(fill)
    with lake.session(read_only=True) as con:
        targets = target_devices(con, _spec([A]))
        by_b_tag = target_devices(con, _spec([A], {"region": "us"}))  # B's devices' tag value
        sneaky = target_devices(con, _spec([A], {"region": "us' OR tenant_id = 'tenant-b"}))
    assert set(targets.column("tenant_id").to_pylist()) == {A}
    assert targets.num_rows == 6
    assert by_b_tag.num_rows == 0 and sneaky.num_rows == 0
    # the controller's assignment keys are tenant-qualified, so equal device ids in B can never be addressed
    keys = [
        f"{t}/{d}"
        for t, d in zip(
            targets.column("tenant_id").to_pylist(), targets.column("device_id").to_pylist(), strict=True
        )
    ]
    assignment = assign_phases(
        [{"device_id": k, "tenant_id": A, "tags": {}} for k in keys], [50, 100], "salt"
    )
    assert all(k.startswith(f"{A}/") for k in assignment.device_ids)
    with pytest.raises(ValueError, match="tenant"):
        _spec(["../tenant-b"])
