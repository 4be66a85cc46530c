"""The live path's per-device broker login from Vault: a real OpenBao holds each device's MQTT
username and password, the agent renders them (0600, in its runtime directory) when its run loop
starts, and a real Mosquitto that refuses anonymous clients accepts the device's messages."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_sync.agent import DeviceAgent
from edge_sync.config import load_config
from edge_sync.identity import DeviceIdentity, PlatformSigner
from edge_sync.live_message import parse
from tests.support.mosquitto import running_mosquitto
from tests.support.processes import HOST
from tests.support.services import started
from tests.support.sink_servers import wait_for

pytestmark = [pytest.mark.services, pytest.mark.xdist_group("openbao")]

PASSWORD = "mqtt-pw-4be1c9"


def test_the_agent_logs_in_to_the_broker_with_its_vault_rendered_login(
    openbao, vault_admin, unique_id, tmp_path: Path
) -> None:
    tenant, device = unique_id("t"), unique_id("d")
    role_id, secret_id = vault_admin.enrol_device(tenant, device, token_ttl="60s")
    vault_admin.write_device_secret(tenant, device, "mqtt", {"username": device, "password": PASSWORD})
    passwords = tmp_path / "passwd"
    passwords.touch()
    for user, pw in ((device, PASSWORD), ("spy", "spy-pw")):
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, pw], check=True)
    (tmp_path / "creds").mkdir()
    for name, value in (("role_id", role_id), ("secret_id", secret_id)):
        (tmp_path / "creds" / name).write_text(value)
        (tmp_path / "creds" / name).chmod(0o600)
    identity = DeviceIdentity.generate(tenant, device)
    identity.save(tmp_path / "id.pem")
    (tmp_path / "platform.pub").write_text(PlatformSigner.generate().public_key_bytes().hex())
    (tmp_path / "cache.key").write_text(bytes(range(32)).hex())
    (tmp_path / "cache.key").chmod(0o600)
    got: list[bytes] = []
    with started(
        "Mosquitto", running_mosquitto(tmp_path, f"password_file {passwords}\n", anonymous=False)
    ) as broker:
        (tmp_path / "device.toml").write_text(
            f'tenant_id = "{tenant}"\ndevice_id = "{device}"\ncache_path = "cache.duckdb"\n'
            'identity_path = "id.pem"\nplatform_public_key_path = "platform.pub"\n'
            '[cache_key]\nsource = "file"\npath = "cache.key"\n[keys]\nsource = "local"\nkeyring_dir = "keyring"\n'
            f'[vault]\naddr = "{openbao[0]}"\nrole_id_path = "creds/role_id"\nsecret_id_path = "creds/secret_id"\n'
            '[object_store]\nurl = "store"\n'
            f'[live]\nhost = "{HOST}"\nport = {broker.port}\ncredentials = "vault"\nruntime_dir = "run"\n'
        )
        spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spy")
        spy.username_pw_set("spy", "spy-pw")
        spy.on_message = lambda c, u, m: got.append(bytes(m.payload))
        spy.connect(HOST, broker.port)
        spy.subscribe("edgeplat/#", qos=1)
        spy.loop_start()
        agent = DeviceAgent(load_config(tmp_path / "device.toml"))
        stop = threading.Event()
        runner = threading.Thread(target=agent.run, args=(stop,), kwargs={"handle_signals": False})
        runner.start()
        try:
            assert wait_for(lambda: agent.live is not None and agent.live.stats()["connected"], timeout=10.0)
            agent.record("alerts", {"severity": "critical", "code": "vault-login", "message": "m"})
            assert wait_for(lambda: got, timeout=5.0), "the broker did not pass the device's message on"
        finally:
            stop.set()
            runner.join(timeout=30)
            spy.loop_stop()
            spy.disconnect()
    assert parse(f"edgeplat/{tenant}/{device}/alerts", got[0]).rows[0].row["code"] == "vault-login"
    rendered = tmp_path / "run" / "mqtt.json"
    assert rendered.stat().st_mode & 0o077 == 0
    assert PASSWORD not in (tmp_path / "device.toml").read_text()
