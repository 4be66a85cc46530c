"""Credential files readable by others are refused; folders for keys and identities are 0700.

Like ssh: the AppRole role id and secret id, the cache key, the keyring, a device identity
and the platform signing key are refused with an error naming the file and ``chmod 600``
when group or others can read them. Folders created for keys, identities and the lakehouse
are 0700 (the lakehouse's in test_lakehouse_secrets.py).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_sync.config import ConfigError, cache_key, device_identity, vault_session
from edge_sync.identity import DeviceIdentity, PlatformSigner
from edge_sync.keys import LocalKeyring
from edge_sync.private_files import InsecureFileError, private_dir
from edgeplat.simulator.parts import default_parts


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask():
    old = os.umask(0o022)  # files and folders come out 0644/0755 unless the code says otherwise
    yield
    os.umask(old)


# ----------------------------------------------------------------------------- refused files
@pytest.mark.parametrize("shared", [0o644, 0o640, 0o604, 0o660])
def test_vault_credentials_readable_by_others_are_refused(tmp_path: Path, shared: int) -> None:
    role, secret = tmp_path / "role_id", tmp_path / "secret_id"
    role.write_text("r")
    secret.write_text("s")
    role.chmod(0o600)
    secret.chmod(shared)
    config = SimpleNamespace(
        vault=SimpleNamespace(
            addr="http://127.0.0.1:1", role_id_path=role, secret_id_path=secret, verify=True, timeout_s=1
        )
    )
    with pytest.raises(
        ConfigError, match=rf"vault.secret_id_path {secret} is accessible by group or others"
    ) as e:
        vault_session(config)
    assert f"chmod 600 {secret}" in str(e.value)
    secret.chmod(0o600)
    assert repr(vault_session(config)).startswith("VaultSession(")  # private files are read


def test_cache_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "cache.key"
    key.write_text("00" * 32)
    config = SimpleNamespace(cache_key=SimpleNamespace(source="file", path=key))
    with pytest.raises(ConfigError, match=rf"chmod 600 {key}"):
        cache_key(config, None)
    key.chmod(0o600)
    assert cache_key(config, None) == bytes(32)


def test_identity_signing_key_and_keyring_readable_by_others_are_refused(tmp_path: Path) -> None:
    ident = tmp_path / "id.pem"
    DeviceIdentity.generate("t", "d").save(ident)
    signer = tmp_path / "platform.pem"
    PlatformSigner.generate().save(signer)
    keyring = LocalKeyring(tmp_path / "keys")
    dk = keyring.generate_data_key("t")
    for path in (ident, signer, tmp_path / "keys" / "t.json"):
        assert mode(path) == 0o600  # as written
        path.chmod(0o644)
    with pytest.raises(InsecureFileError, match=f"device identity {ident}.*chmod 600"):
        DeviceIdentity.load(ident)
    with pytest.raises(ConfigError, match=f"chmod 600 {ident}"):
        device_identity(SimpleNamespace(identity_path=ident, tenant_id="t", device_id="d"))
    with pytest.raises(InsecureFileError, match=f"platform signing key {signer}"):
        PlatformSigner.load(signer)
    with pytest.raises(InsecureFileError, match="keyring file"):
        LocalKeyring(tmp_path / "keys").unwrap("t", dk.key_id, dk.wrapped)


# ----------------------------------------------------------------------------- private folders
def test_key_identity_and_platform_key_folders_are_0700(tmp_path: Path) -> None:
    LocalKeyring(tmp_path / "a" / "keyring").generate_data_key("t")
    DeviceIdentity.generate("t", "d").save(tmp_path / "b" / "t" / "d" / "identity.pem")
    PlatformSigner.generate().save(tmp_path / "c" / "platform" / "platform.pem")
    for d in ("a", "a/keyring", "b", "b/t", "b/t/d", "c", "c/platform"):
        assert mode(tmp_path / d) == 0o700, d
    # a keyring folder that exists with 0755 is closed on first use
    (tmp_path / "open").mkdir(mode=0o755)
    LocalKeyring(tmp_path / "open").generate_data_key("t")
    assert mode(tmp_path / "open") == 0o700


def test_the_simulators_key_and_device_folders_are_0700(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir(mode=0o755)  # an existing home made before the fix
    default_parts(tmp_path)
    assert mode(tmp_path / "keys") == 0o700 and mode(tmp_path / "devices") == 0o700
    assert mode(tmp_path / "keys" / "platform.pem") == 0o600


def test_private_dir_creates_every_missing_level_0700(tmp_path: Path) -> None:
    private_dir(tmp_path / "x" / "y" / "z")
    assert [mode(tmp_path / p) for p in ("x", "x/y", "x/y/z")] == [0o700] * 3
