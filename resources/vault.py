"""Vault (or OpenBao) as Dagster resources: the central AppRole session and transit as the key service.

``VaultResource`` holds the Vault address and the central AppRole credentials. Give them
as ``dg.EnvVar("EDGEPLAT_VAULT_ADDR")``, ``dg.EnvVar("EDGEPLAT_VAULT_ROLE_ID")`` and
``dg.EnvVar("EDGEPLAT_VAULT_SECRET_ID")`` (see :func:`vault_from_env`): Dagster then keeps
only the variable names in run config and the UI and reads the values when a run starts.
The resource never logs them and hides them from ``repr``.

``VaultKeyServiceResource`` is a ``KeyServiceResource`` whose ``get()`` returns
``edge_sync.vault_keys.VaultTransitKeyService`` over that session, so the ingest assets,
which ask for a ``KeyServiceResource``, unwrap batch data keys with ``transit/decrypt``
without any change.
"""

import dagster as dg
from pydantic import Field, PrivateAttr

from edge_sync.keys import KeyService
from edge_sync.vault import VaultSession
from edge_sync.vault_keys import VaultTransitKeyService
from resources.keys import KeyServiceResource

ADDR_ENV = "EDGEPLAT_VAULT_ADDR"
ROLE_ID_ENV = "EDGEPLAT_VAULT_ROLE_ID"
SECRET_ID_ENV = "EDGEPLAT_VAULT_SECRET_ID"  # noqa: S105 - the variable's name, not a secret


class VaultResource(dg.ConfigurableResource):
    """The central service's Vault login: address and AppRole role id / secret id (all via ``dg.EnvVar``)."""

    addr: str = Field(description=f"Vault address, e.g. dg.EnvVar('{ADDR_ENV}')")
    role_id: str = Field(repr=False, description=f"AppRole role id: dg.EnvVar('{ROLE_ID_ENV}')")
    secret_id: str = Field(
        repr=False, description=f"AppRole secret id: dg.EnvVar('{SECRET_ID_ENV}'), never a literal"
    )
    renew_fraction: float = Field(default=0.5, description="renew the token at this fraction of its TTL")
    timeout_s: float = Field(default=10.0, description="HTTP timeout per Vault request, seconds")
    ca_cert: str = Field(
        default="", description="CA bundle path for Vault's TLS certificate ('' = system CAs)"
    )
    transit_mount: str = Field(default="transit", description="mount point of the transit engine")

    # One session per resource instance (per run): the token is renewed, not re-minted, per call.
    _session: VaultSession | None = PrivateAttr(default=None)

    def __repr__(self) -> str:
        return f"VaultResource(addr={self.addr!r}, transit_mount={self.transit_mount!r})"

    __str__ = __repr__

    def session(self) -> VaultSession:
        """The AppRole session (logs in lazily, on first use)."""
        if self._session is None:
            if not self.addr:
                raise ValueError(
                    f"VaultResource needs addr: set {ADDR_ENV} (e.g. https://vault.example:8200)"
                )
            if not self.role_id or not self.secret_id:
                raise ValueError(
                    f"VaultResource needs role_id and secret_id: set {ROLE_ID_ENV} and {SECRET_ID_ENV} "
                    "from the central AppRole (VaultAdmin.enrol_central)"
                )
            self._session = VaultSession(
                self.addr,
                self.role_id,
                self.secret_id,
                renew_fraction=self.renew_fraction,
                timeout=self.timeout_s,
                verify=self.ca_cert or True,
            )
        return self._session

    def key_service(self) -> VaultTransitKeyService:
        """Transit as the batch ``KeyService`` (central policy: ``decrypt`` only)."""
        return VaultTransitKeyService(self.session(), mount=self.transit_mount)

    def close(self) -> None:
        """Revoke the session's token (best effort) so it cannot be reused after the run."""
        if self._session is not None:
            self._session.close()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()


class VaultKeyServiceResource(KeyServiceResource):
    """A ``KeyServiceResource`` backed by Vault transit (``kind="vault"``)."""

    kind: str = "vault"
    vault: VaultResource

    def get(self) -> KeyService:
        return self.vault.key_service()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # Dagster tears down the resource the run was given, not the nested one it holds.
        self.vault.close()


def vault_from_env() -> VaultResource:
    """The production wiring: every Vault setting that is secret or per-site comes from the environment."""
    return VaultResource(
        addr=dg.EnvVar(ADDR_ENV), role_id=dg.EnvVar(ROLE_ID_ENV), secret_id=dg.EnvVar(SECRET_ID_ENV)
    )
