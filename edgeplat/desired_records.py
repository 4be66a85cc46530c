"""The desired-state publisher's own record of what it signed, kept in the lakehouse.

The publisher builds every new revision of a device's ``desired.json`` from the last document
it signed. That record must not live where a device can write (a device would roll a peer
back by putting an old, validly signed document there), nor on a disk a second replica of
the control plane does not see: it lives in the ``desired_records`` lakehouse table (one row
per device: revision and the signed document), which is the DuckLake catalog every replica
shares (SQLite locally, PostgreSQL in production).

Writes come in batches: :meth:`LakehouseDesiredRecords.put_many` commits any number of
devices' records in one catalog transaction (a rollout phase of thousands of devices is one
commit, not thousands), and checks in that transaction that no other publisher recorded a
newer revision since this one read (a compare-and-swap on the revision), so two replicas
publishing to one device cannot silently lose an update.

Migration: publishers before this kept the record as store objects under
``platform/desired/``. :func:`import_store_records` moves them into the table once: each
object is verified with the platform key, recorded unless the table already holds a revision
as high, and deleted from the store only after the commit. An object that does not verify is
left in place with a warning and never used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import duckdb

from edge_sync.desired import DesiredStateError, decode
from edge_sync.identity import PlatformSigner
from edge_sync.objectstore import ObjectNotFound, ObjectStore
from edgeplat.lakehouse import Lakehouse

log = logging.getLogger(__name__)

TABLE = "desired_records"
# Where publishers before the lakehouse record kept it (outside every tenant's prefix).
STORE_RECORD_PREFIX = "platform/desired"

DeviceKey = tuple[str, str]


class DesiredRecordConflict(RuntimeError):
    """Another publisher recorded a newer revision for a device since this one read it."""


@dataclass(frozen=True)
class DesiredRecord:
    """The last signed document of one device, as the publisher recorded it."""

    tenant_id: str
    device_id: str
    revision: int
    document: bytes


class DesiredRecords(Protocol):
    """Where a publisher keeps its record of the documents it signed."""

    def get_many(self, keys: Iterable[DeviceKey]) -> dict[DeviceKey, DesiredRecord]: ...

    def tenant(self, tenant_id: str) -> dict[DeviceKey, DesiredRecord]: ...

    def put_many(self, records: Iterable[DesiredRecord], expected: Mapping[DeviceKey, int]) -> None: ...


class LakehouseDesiredRecords:
    """The ``desired_records`` table of a lakehouse (see the module doc)."""

    def __init__(self, lake: Lakehouse) -> None:
        self.lake = lake
        self.key = ("lakehouse", lake.config)  # same table, same key: import store records once

    def get_many(self, keys: Iterable[DeviceKey]) -> dict[DeviceKey, DesiredRecord]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        self.lake.ensure_created()
        with self.lake.session(read_only=True) as con:
            rows = con.execute(
                f"SELECT tenant_id, device_id, revision, document FROM {TABLE} "
                "WHERE list_contains(?, tenant_id || '/' || device_id)",
                [[f"{t}/{d}" for t, d in wanted]],
            ).fetchall()
        return _records(rows)

    def tenant(self, tenant_id: str) -> dict[DeviceKey, DesiredRecord]:
        """Every record of one tenant: one query where a batch reads many of its devices."""
        self.lake.ensure_created()
        with self.lake.session(read_only=True) as con:
            rows = con.execute(
                f"SELECT tenant_id, device_id, revision, document FROM {TABLE} WHERE tenant_id = ?",
                [tenant_id],
            ).fetchall()
        return _records(rows)

    def put_many(self, records: Iterable[DesiredRecord], expected: Mapping[DeviceKey, int]) -> None:
        """Record ``records`` in one commit; ``expected`` is the revision each device had when read
        (0: none). Raises :class:`DesiredRecordConflict` if any device's recorded revision moved."""
        batch = {(r.tenant_id, r.device_id): r for r in records}
        if not batch:
            return
        self.lake.ensure_created()
        names = [f"{t}/{d}" for t, d in batch]

        def unit(con: duckdb.DuckDBPyConnection) -> None:
            have = dict(
                ((t, d), rev)
                for t, d, rev in con.execute(
                    f"SELECT tenant_id, device_id, max(revision) FROM {TABLE} "
                    "WHERE list_contains(?, tenant_id || '/' || device_id) GROUP BY 1, 2",
                    [names],
                ).fetchall()
            )
            moved = sorted(k for k in batch if have.get(k, 0) > expected.get(k, 0))
            if moved:
                raise DesiredRecordConflict(
                    f"another publisher recorded newer desired-state revisions for {len(moved)} device(s) "
                    f"(first {moved[0][0]}/{moved[0][1]}: {have[moved[0]]} > {expected.get(moved[0], 0)}); "
                    "read again and re-apply the change"
                )
            con.execute(f"DELETE FROM {TABLE} WHERE list_contains(?, tenant_id || '/' || device_id)", [names])
            con.executemany(
                f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, now())",
                [[r.tenant_id, r.device_id, r.revision, r.document.decode()] for r in batch.values()],
            )

        self.lake.write(unit, what="desired-state records")


def _records(rows: list[tuple]) -> dict[DeviceKey, DesiredRecord]:
    return {(t, d): DesiredRecord(t, d, int(rev), doc.encode()) for t, d, rev, doc in rows}


def import_store_records(
    records: DesiredRecords, store: ObjectStore, signer: PlatformSigner, *, prefix: str = STORE_RECORD_PREFIX
) -> int:
    """Move the records older publishers kept in the store into ``records`` (see module doc).

    Returns how many were imported. Idempotent: a second call finds nothing to move.
    """
    found: dict[DeviceKey, tuple[str, bytes, int]] = {}
    after = None
    while True:
        page = store.list(prefix.rstrip("/") + "/", after=after)
        for info in page.objects:
            key = _parse(info.key, prefix)
            if key is None:
                continue
            try:
                data = store.get(info.key)
                doc = decode(
                    data, platform_keys=[signer.public_key_bytes()], tenant_id=key[0], device_id=key[1]
                )
            except ObjectNotFound:
                continue
            except DesiredStateError as exc:
                log.warning("not importing desired-state record %s: it does not verify (%s)", info.key, exc)
                continue
            found[key] = (info.key, data, doc.revision)
        if page.next_after is None:
            break
        after = page.next_after
    if not found:
        return 0
    have = records.get_many(found)
    fresh = [
        DesiredRecord(t, d, rev, data)
        for (t, d), (_, data, rev) in found.items()
        if rev > (have[(t, d)].revision if (t, d) in have else 0)
    ]
    records.put_many(fresh, {k: have[k].revision for k in have})
    for object_key, _, _ in found.values():
        store.delete(object_key)  # only after the commit above: the record is never in neither place
    log.info("imported %d desired-state records from %s/ into the lakehouse", len(fresh), prefix)
    return len(fresh)


def _parse(object_key: str, prefix: str) -> DeviceKey | None:
    rest = object_key.removeprefix(prefix.rstrip("/") + "/")
    parts = rest.removesuffix(".json").split("/")
    if len(parts) != 2 or not rest.endswith(".json"):
        return None
    tenant, device = parts
    if not (tenant.startswith("tenant=") and device.startswith("device=")):
        return None
    return tenant.removeprefix("tenant="), device.removeprefix("device=")
