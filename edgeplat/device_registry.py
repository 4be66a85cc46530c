"""The device registry in the lakehouse: which public keys may sign for each device.

Production runs the control plane as several replicas (webserver, daemon, one pod per run),
so the registry cannot be a folder on one of them: it is the ``device_keys`` table of the
lakehouse every replica attaches (DuckLake on PostgreSQL). One row per (device, key): the raw
Ed25519 public key (base64), when it was registered and, once revoked, when.

Lookups are per batch in the ingest, so each tenant's active keys are read in one query and
kept for ``cache_s`` seconds (default 2): a revocation made by another replica takes effect
within that time, one made through this object at once. Enrolling a fleet is one commit
(``register_many``).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterable

import duckdb

from edge_sync.identity import key_fingerprint
from edge_sync.ids import validate_id
from edgeplat.lakehouse import Lakehouse

TABLE = "device_keys"


class LakehouseDeviceRegistry:
    """A :class:`edge_sync.identity.DeviceRegistry` in the lakehouse (see module doc)."""

    def __init__(self, lake: Lakehouse, *, cache_s: float = 2.0) -> None:
        self.lake = lake
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, dict[str, list[tuple[str, bytes]]]]] = {}
        self._lock = threading.Lock()

    def register(self, tenant_id: str, device_id: str, public_key: bytes) -> str:
        return self.register_many([(tenant_id, device_id, public_key)])[0]

    def register_many(self, keys: Iterable[tuple[str, str, bytes]]) -> list[str]:
        """Register (tenant, device, raw public key) triples in one commit; idempotent. A revoked
        key registered again is active again (as in the local registry)."""
        rows = []
        for tenant_id, device_id, public_key in keys:
            validate_id("tenant", tenant_id)
            validate_id("device", device_id)
            rows.append((tenant_id, device_id, key_fingerprint(bytes(public_key)), bytes(public_key)))
        if not rows:
            return []
        self.lake.ensure_created()
        names = sorted({f"{t}/{d}/{k}" for t, d, k, _ in rows})

        def unit(con: duckdb.DuckDBPyConnection) -> None:
            active = {
                (t, d, k)
                for t, d, k in con.execute(
                    f"SELECT tenant_id, device_id, key_id FROM {TABLE} WHERE revoked_at IS NULL "
                    "AND list_contains(?, tenant_id || '/' || device_id || '/' || key_id)",
                    [names],
                ).fetchall()
            }
            new = {(t, d, k): pk for t, d, k, pk in rows if (t, d, k) not in active}
            if new:
                con.executemany(
                    f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, now(), NULL)",
                    [[t, d, k, base64.b64encode(pk).decode("ascii")] for (t, d, k), pk in new.items()],
                )

        self.lake.write(unit, what="device registry")
        self._forget({t for t, _, _, _ in rows})
        return [k for _, _, k, _ in rows]

    def revoke(self, tenant_id: str, device_id: str, key_id: str) -> None:
        validate_id("device", device_id)
        self.lake.ensure_created()

        def unit(con: duckdb.DuckDBPyConnection) -> int:
            found = con.execute(
                f"SELECT count(*) FROM {TABLE} WHERE tenant_id = ? AND device_id = ? AND key_id = ?",
                [tenant_id, device_id, key_id],
            ).fetchone()[0]
            con.execute(
                f"UPDATE {TABLE} SET revoked_at = now() "
                "WHERE tenant_id = ? AND device_id = ? AND key_id = ? AND revoked_at IS NULL",
                [tenant_id, device_id, key_id],
            )
            return found

        if not self.lake.write(unit, what="device registry"):
            raise KeyError(f"device {tenant_id}/{device_id} has no key {key_id!r}; nothing to revoke")
        self._forget({tenant_id})

    def public_keys(self, tenant_id: str, device_id: str) -> list[tuple[str, bytes]]:
        validate_id("device", device_id)
        return list(self._active_keys(tenant_id).get(device_id, []))

    def _active_keys(self, tenant_id: str) -> dict[str, list[tuple[str, bytes]]]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(tenant_id)
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        self.lake.ensure_created()
        with self.lake.session(read_only=True) as con:
            rows = con.execute(
                f"SELECT device_id, key_id, public_key FROM {TABLE} WHERE tenant_id = ? AND revoked_at IS NULL "
                "ORDER BY device_id, key_id",
                [validate_id("tenant", tenant_id)],
            ).fetchall()
        active: dict[str, list[tuple[str, bytes]]] = {}
        for device, key_id, public_key in rows:
            active.setdefault(device, []).append((key_id, base64.b64decode(public_key)))
        with self._lock:
            self._cache[tenant_id] = (now, active)
        return active

    def _forget(self, tenants: set[str]) -> None:
        with self._lock:
            for t in tenants:
                self._cache.pop(t, None)
