"""The device's object-store credential, as rendered from Vault, turned into an object store.

The operator provisions one S3 credential per tenant, scoped to ``tenant=<T>/`` (see
``edgeplat.security.tenant_storage``), into the tenant's shared KV v2 secret
``tenants/<T>/shared/objectstore``. The device renders it whole (no ``#field``) into its
runtime directory with ``VaultSession.render_secrets({"objectstore.json":
"tenants/<T>/shared/objectstore"}, runtime_dir)`` and builds its store from the file here.
When the credential is rotated the file is rewritten with the new KV version; build the
store again from it (``StorageCredentials.load`` is cheap).

The tenant key lets any device of the tenant write any key under ``tenant=<T>/``. On AWS a
device can instead take per-device credentials from the IoT credentials provider
(``edge_sync.iot_credentials``, ``object_store.credentials = "iot"``), which reach only its
own prefix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_sync.objectstore import ObjectStore
from edge_sync.objectstore_url import from_url

SECRET_NAME = "objectstore"
REQUIRED = ("url", "access_key_id", "secret_access_key")


class StorageCredentialsError(ValueError):
    """The rendered credential is missing or incomplete; the message says what to provision."""


@dataclass(frozen=True)
class StorageCredentials:
    """An S3 URL and the key that may write under this tenant's prefix of it (secret hidden in repr)."""

    url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    endpoint_url: str | None = None
    region: str = "us-east-1"
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_secret(
        cls, data: Mapping[str, Any], where: str = "the objectstore secret"
    ) -> StorageCredentials:
        missing = [k for k in REQUIRED if not data.get(k)]
        if missing:
            raise StorageCredentialsError(
                f"{where} lacks {', '.join(missing)}: provision the tenant's storage credential with "
                "`edgeplat security provision-storage --tenant <T>`"
            )
        if not str(data["url"]).startswith("s3://"):
            raise StorageCredentialsError(f"{where} has url {data['url']!r}; expected s3://bucket/prefix")
        return cls(
            url=str(data["url"]),
            access_key_id=str(data["access_key_id"]),
            secret_access_key=str(data["secret_access_key"]),
            endpoint_url=data.get("endpoint_url") or None,
            region=str(data.get("region") or "us-east-1"),
            session_token=data.get("session_token") or None,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StorageCredentials:
        """Read a credential rendered by ``VaultSession.render_secrets`` (the whole secret as JSON)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise StorageCredentialsError(
                f"{p} does not exist: render tenants/<T>/shared/{SECRET_NAME} there first"
            ) from None
        except ValueError:
            raise StorageCredentialsError(
                f"{p} is not JSON: render the whole secret (no '#field' in the render mapping)"
            ) from None
        if not isinstance(data, dict):
            raise StorageCredentialsError(
                f"{p} holds {type(data).__name__}, expected the secret's JSON object"
            )
        return cls.from_secret(data, where=str(p))

    def store(self, **options: Any) -> ObjectStore:
        """An ``S3ObjectStore`` with these credentials; ``options`` go to it (timeouts, retries)."""
        return from_url(
            self.url,
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            session_token=self.session_token,
            **options,
        )


class VaultRenderedStore:
    """The agent's object store built from the tenant credential Vault renders, kept current.

    ``refresh()`` re-renders the secret (a no-op read when its KV version is unchanged) and
    returns a new store only when the credential file changed, so the agent swaps stores
    after a rotation and otherwise keeps the one it has. When Vault cannot be reached at
    start, a credential rendered earlier into ``runtime_dir`` is used.
    """

    FILE = f"{SECRET_NAME}.json"

    def __init__(self, vault: Any, tenant_id: str, runtime_dir: Path, options: Mapping[str, Any]) -> None:
        from edge_sync.vault_admin import shared_kv_path

        self.vault, self.runtime_dir, self.options = vault, Path(runtime_dir), dict(options)
        self.mapping = {self.FILE: shared_kv_path(tenant_id, SECRET_NAME)}

    @property
    def path(self) -> Path:
        return self.runtime_dir / self.FILE

    def initial(self) -> ObjectStore:
        """The store to start with: freshly rendered, or the earlier rendering if Vault is down."""
        from edge_sync.vault import VaultUnavailable

        try:
            self.vault.render_secrets(self.mapping, self.runtime_dir)
        except VaultUnavailable:
            if not self.path.exists():
                raise
        return StorageCredentials.load(self.path).store(**self.options)

    def refresh(self) -> ObjectStore | None:
        """A store with the rotated credential, or None when it has not changed."""
        if not self.vault.render_secrets(self.mapping, self.runtime_dir):
            return None
        return StorageCredentials.load(self.path).store(**self.options)
