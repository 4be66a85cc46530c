"""The device's MQTT username and password for the live path, rendered from Vault.

With ``[live] credentials = "vault"`` the operator writes each device's broker login to the
device's KV v2 secret ``tenants/<T>/devices/<D>/mqtt`` (``username``, ``password``), and the
agent renders it into ``[live] runtime_dir`` (a 0600 file, like the object-store credential)
when its run loop starts the publisher. Nothing of it is written to ``device.toml``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SECRET_NAME = "mqtt"
FILE = "mqtt.json"


class LiveCredentialsError(ValueError):
    """The rendered MQTT login is missing or incomplete; the message says what to provision."""


def render_mqtt_login(vault: Any, tenant_id: str, device_id: str, runtime_dir: Path) -> tuple[str, str]:
    """Render the device's MQTT secret from Vault and return (username, password)."""
    from edge_sync.vault_admin import device_kv_path

    vault.render_secrets({FILE: device_kv_path(tenant_id, device_id, SECRET_NAME)}, runtime_dir)
    path = Path(runtime_dir) / FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LiveCredentialsError(f"{path}: {exc}") from None
    missing = [k for k in ("username", "password") if not isinstance(data.get(k), str) or not data[k]]
    if missing:
        raise LiveCredentialsError(
            f"Vault secret tenants/{tenant_id}/devices/{device_id}/{SECRET_NAME} lacks {missing}: "
            "write the device's broker login there (username, password)"
        )
    return data["username"], data["password"]
