"""Device AppRole secret ids expire and serve a limited number of logins; the agent renews them.

Against the real OpenBao dev server: the role's limits as enrolled, a secret id refused
after its uses and after its TTL, and ``VaultSession.renew_secret_id`` replacing a secret
id when half its TTL has passed or few logins remain: the new one is written back to the
0600 file and logs in, the old one is destroyed at once.
"""

from __future__ import annotations

import stat
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hvac import exceptions as hvac_exc

from edge_sync.agent import DeviceAgent
from edge_sync.config import load_config, vault_session
from edge_sync.identity import DeviceIdentity, PlatformSigner
from edge_sync.vault import SECRET_ID_MIN_USES, DeviceRevoked, VaultSession
from edge_sync.vault_admin import APPROLE_MOUNT, DEVICE_SECRET_ID_USES, device_role_name

pytestmark = [pytest.mark.services, pytest.mark.xdist_group("openbao")]


class WallClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_enrolled_secret_ids_expire_and_have_a_use_limit(openbao, vault_admin, unique_id) -> None:
    tenant, device = unique_id("t"), unique_id("d")
    vault_admin.enrol_device(tenant, device)
    role = vault_admin.client.auth.approle.read_role(
        device_role_name(tenant, device), mount_point=APPROLE_MOUNT
    )
    assert role["data"]["secret_id_ttl"] == 30 * 24 * 3600
    assert role["data"]["secret_id_num_uses"] == DEVICE_SECRET_ID_USES


def test_a_secret_id_is_refused_after_its_uses(openbao, vault_admin, unique_id) -> None:
    role_id, secret_id = vault_admin.enrol_device(unique_id("t"), unique_id("d"), secret_id_num_uses=2)
    for _ in range(2):
        VaultSession(openbao[0], role_id, secret_id).login()
    with pytest.raises(DeviceRevoked, match="secret id expired"):
        VaultSession(openbao[0], role_id, secret_id).login()


def test_a_secret_id_is_refused_after_its_ttl(openbao, vault_admin, unique_id) -> None:
    role_id, secret_id = vault_admin.enrol_device(unique_id("t"), unique_id("d"), secret_id_ttl="2s")
    VaultSession(openbao[0], role_id, secret_id).login()
    time.sleep(3)
    with pytest.raises(DeviceRevoked):
        VaultSession(openbao[0], role_id, secret_id).login()


def test_the_session_renews_its_secret_id_at_half_its_ttl(openbao, vault_admin, unique_id, tmp_path) -> None:
    tenant, device = unique_id("t"), unique_id("d")
    role_id, secret_id = vault_admin.enrol_device(tenant, device, secret_id_ttl="600s")
    path = tmp_path / "secret_id"
    path.write_text(secret_id)
    path.chmod(0o600)
    wall = WallClock()
    session = VaultSession(openbao[0], role_id, secret_id, secret_id_path=path, wall_clock=wall)
    assert session.renew_secret_id() is False  # fresh: nothing to do
    wall.offset = 299
    assert session.renew_secret_id() is False
    wall.offset = 301
    assert session.renew_secret_id() is True
    renewed = path.read_text().strip()
    assert renewed != secret_id and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert session.secret_id_renewals == 1
    wall.offset = 0
    assert session.renew_secret_id() is False  # the new one is fresh
    VaultSession(openbao[0], role_id, renewed).login()  # the new one works
    with pytest.raises(DeviceRevoked):  # the old one was destroyed, not left to expire
        VaultSession(openbao[0], role_id, secret_id).login()
    # the session itself logs in again with the new one
    session.login()
    assert session.logins == 2


def test_the_session_renews_its_secret_id_when_few_uses_remain(openbao, vault_admin, unique_id) -> None:
    uses = SECRET_ID_MIN_USES + 2
    role_id, secret_id = vault_admin.enrol_device(unique_id("t"), unique_id("d"), secret_id_num_uses=uses)
    session = VaultSession(openbao[0], role_id, secret_id)
    session.login()  # uses - 1 left
    assert session.renew_secret_id() is False
    session.login()  # uses - 2 = SECRET_ID_MIN_USES left
    assert session.renew_secret_id() is True
    fresh = VaultSession(openbao[0], role_id, session._secret_id)
    for _ in range(uses):  # a fresh secret id carries the role's full number of uses
        fresh.login()


def test_the_agents_session_renews_into_its_secret_id_file(openbao, vault_admin, unique_id, tmp_path) -> None:
    role_id, secret_id = vault_admin.enrol_device(unique_id("t"), unique_id("d"))
    files = {}
    for name, value in (("role_id", role_id), ("secret_id", secret_id)):
        files[name] = tmp_path / name
        files[name].write_text(value + "\n")
        files[name].chmod(0o600)
    config = SimpleNamespace(
        vault=SimpleNamespace(
            addr=openbao[0],
            role_id_path=files["role_id"],
            secret_id_path=files["secret_id"],
            verify=True,
            timeout_s=5,
        )
    )
    session = vault_session(config)
    assert session.renew_secret_id(force=True)
    renewed = Path(files["secret_id"]).read_text().strip()
    assert renewed != secret_id
    vault_session(config).login()  # the agent's next start reads the renewed file


def test_a_device_cannot_manage_another_devices_secret_ids(openbao, vault_admin, unique_id) -> None:
    tenant = unique_id("t")
    victim_role = device_role_name(tenant, "victim")
    _, victim_secret = vault_admin.enrol_device(tenant, "victim")
    session = VaultSession(openbao[0], *vault_admin.enrol_device(tenant, unique_id("d")))

    for call in (
        lambda c: c.auth.approle.generate_secret_id(victim_role, mount_point=APPROLE_MOUNT),
        lambda c: c.auth.approle.read_secret_id(victim_role, victim_secret, mount_point=APPROLE_MOUNT),
        lambda c: c.auth.approle.destroy_secret_id(victim_role, victim_secret, mount_point=APPROLE_MOUNT),
    ):
        with pytest.raises(hvac_exc.Forbidden):
            session.call(call)


def test_a_running_agent_renews_its_secret_id_and_restarts_on_the_new_one(
    openbao, vault_admin, unique_id, tmp_path: Path
) -> None:
    """End to end through ``DeviceAgent``: a secret id with few logins left is replaced at the
    next sync, written to the 0600 file; the old one is dead, uploads go on, and an agent
    started from the same files logs in with the renewed id and syncs."""
    tenant, device = unique_id("t"), unique_id("d")
    vault_admin.ensure_tenant(tenant)
    # the agent's first login leaves SECRET_ID_MIN_USES: due for renewal at the first sync
    role_id, secret_id = vault_admin.enrol_device(tenant, device, secret_id_num_uses=SECRET_ID_MIN_USES + 1)
    (tmp_path / "role_id").write_text(role_id)
    (tmp_path / "secret_id").write_text(secret_id)
    DeviceIdentity.generate(tenant, device).save(tmp_path / "id.pem")
    (tmp_path / "platform.pub").write_text(PlatformSigner.generate().public_key_bytes().hex())
    (tmp_path / "cache.key").write_text("ab" * 32)
    for name in ("role_id", "secret_id", "cache.key"):
        (tmp_path / name).chmod(0o600)
    store = tmp_path / "store"
    (tmp_path / "device.toml").write_text(
        f'tenant_id = "{tenant}"\ndevice_id = "{device}"\ncache_path = "cache.duckdb"\n'
        'identity_path = "id.pem"\nplatform_public_key_path = "platform.pub"\n'
        '[cache_key]\nsource = "file"\npath = "cache.key"\n'
        '[keys]\nsource = "vault"\n'
        f'[vault]\naddr = "{openbao[0]}"\nrole_id_path = "role_id"\nsecret_id_path = "secret_id"\n'
        f'[object_store]\nurl = "{store}"\n'
    )
    config = load_config(tmp_path / "device.toml")
    with DeviceAgent(config) as agent:
        agent.record("telemetry", {"metric": "temp", "value": 1.0})
        report = agent.sync_once()
        assert report.ok, report.to_dict()
        renewed = (tmp_path / "secret_id").read_text().strip()
        assert renewed != secret_id
        assert stat.S_IMODE((tmp_path / "secret_id").stat().st_mode) == 0o600
        with pytest.raises(DeviceRevoked):
            VaultSession(openbao[0], role_id, secret_id).login()  # the old id was destroyed
        agent.record("telemetry", {"metric": "temp", "value": 2.0})
        report = agent.sync_once()
        assert report.ok and report.streams["telemetry"].rows_sent == 1, report.to_dict()
    with DeviceAgent(load_config(tmp_path / "device.toml")) as restarted:  # logs in with the renewed id
        restarted.record("telemetry", {"metric": "temp", "value": 3.0})
        report = restarted.sync_once()
        assert report.ok and report.streams["telemetry"].rows_sent == 1, report.to_dict()
    assert len(list(store.rglob("*.batch"))) == 3
