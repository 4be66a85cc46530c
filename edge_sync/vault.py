"""Device-side Vault client: AppRole login, token lifecycle, KV secrets rendered to files.

A device holds a role id and a secret id (written at enrolment, see
``edge_sync.vault_admin``). :class:`VaultSession` logs in with them, renews its token at
``renew_fraction`` of the TTL, logs in again when renewal is refused or capped by the max
TTL, and tells a revoked device (:class:`DeviceRevoked`) from an unreachable server
(:class:`VaultUnavailable`). The AppRole secret id itself expires and serves a limited
number of logins: :meth:`VaultSession.renew_secret_id` swaps it for a new one (written back
to its file) at ``renew_fraction`` of its TTL or when few uses remain, and destroys the old
one. Secrets are read from KV v2 and, like Vault Agent templates,
rendered into mode-0600 files inside one runtime directory, rewritten only when their KV
version changes. Neither the token, the secret id nor any secret value is ever logged or
shown by ``repr``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import hvac
import requests
from hvac import exceptions as hvac_exc

from edge_sync.vault_admin import APPROLE_MOUNT, KV_MOUNT

log = logging.getLogger(__name__)

T = TypeVar("T")

# Server-side trouble: worth retrying later, says nothing about the device's standing.
UNAVAILABLE_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    hvac_exc.VaultDown,
    hvac_exc.InternalServerError,
    hvac_exc.BadGateway,
    hvac_exc.VaultNotInitialized,
    hvac_exc.RateLimitExceeded,
    hvac_exc.UnexpectedError,
)
# A secret id with this many logins left or fewer is replaced whatever its age.
SECRET_ID_MIN_USES = 10
# The server answered and said no.
REFUSED_ERRORS = (hvac_exc.InvalidRequest, hvac_exc.Forbidden, hvac_exc.Unauthorized, hvac_exc.InvalidPath)


class VaultError(Exception):
    """Base class of this module's errors."""


class VaultUnavailable(VaultError):
    """Vault could not be reached or is sealed/overloaded: retry later, keep working offline."""


class DeviceRevoked(VaultError):
    """Vault refused the device's login: its role or secret id was withdrawn. Re-enrol it."""


class SecretAccessDenied(VaultError):
    """The device's policy does not allow this path (another device's or tenant's secret)."""


class SecretNotFound(VaultError):
    """No secret (or only a deleted version) at this KV path."""


@dataclass
class _Token:
    ttl: float  # seconds granted by the last login or renewal (0 = never expires)
    obtained_at: float  # clock() when it was granted
    login_ttl: float  # seconds granted at login, to spot renewals capped by the max TTL
    renewable: bool
    accessor: str


@dataclass(frozen=True)
class RenderedSecret:
    """A secret file written by :meth:`VaultSession.render_secrets` (no value kept here)."""

    file: Path
    kv_path: str
    field: str | None
    version: int


class VaultSession:
    """An AppRole-authenticated hvac client that keeps its own token valid.

    Use :meth:`ensure_token` (or :meth:`call`) before talking to Vault; every method of
    this class does so itself. ``clock`` is injectable so tests can decide when renewal is
    due; it only drives this client's own schedule, Vault's expiry runs on its own time.
    """

    def __init__(
        self,
        addr: str,
        role_id: str,
        secret_id: str,
        *,
        renew_fraction: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        kv_mount: str = KV_MOUNT,
        approle_mount: str = APPROLE_MOUNT,
        timeout: float = 10.0,
        verify: bool | str = True,
        secret_id_path: str | os.PathLike[str] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0.0 < renew_fraction < 1.0:
            raise ValueError(f"renew_fraction must be between 0 and 1 (exclusive), got {renew_fraction}")
        if not role_id or not secret_id:
            raise ValueError("role_id and secret_id are required: take them from the device's enrolment")
        self.addr = addr
        self.kv_mount = kv_mount
        self.approle_mount = approle_mount
        self.renew_fraction = renew_fraction
        self.logins = 0
        self.renewals = 0
        self.secret_id_renewals = 0
        self.secret_id_path = Path(secret_id_path) if secret_id_path is not None else None
        self._role_id = role_id
        self._secret_id = secret_id
        self._role_name: str | None = None
        self._clock = clock
        self._wall_clock = wall_clock  # compared with the server's secret id creation time
        # token="" stops hvac from picking up VAULT_TOKEN or ~/.vault-token.
        self._client = hvac.Client(url=addr, token="", timeout=timeout, verify=verify)
        self._token: _Token | None = None
        self._lock = threading.RLock()
        self._rendered: dict[Path, RenderedSecret] = {}

    def __repr__(self) -> str:
        accessor = self._token.accessor if self._token else None
        return (
            f"VaultSession(addr={self.addr!r}, token_accessor={accessor!r}, "
            f"logins={self.logins}, renewals={self.renewals})"
        )

    __str__ = __repr__

    # -- token lifecycle -----------------------------------------------------------------

    @property
    def token_accessor(self) -> str | None:
        """Accessor of the current token (safe to log; it cannot be used to authenticate)."""
        return self._token.accessor if self._token else None

    @property
    def token_ttl(self) -> float | None:
        """Seconds granted by the last login or renewal."""
        return self._token.ttl if self._token else None

    def login(self) -> None:
        """Log in with the AppRole credentials, replacing any current token."""
        with self._lock:
            try:
                resp = self._client.auth.approle.login(
                    role_id=self._role_id, secret_id=self._secret_id, mount_point=self.approle_mount
                )
            except UNAVAILABLE_ERRORS as exc:
                raise VaultUnavailable(
                    f"cannot log in to Vault at {self.addr}: {type(exc).__name__}"
                ) from None
            except REFUSED_ERRORS as exc:
                self._token = None
                self._client.token = ""
                raise DeviceRevoked(
                    f"Vault at {self.addr} refused this device's AppRole login ({vault_error_message(exc)}): "
                    "the device was revoked or its secret id expired; enrol it again"
                ) from None
            auth = resp["auth"]
            ttl = float(auth.get("lease_duration") or 0)
            self._token = _Token(
                ttl=ttl,
                obtained_at=self._clock(),
                login_ttl=ttl,
                renewable=bool(auth.get("renewable")),
                accessor=auth.get("accessor", ""),
            )
            self.logins += 1
            log.info("vault login ok: accessor=%s ttl=%.0fs", self._token.accessor, ttl)

    def ensure_token(self) -> hvac.Client:
        """Return the client with a token that is valid now, renewing or logging in as needed."""
        with self._lock:
            tok = self._token
            if tok is None:
                self.login()
                return self._client
            if tok.ttl <= 0:
                return self._client  # no expiry
            age = self._clock() - tok.obtained_at
            if age >= tok.ttl:
                log.info("vault token expired by local clock; logging in again")
                self.login()
            elif age >= tok.ttl * self.renew_fraction:
                self._renew_or_login(tok)
            return self._client

    def _renew_or_login(self, tok: _Token) -> None:
        if not tok.renewable:
            self.login()
            return
        try:
            resp = self._client.auth.token.renew_self()
        except UNAVAILABLE_ERRORS as exc:
            raise VaultUnavailable(
                f"cannot renew the Vault token at {self.addr}: {type(exc).__name__}"
            ) from None
        except REFUSED_ERRORS as exc:
            # Past its max TTL or revoked: a fresh login either works or says DeviceRevoked.
            log.info("vault token renewal refused (%s); logging in again", vault_error_message(exc))
            self.login()
            return
        new_ttl = float(resp["auth"].get("lease_duration") or 0)
        if new_ttl < tok.login_ttl * self.renew_fraction:
            # Capped by the max TTL: renewing again would only shrink it, a login restarts it.
            log.info("vault token renewal capped at %.0fs by its max TTL; logging in again", new_ttl)
            self.login()
            return
        tok.ttl = new_ttl
        tok.obtained_at = self._clock()
        self.renewals += 1
        log.debug("vault token renewed: accessor=%s ttl=%.0fs", tok.accessor, new_ttl)

    def call(self, fn: Callable[[hvac.Client], T]) -> T:
        """Run ``fn(client)`` with a valid token.

        A 403 may mean the token died early (revoked, or the server restarted): if the token
        no longer answers lookup-self, log in again once and retry; otherwise the 403 is a
        real policy denial and is raised as ``hvac.exceptions.Forbidden``.
        """
        with self._lock:
            client = self.ensure_token()
            try:
                return fn(client)
            except UNAVAILABLE_ERRORS as exc:
                raise VaultUnavailable(f"Vault at {self.addr} is unavailable: {type(exc).__name__}") from None
            except hvac_exc.Forbidden:
                if self._token_alive():
                    raise
                log.info("vault token no longer valid; logging in again")
                self.login()
                try:
                    return fn(self._client)
                except UNAVAILABLE_ERRORS as exc:
                    raise VaultUnavailable(
                        f"Vault at {self.addr} is unavailable: {type(exc).__name__}"
                    ) from None

    def _token_alive(self) -> bool:
        try:
            self._client.auth.token.lookup_self()
            return True
        except REFUSED_ERRORS:
            return False
        except UNAVAILABLE_ERRORS as exc:
            raise VaultUnavailable(f"Vault at {self.addr} is unavailable: {type(exc).__name__}") from None

    # -- the AppRole secret id ------------------------------------------------------------

    def renew_secret_id(self, *, force: bool = False) -> bool:
        """Replace the secret id when it is due (or ``force``); True when it was replaced.

        Due means: past ``renew_fraction`` of its TTL, or at most ``SECRET_ID_MIN_USES``
        logins left. A new secret id is generated under the device's own role, written to
        ``secret_id_path`` (mode 0600, atomically) before it is used, and the old one is then
        destroyed, so a copy of the old file stops working at once.
        """
        with self._lock:
            role = self._own_role()
            try:
                info = self.call(
                    lambda c: c.auth.approle.read_secret_id(
                        role, self._secret_id, mount_point=self.approle_mount
                    )
                )
            except hvac_exc.Forbidden:
                raise SecretAccessDenied(
                    f"this device's policy does not allow managing its secret id under role {role}: "
                    "enrol it again with the current VaultAdmin"
                ) from None
            data = (info or {}).get("data") or {}
            if not (force or self._secret_id_due(data)):
                return False
            new = self.call(lambda c: c.auth.approle.generate_secret_id(role, mount_point=self.approle_mount))
            secret_id = new["data"]["secret_id"]
            if self.secret_id_path is not None:
                _write_private(self.secret_id_path, (secret_id + "\n").encode())
            old, self._secret_id = self._secret_id, secret_id
            self.secret_id_renewals += 1
            try:
                self.call(
                    lambda c: c.auth.approle.destroy_secret_id(role, old, mount_point=self.approle_mount)
                )
            except (VaultError, *REFUSED_ERRORS) as exc:  # it still expires by its TTL
                log.warning(
                    "old vault secret id not destroyed (%s); it expires by its TTL", type(exc).__name__
                )
            log.info("vault secret id replaced for role %s (renewal %d)", role, self.secret_id_renewals)
            return True

    def _own_role(self) -> str:
        if self._role_name is None:
            info = self.call(lambda c: c.auth.token.lookup_self())
            role = ((info.get("data") or {}).get("meta") or {}).get("role_name")
            if not role:
                raise VaultError(
                    "this token did not come from an AppRole login: no role to renew a secret id of"
                )
            self._role_name = role
        return self._role_name

    def _secret_id_due(self, data: Mapping[str, Any]) -> bool:
        uses = int(data.get("secret_id_num_uses") or 0)
        if uses and uses <= SECRET_ID_MIN_USES:
            return True
        ttl = float(data.get("secret_id_ttl") or 0)
        created = _vault_time(data.get("creation_time"))
        if ttl <= 0 or created is None:
            return False
        return self._wall_clock() - created >= ttl * self.renew_fraction

    def close(self) -> None:
        """Revoke the current token (best effort) so it cannot be used after shutdown."""
        with self._lock:
            if self._token is None:
                return
            try:
                self._client.auth.token.revoke_self()
            except (*UNAVAILABLE_ERRORS, *REFUSED_ERRORS):
                pass
            self._token = None
            self._client.token = ""

    # -- KV secrets ----------------------------------------------------------------------

    def read_secret(self, path: str) -> dict[str, Any]:
        """The latest version of the KV v2 secret at ``path`` (relative to the KV mount)."""
        return self.read_secret_versioned(path)[0]

    def read_secret_versioned(self, path: str) -> tuple[dict[str, Any], int]:
        """``(data, version)`` of the KV v2 secret at ``path``."""
        path = _kv_path(path)
        try:
            resp = self.call(
                lambda c: c.secrets.kv.v2.read_secret_version(
                    path, mount_point=self.kv_mount, raise_on_deleted_version=True
                )
            )
        except hvac_exc.Forbidden:
            raise SecretAccessDenied(
                f"this device may not read secret {self.kv_mount}/{path}: its policy allows only its own "
                "and its tenant's shared paths"
            ) from None
        except hvac_exc.InvalidPath:
            raise SecretNotFound(
                f"no secret at {self.kv_mount}/{path}: write it with VaultAdmin first"
            ) from None
        return dict(resp["data"]["data"] or {}), int(resp["data"]["metadata"]["version"])

    def render_secrets(self, mapping: Mapping[str, str], runtime_dir: str | os.PathLike[str]) -> list[Path]:
        """Write secrets into files under ``runtime_dir``; return the files (re)written now.

        ``mapping`` maps a file name (relative, inside ``runtime_dir``) to a KV path,
        optionally with ``#field``: the file then holds that field's value, otherwise the
        whole secret as JSON. Files are mode 0600 and replaced atomically; a file is
        rewritten only when its secret's KV version changed (or the file went missing), so
        calling this periodically is the refresh loop.
        """
        root = _runtime_dir(Path(runtime_dir))
        written: list[Path] = []
        for name, source in mapping.items():
            target = _inside(root, name)
            kv_path, _, field = source.partition("#")
            field_name = field or None
            data, version = self.read_secret_versioned(kv_path)
            previous = self._rendered.get(target)
            if (
                previous is not None
                and previous.version == version
                and previous.kv_path == kv_path
                and previous.field == field_name
                and target.exists()
            ):
                continue
            if field_name is None:
                content = json.dumps(data, sort_keys=True)
            elif field_name in data:
                value = data[field_name]
                content = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            else:
                raise KeyError(
                    f"secret {self.kv_mount}/{kv_path} (version {version}) has no field {field_name!r} "
                    f"for {name!r}; fields: {sorted(data)}"
                )
            _write_private(target, content.encode())
            self._rendered[target] = RenderedSecret(target, kv_path, field_name, version)
            written.append(target)
            log.info("rendered secret %s#%s version %d to %s", kv_path, field_name or "*", version, target)
        return written

    @property
    def rendered(self) -> dict[Path, RenderedSecret]:
        """The files rendered so far and the KV version each holds."""
        return dict(self._rendered)


def vault_error_message(exc: hvac_exc.VaultError) -> str:
    # hvac's str() of an error carries Vault's messages and the URL, never request bodies.
    errors = getattr(exc, "errors", None)
    return "; ".join(str(e) for e in errors) if errors else type(exc).__name__


def _vault_time(value: object) -> float | None:
    """Seconds since the epoch of a Vault RFC 3339 time (nanoseconds trimmed), or None."""
    if not isinstance(value, str) or not value:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _kv_path(path: str) -> str:
    parts = path.split("/")
    if not path or any(not p or p in (".", "..") for p in parts):
        raise ValueError(
            f"invalid KV path {path!r}: give it relative to the KV mount, e.g. 'tenants/<t>/devices/<d>/mqtt'"
        )
    return path


def _runtime_dir(root: Path) -> Path:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = root.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            f"runtime directory {root} is writable by group or others (mode {oct(mode & 0o777)}); "
            "use a private directory (chmod 700) so nobody can swap secret files"
        )
    return root.resolve()


def _inside(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if not name or os.path.isabs(name) or target == root or root not in target.parents:
        raise ValueError(
            f"secret file name {name!r} must be a relative path inside the runtime directory {root}"
        )
    return target


def _write_private(target: Path, content: bytes) -> None:
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a pre-existing temp file
    with os.fdopen(fd, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
