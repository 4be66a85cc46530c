"""KV secrets rendered to a runtime directory, against a real OpenBao server.

Like Vault Agent templates: one 0600 file per mapping entry, only inside the runtime
directory, rewritten when the KV version changes. Secret values, the token and the
secret id never reach repr(), str() or the logs.
"""

from __future__ import annotations

import logging
import stat

import pytest

from edge_sync.vault import SecretNotFound, VaultSession
from edge_sync.vault_admin import device_kv_path, shared_kv_path

pytestmark = [pytest.mark.services, pytest.mark.xdist_group("openbao")]

PASSWORD = "s3cr3t-PASSWORD-value-9f1e"
API_KEY = "api-key-value-77c0d2"


@pytest.fixture
def device(openbao, vault_admin, unique_id):
    tenant, device_id = unique_id("t"), unique_id("d")
    role_id, secret_id = vault_admin.enrol_device(tenant, device_id, token_ttl="60s")
    vault_admin.write_device_secret(tenant, device_id, "mqtt", {"username": "dev", "password": PASSWORD})
    vault_admin.write_shared_secret(tenant, "cloud", {"api_key": API_KEY})
    session = VaultSession(openbao[0], role_id, secret_id)
    return tenant, device_id, session, secret_id


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_render_to_private_files_in_the_runtime_dir_only(device, tmp_path):
    tenant, device_id, session, _ = device
    runtime = tmp_path / "run" / "edge"
    mapping = {
        "mqtt.json": device_kv_path(tenant, device_id, "mqtt"),
        "mqtt_password": device_kv_path(tenant, device_id, "mqtt") + "#password",
        "cloud/api_key": shared_kv_path(tenant, "cloud") + "#api_key",
    }
    written = session.render_secrets(mapping, runtime)

    assert sorted(p.relative_to(runtime.resolve()).as_posix() for p in written) == sorted(mapping)
    assert (runtime / "mqtt_password").read_text() == PASSWORD
    assert (runtime / "cloud" / "api_key").read_text() == API_KEY
    assert '"password": "' + PASSWORD in (runtime / "mqtt.json").read_text()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(p.relative_to(runtime).as_posix() for p in files) == sorted(mapping)  # no temp leftovers
    assert all(_mode(p) == 0o600 for p in files)
    assert _mode(runtime) == 0o700

    for bad in ("../escape", "/etc/edge-secret", "cloud/../../escape"):
        with pytest.raises(ValueError, match="inside the runtime directory"):
            session.render_secrets({bad: shared_kv_path(tenant, "cloud")}, runtime)
    assert not (tmp_path / "run" / "escape").exists() and not (tmp_path / "escape").exists()


def test_rendered_files_refresh_when_the_kv_version_changes(device, vault_admin, tmp_path):
    tenant, device_id, session, _ = device
    mapping = {"mqtt_password": device_kv_path(tenant, device_id, "mqtt") + "#password"}
    target = session.render_secrets(mapping, tmp_path)[0]
    assert session.rendered[target].version == 1

    assert session.render_secrets(mapping, tmp_path) == []  # unchanged version: nothing rewritten

    vault_admin.write_device_secret(tenant, device_id, "mqtt", {"username": "dev", "password": "rotated-pw"})
    assert session.render_secrets(mapping, tmp_path) == [target]
    assert target.read_text() == "rotated-pw"
    assert session.rendered[target].version == 2
    assert _mode(target) == 0o600

    target.unlink()  # a file removed behind our back is rendered again
    assert session.render_secrets(mapping, tmp_path) == [target]


def test_missing_secret_and_field_are_clear_errors(device, tmp_path):
    tenant, device_id, session, _ = device
    with pytest.raises(SecretNotFound, match="no secret at"):
        session.read_secret(device_kv_path(tenant, device_id, "absent"))
    with pytest.raises(KeyError, match="no field 'nope'"):
        session.render_secrets({"x": device_kv_path(tenant, device_id, "mqtt") + "#nope"}, tmp_path)
    with pytest.raises(ValueError, match="relative to the KV mount"):
        session.read_secret("/" + device_kv_path(tenant, device_id, "mqtt"))


def test_secrets_token_and_secret_id_never_reach_repr_or_logs(device, tmp_path, caplog):
    tenant, device_id, session, secret_id = device
    caplog.set_level(logging.DEBUG)
    session.render_secrets(
        {
            "mqtt.json": device_kv_path(tenant, device_id, "mqtt"),
            "api_key": shared_kv_path(tenant, "cloud") + "#api_key",
        },
        tmp_path,
    )
    assert session.read_secret(device_kv_path(tenant, device_id, "mqtt"))["password"] == PASSWORD
    token = session.ensure_token().token
    assert token and session.token_accessor

    shown = repr(session) + str(session) + repr(session.rendered) + caplog.text
    assert "rendered secret" in caplog.text and session.token_accessor in caplog.text  # logs did run
    for value in (PASSWORD, API_KEY, token, secret_id):
        assert value not in shown
