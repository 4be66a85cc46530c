"""The device agent on Vault, against a real OpenBao server: token expiry, outage, re-auth, revocation;
and the cache key at rest.

TTLs are compressed to four seconds; the sessions decide on a fake clock the tests move by hand,
so the work between a login and the token's last use in a sync has the whole TTL of Vault's
real clock to spare on a loaded machine. Vault is made unreachable with a loopback HTTP proxy
in front of OpenBao that answers 503 (what a sealed or overloaded Vault says) until it is
switched back. Uploads land in a local object store and are decoded with the central
AppRole (transit ``decrypt``), as the ingest would.
"""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path

import pytest

from edge_sync.agent import DeviceAgent
from edge_sync.batch import read_batch
from edge_sync.cache import CacheKeyError, DeviceCache
from edge_sync.config import load_config
from edge_sync.identity import DeviceIdentity, PlatformSigner
from edge_sync.objectstore import LocalObjectStore
from edge_sync.vault import VaultSession
from edge_sync.vault_admin import device_kv_path
from edge_sync.vault_keys import VaultTransitKeyService
from tests.support.device import agent_on
from tests.support.fault_proxy import FaultProxy

pytestmark = [pytest.mark.services, pytest.mark.xdist_group("openbao")]

TTL_S = 4.0


@pytest.fixture(scope="module")
def central_keys(openbao, vault_admin) -> VaultTransitKeyService:
    return VaultTransitKeyService(VaultSession(openbao[0], *vault_admin.enrol_central("agent-tests")))


def _uploaded(
    store: LocalObjectStore, tenant: str, device: str, keys, identity
) -> list[tuple[str, int, str]]:
    """(stream, seq, key_id) of every row in the store, decoded and verified like the ingest does."""
    out = []
    page = store.list(f"tenant={tenant}/device={device}/stream=")
    for obj in page.objects:
        batch = read_batch(
            store.get(obj.key),
            key_service=keys,
            public_keys=[identity.public_key_bytes()],
            expected_key=obj.key,
        )
        out += [
            (batch.manifest.stream, s, batch.manifest.key_id) for s in batch.table.column("seq").to_pylist()
        ]
    return sorted(out)


def _record(agent: DeviceAgent, n: int, start: int) -> None:
    for i in range(start, start + n):
        agent.record("telemetry", {"metric": "temp", "value": float(i)})


@pytest.mark.slow
def test_agent_records_offline_while_its_token_expired_and_syncs_after_a_new_login(
    openbao, vault_admin, central_keys, unique_id, fake_clock, tmp_path
) -> None:
    tenant, device = unique_id("t"), unique_id("d")
    creds = vault_admin.enrol_device(tenant, device, token_ttl=f"{TTL_S:.0f}s", token_max_ttl=f"{TTL_S:.0f}s")
    proxy = FaultProxy(openbao[0])
    with proxy as vault_url:
        session = VaultSession(vault_url, *creds, timeout=2, clock=fake_clock)
        agent, identity = agent_on(tmp_path, tenant, device, VaultTransitKeyService(session))
        with agent:
            _record(agent, 2, 0)
            assert agent.sync_once().ok
            first_token = session.token_accessor
            assert session.logins == 1

            # Vault goes away, and the token's max TTL passes meanwhile: the token is dead for good.
            outage = proxy.inject("*", r".*", status=503, times=10**6)
            time.sleep(TTL_S + 0.3)
            fake_clock.advance(TTL_S + 0.3)  # the session's clock too: it knows the token expired
            for i in range(3):
                _record(agent, 2, 10 + 2 * i)
                report = agent.sync_once()
                assert report.offline and not report.ok
                assert any("VaultUnavailable" in e for e in report.errors), report.errors
            status = agent.status()
            assert status["online"] is False and status["streams"]["telemetry"]["queue_depth"] == 6

            outage.times = outage.fired  # Vault answers again
            report = agent.sync_once()
            assert report.ok and report.streams["telemetry"].rows_sent == 6
            assert session.logins == 2 and session.token_accessor != first_token  # re-authenticated
            assert agent.status()["streams"]["telemetry"]["queue_depth"] == 0

    rows = _uploaded(LocalObjectStore(tmp_path / "store"), tenant, device, central_keys, identity)
    assert [seq for stream, seq, _ in rows if stream == "telemetry"] == list(range(1, 9))
    assert {key_id for *_, key_id in rows} == {f"vault:transit/tenant-{tenant}:v1"}


def test_token_refused_by_vault_is_replaced_without_going_offline(
    openbao, vault_admin, central_keys, unique_id, fake_clock, tmp_path
) -> None:
    tenant, device = unique_id("t"), unique_id("d")
    creds = vault_admin.enrol_device(tenant, device, token_ttl=f"{TTL_S:.0f}s", token_max_ttl=f"{TTL_S:.0f}s")
    # the session's own clock stands still: only Vault knows the token has expired
    session = VaultSession(openbao[0], *creds, clock=fake_clock)
    agent, identity = agent_on(tmp_path, tenant, device, VaultTransitKeyService(session))
    with agent:
        _record(agent, 2, 0)
        assert agent.sync_once().ok
        first = session.token_accessor
        time.sleep(TTL_S + 0.3)
        _record(agent, 3, 10)
        report = agent.sync_once()
        assert report.ok and report.streams["telemetry"].rows_sent == 3
        assert session.logins == 2 and session.token_accessor != first
    rows = _uploaded(LocalObjectStore(tmp_path / "store"), tenant, device, central_keys, identity)
    assert [seq for stream, seq, _ in rows if stream == "telemetry"] == list(range(1, 6))


def test_revoked_device_keeps_its_rows_cached_and_uploads_nothing(
    openbao, vault_admin, unique_id, tmp_path
) -> None:
    tenant, device = unique_id("t"), unique_id("d")
    creds = vault_admin.enrol_device(tenant, device, token_ttl="60s")
    session = VaultSession(openbao[0], *creds)
    agent, _ = agent_on(tmp_path, tenant, device, VaultTransitKeyService(session))
    with agent:
        _record(agent, 2, 0)
        assert agent.sync_once().ok
        uploaded = {o.key for o in agent.store.list("").objects}
        vault_admin.revoke_device(tenant, device)
        _record(agent, 3, 10)
        report = agent.sync_once()
        assert not report.ok
        assert any("DeviceRevoked" in e for s in report.streams.values() for e in s.errors)
        assert agent.status()["streams"]["telemetry"]["queue_depth"] == 3  # nothing lost, nothing sent
        assert {o.key for o in agent.store.list("").objects} == uploaded


# ----------------------------------------------------------------------------- cache key at rest
def _encodings(key: bytes) -> list[bytes]:
    return [
        key,
        key.hex().encode(),
        key.hex().upper().encode(),
        base64.b64encode(key),
        base64.urlsafe_b64encode(key),
        base64.b64encode(key).rstrip(b"="),
    ]


def _files_holding(root: Path, secret: bytes) -> list[Path]:
    found = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            if any(enc in data for enc in _encodings(secret)):
                found.append(p)
    return found


DEVICE_TOML = """
tenant_id = "{tenant}"
device_id = "{device}"
cache_path = "data/cache.duckdb"
identity_path = "data/identity.pem"
platform_public_key_path = "data/platform.pub"

[cache_key]
source = "vault"
secret_path = "{secret_path}"
field = "cache_key"

[keys]
source = "vault"

[vault]
addr = "{addr}"
role_id_path = "creds/role_id"
secret_id_path = "creds/secret_id"

[object_store]
url = "store"
"""


def test_cache_key_comes_from_vault_kv_and_is_never_stored_beside_the_database(
    openbao, vault_admin, central_keys, unique_id, tmp_path
) -> None:
    tenant, device = unique_id("t"), unique_id("d")
    role_id, secret_id = vault_admin.enrol_device(tenant, device, token_ttl="60s")
    cache_key = secrets.token_bytes(32)
    vault_admin.write_device_secret(tenant, device, "cache", {"cache_key": cache_key.hex()})
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "role_id").write_text(role_id)
    (tmp_path / "creds" / "secret_id").write_text(secret_id)
    for name in ("role_id", "secret_id"):  # credential files must be private
        (tmp_path / "creds" / name).chmod(0o600)
    data = tmp_path / "data"
    data.mkdir()
    identity = DeviceIdentity.generate(tenant, device)
    identity.save(data / "identity.pem")
    (data / "platform.pub").write_text(PlatformSigner.generate().public_key_bytes().hex())
    (tmp_path / "device.toml").write_text(
        DEVICE_TOML.format(
            tenant=tenant, device=device, addr=openbao[0], secret_path=device_kv_path(tenant, device, "cache")
        )
    )

    with DeviceAgent(load_config(tmp_path / "device.toml")) as agent:
        _record(agent, 5, 0)
        agent.put("config", "pump", {"mode": "eco"})
        assert agent.sync_once().ok
        _record(agent, 5, 100)  # some rows stay in the cache at rest

    assert (data / "cache.duckdb").exists()
    assert _files_holding(data, cache_key) == [], "the cache key must not be written beside the database"
    assert _files_holding(tmp_path / "store", cache_key) == []
    # the file really is encrypted under that key: another key does not open it, the Vault key does
    with pytest.raises(CacheKeyError):
        DeviceCache.open(
            data / "cache.duckdb", tenant_id=tenant, device_id=device, key=secrets.token_bytes(32)
        )
    with DeviceCache.open(data / "cache.duckdb", tenant_id=tenant, device_id=device, key=cache_key) as cache:
        assert cache.stats()["streams"]["telemetry"]["queue_depth"] == 5
    rows = _uploaded(LocalObjectStore(tmp_path / "store"), tenant, device, central_keys, identity)
    assert [seq for stream, seq, _ in rows if stream == "telemetry"] == [1, 2, 3, 4, 5]


def test_simulated_devices_keep_no_cache_key_in_their_device_directory(tmp_path) -> None:
    from edgeplat.simulator import SimulationConfig, simulate
    from edgeplat.simulator.parts import default_parts, load_device

    simulate(
        SimulationConfig(devices=2, tenants=2, hours=0.1, offline_fraction=0.0, leave_offline=True),
        home=tmp_path,
    )
    parts = default_parts(tmp_path)
    caches = sorted(parts.devices_dir.glob("*/*/cache.duckdb"))
    assert len(caches) == 2
    for cache in caches:
        tenant, device = cache.parent.parent.name, cache.parent.name
        _, key = load_device(parts, tenant, device)
        assert _files_holding(cache.parent, key) == []
        assert _files_holding(parts.devices_dir, key) == []
