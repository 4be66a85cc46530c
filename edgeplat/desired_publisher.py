"""Central writer of the signed desired-state documents devices pull (``desired.json``).

Every change is a read-modify-write of one device's document: read and verify the last one
this publisher signed, apply the change, bump ``revision``, stamp ``issued_hlc`` from the
central clock, sign, record and ``put``.

The last signed document is read from the publisher's own record in the lakehouse
(:mod:`edgeplat.desired_records`, the ``desired_records`` table), never from the store: a
device that puts an old, validly signed document in ``desired.json`` (a peer's, to roll it
back) must not make the publisher sign the old release again, and a second replica of the
control plane sees the same record. The device-visible copy only ever raises the next
revision (the revision it claims), so the device never refuses the next document as stale.
Two callers use it: the ``edge_agent`` fleet backend
(``set_release``, ``set_staged``) and the central sync (``add_state_edits``). Each call changes
only its own part of the document and keeps the rest (release, staged release, state edits,
``rollback_of``). ``rollback_of`` belongs to the release decision: only ``set_release`` sets or
clears it, so a rollback a device has not pulled yet survives every later state edit or stage.
A publisher given the rules in force (``rules``) writes them into every document it changes,
whichever part the change is about, so a device whose first document is a release merges
with the operator's rules too (left out while the packaged rules are in force).

Batches: inside ``with publisher.batch():`` the records of every change are committed to the
lakehouse in one transaction when the block ends, and only then are the documents put (a
rollout phase of thousands of devices is one catalog commit). A failed commit publishes nothing.

Concurrent writers. Within a process a lock per device serialises changes, and for a
``LocalObjectStore`` an ``flock`` on one lock file in the store root does across processes on
the machine. Between replicas the record's commit is a compare-and-swap on the revision read:
a change that lost the race is read and applied again (outside a batch) or fails the batch
with :class:`DesiredStatePublishError` (nothing of it published).

Migration: devices published before the lakehouse record have their record as store objects
under ``platform/desired/``; the first use of a publisher imports those that verify with the
platform key (:func:`edgeplat.desired_records.import_store_records`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

from edge_sync.desired import (
    MAX_DOCUMENT_BYTES,
    DesiredState,
    DesiredStateError,
    Release,
    RollbackOf,
    StateEdit,
    StateRulesDoc,
    decode,
    desired_key,
    encode,
    state_rules_doc,
)
from edge_sync.hlc import CENTRAL_NODE, HybridLogicalClock, physical_ms
from edge_sync.identity import PlatformSigner
from edge_sync.ids import validate_id
from edge_sync.json_bounded import loads as bounded_loads
from edge_sync.objectstore import TMP_PREFIX, LocalObjectStore, ObjectNotFound, ObjectStore
from edge_sync.rules import RuleSet
from edgeplat.desired_records import (
    DesiredRecord,
    DesiredRecordConflict,
    DesiredRecords,
    DeviceKey,
    import_store_records,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_EDIT_HORIZON = timedelta(days=7)
# Listings skip names with the store's temp prefix, so the lock file never shows up as an object.
LOCK_FILE = f"{TMP_PREFIX}desired-publisher.lock"
# How often a change that lost the record's compare-and-swap to another replica is applied again.
CONFLICT_RETRIES = 5
# (store url, records key) pairs whose store records this process has imported already.
_IMPORTED: set[tuple[str, object]] = set()
_IMPORT_LOCK = threading.Lock()


class _Keep:
    """Sentinel: leave this part of the document as it is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()

# The parts of a document a change to one of them carries over: (field, value without a document).
_CARRIED = (
    ("release", None),
    ("previous", None),
    ("staged", None),
    ("rollback_of", None),
    ("state_edits", []),
    ("state_rules", None),
)


class DesiredStatePublishError(RuntimeError):
    """A desired-state document could not be published; the message says why and what to do."""


class DesiredStatePublisher:
    """Read-modify-write of per-device signed desired-state documents (single writer, see module doc)."""

    def __init__(
        self,
        store: ObjectStore,
        signer: PlatformSigner,
        clock: HybridLogicalClock | None = None,
        *,
        records: DesiredRecords,
        edit_horizon: timedelta = DEFAULT_EDIT_HORIZON,
        rules: RuleSet | Callable[[], RuleSet] | None = None,
    ) -> None:
        self.records = records
        # The central merge's rules: every document this publisher writes carries them (None: keep
        # what the document carries), so devices merge central edits as the platform does. A
        # callable is called at the first change, so a publisher that never writes (a rollout
        # sensor's tick with nothing due) never loads them: from git that is a fetch.
        self._rules = rules
        self._rules_doc: StateRulesDoc | None | _Keep = KEEP
        self._rules_loaded = False
        self.store = store
        self.signer = signer
        self.clock = clock or HybridLogicalClock(CENTRAL_NODE)
        self.edit_horizon = edit_horizon
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # the open batch (one per publisher): its records and documents, and the tenants read whole
        self._batch: dict[DeviceKey, tuple[DesiredRecord, int]] | None = None
        self._cache: dict[DeviceKey, DesiredRecord] = {}
        self._cached_tenants: set[str] = set()
        self._batch_guard = threading.Lock()

    # ------------------------------------------------------------------ public API

    def current(self, tenant_id: str, device_id: str) -> DesiredState | None:
        """The last document this publisher signed for the device, or None if there is none
        (or its record does not verify)."""
        return self._read(tenant_id, device_id)[0]

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Record every change made inside the block in one lakehouse commit at its end, then
        put the documents (see module doc). Reads inside see the block's own changes.
        Nested blocks join the outer one."""
        with self._batch_guard:
            if self._batch is not None:
                outer = True
            else:
                outer = False
                self._batch, self._cache, self._cached_tenants = {}, {}, set()
        if outer:
            yield
            return
        try:
            yield
            pending = self._batch
            try:
                self.records.put_many(
                    [r for r, _ in pending.values()], {k: e for k, (_, e) in pending.items()}
                )
            except DesiredRecordConflict as exc:
                raise DesiredStatePublishError(
                    f"{exc}; none of this batch's {len(pending)} documents was published: run it again"
                ) from exc
            for (tenant_id, device_id), (record, _) in pending.items():
                self.store.put(desired_key(tenant_id, device_id), record.document)
        finally:
            with self._batch_guard:
                self._batch, self._cache, self._cached_tenants = None, {}, set()

    def set_release(
        self,
        tenant_id: str,
        device_id: str,
        release: Release | None,
        previous: Release | None = None,
        *,
        staged: Release | None | _Keep = KEEP,
        rollback_of: RollbackOf | None = None,
    ) -> DesiredState:
        """Set the release (and fallback ``previous``) the device should run; keeps state edits,
        and the staged release unless ``staged`` is given (None clears it).

        ``rollback_of`` is part of the release decision: a rollback without a known ``previous``
        gives it (with ``release`` None), every other call clears it.

        Returns the document as published; when release, previous, staged and rollback_of are
        already what the document holds nothing is written and the existing document is returned.
        """

        def change() -> DesiredState:
            old, floor, seen = self._read_all(tenant_id, device_id)
            kept = (old.staged if old is not None else None) if isinstance(staged, _Keep) else staged
            new = (release, previous, kept, rollback_of)
            if old is not None and (old.release, old.previous, old.staged, old.rollback_of) == new:
                return old
            return self._write(
                tenant_id,
                device_id,
                old,
                floor,
                seen,
                release=release,
                previous=previous,
                staged=kept,
                rollback_of=rollback_of,
            )

        return self._change(tenant_id, device_id, change)

    def set_staged(self, tenant_id: str, device_id: str, staged: Release | None) -> DesiredState | None:
        """Set (or clear, None) the release staged on the device's inactive slot; keeps the rest.

        Nothing is written when the document already stages exactly that (returns it), or when
        there is no document and nothing to stage (returns None).
        """

        def change() -> DesiredState | None:
            old, floor, seen = self._read_all(tenant_id, device_id)
            if (old.staged if old is not None else None) == staged:
                return old
            return self._write(tenant_id, device_id, old, floor, seen, staged=staged)

        return self._change(tenant_id, device_id, change)

    def add_state_edits(
        self, tenant_id: str, device_id: str, edits: Iterable[StateEdit | dict]
    ) -> DesiredState:
        """Append central state edits for the device to apply (deduplicated, bounded).

        Edits are deduplicated by (namespace, key, field, hlc, node_id). An edit older than
        ``edit_horizon`` is dropped only once a later central edit of the same field exists,
        so the latest edit of every field always stays. Nothing is written if no edit is new.
        """
        new = [e if isinstance(e, StateEdit) else StateEdit.model_validate(e) for e in edits]
        for e in new:
            self.clock.observe(e.hlc)  # issued_hlc never trails an edit it carries

        def change() -> DesiredState:
            old, floor, seen = self._read_all(tenant_id, device_id)
            existing = old.state_edits if old is not None else []
            merged = self._bound(_dedupe([*existing, *new]))
            if old is not None and merged == existing:
                return old
            return self._write(tenant_id, device_id, old, floor, seen, state_edits=merged)

        return self._change(tenant_id, device_id, change)

    def set_state_rules(self, tenant_id: str, device_id: str) -> bool:
        """Send this publisher's rules to a device whose document carries other rules (a rules
        change); True when a new revision was written, False when it already carries them or has
        no document yet."""

        def change() -> bool:
            old, floor, seen = self._read_all(tenant_id, device_id)
            if old is None or isinstance(self.state_rules, _Keep) or old.state_rules == self.state_rules:
                return False
            self._write(tenant_id, device_id, old, floor, seen)
            return True

        return self._change(tenant_id, device_id, change)

    @property
    def state_rules(self) -> StateRulesDoc | None | _Keep:
        """What every document this publisher writes carries as ``state_rules`` (KEEP: what it had)."""
        if not self._rules_loaded:
            rules = self._rules() if callable(self._rules) else self._rules
            self._rules_doc = state_rules_doc(rules) if rules is not None else KEEP
            self._rules_loaded = True
        return self._rules_doc

    # ------------------------------------------------------------------ internals

    def _change(self, tenant_id: str, device_id: str, change: Callable[[], T]) -> T:
        """Run one read-modify-write under the device's lock; outside a batch, apply it again
        when another replica recorded a newer revision in between."""
        validate_id("tenant", tenant_id)
        validate_id("device", device_id)
        self._import_store_records()
        for attempt in range(1, CONFLICT_RETRIES + 1):
            with self._locked(tenant_id, device_id):
                try:
                    return change()
                except DesiredRecordConflict as exc:
                    if attempt == CONFLICT_RETRIES:
                        raise DesiredStatePublishError(
                            f"desired state of {tenant_id}/{device_id} changed under this publisher "
                            f"{attempt} times in a row: {exc}"
                        ) from exc
                    log.info(
                        "desired-state record of %s/%s moved; applying again: %s", tenant_id, device_id, exc
                    )
        raise AssertionError("unreachable")

    def _import_store_records(self) -> None:
        marker = (self.store.url, getattr(self.records, "key", id(self.records)))
        if marker in _IMPORTED:
            return
        with _IMPORT_LOCK:
            if marker not in _IMPORTED:
                import_store_records(self.records, self.store, self.signer)
                _IMPORTED.add(marker)

    def _read(self, tenant_id: str, device_id: str) -> tuple[DesiredState | None, int]:
        """(the recorded document or None, the lowest revision the next document may use minus 1)."""
        doc, floor, _ = self._read_all(tenant_id, device_id)
        return doc, floor

    def _read_all(self, tenant_id: str, device_id: str) -> tuple[DesiredState | None, int, int]:
        """``_read`` and the revision the record holds (what its compare-and-swap expects)."""
        self._import_store_records()
        doc, floor, seen = self._recorded(tenant_id, device_id)
        try:  # the device-visible copy may only raise the revision, never supply content
            shown = _claimed_revision(self.store.get(desired_key(tenant_id, device_id)))
        except ObjectNotFound:
            shown = 0
        return doc, max(floor, shown), seen

    def _record(self, tenant_id: str, device_id: str) -> tuple[DesiredRecord | None, int]:
        """(the record, the revision its commit expects): the open batch's own first, else the lakehouse."""
        key = (tenant_id, device_id)
        with self._batch_guard:
            batch = self._batch
            if batch is not None and key in batch:
                return batch[key][0], batch[key][1]
        if batch is None:
            record = self.records.get_many([key]).get(key)
            return record, record.revision if record else 0
        if tenant_id not in self._cached_tenants:  # one query per tenant and batch
            whole = self.records.tenant(tenant_id)
            with self._batch_guard:
                self._cache.update(whole)
                self._cached_tenants.add(tenant_id)
        record = self._cache.get(key)
        return record, record.revision if record else 0

    def _recorded(self, tenant_id: str, device_id: str) -> tuple[DesiredState | None, int, int]:
        record, seen = self._record(tenant_id, device_id)
        if record is None:
            return None, 0, seen
        try:
            doc = decode(
                record.document,
                platform_keys=[self.signer.public_key_bytes()],
                tenant_id=tenant_id,
                device_id=device_id,
            )
        except DesiredStateError as exc:
            # A device may have applied a higher (valid) revision than anything we can still
            # read, and refuses lower ones: jump to a revision no counter reaches, the
            # current wall-clock milliseconds, unless the record claims a higher one.
            floor = max(record.revision, _claimed_revision(record.document), physical_ms(self.clock.now()))
            log.warning(
                "desired-state record of %s/%s in the lakehouse does not verify (%s: %s); replacing it with a "
                "fresh document at revision > %d (its release and state edits are discarded)",
                tenant_id,
                device_id,
                exc.reason,
                exc,
                floor,
            )
            return None, floor, seen
        return doc, doc.revision, seen

    def _write(
        self,
        tenant_id: str,
        device_id: str,
        old: DesiredState | None,
        floor: int,
        seen: int,
        **changes: Any,
    ) -> DesiredState:
        """Sign, record and store the next revision: ``old``'s fields with ``changes`` (field names)
        replacing them. ``seen`` is the recorded revision the read found (the compare-and-swap's)."""
        kept = {name: getattr(old, name) if old is not None else default for name, default in _CARRIED}
        if not isinstance(self.state_rules, _Keep):
            kept["state_rules"] = self.state_rules
        doc = DesiredState(
            tenant_id=tenant_id,
            device_id=device_id,
            revision=max(floor, old.revision if old else 0) + 1,
            issued_hlc=self.clock.now(),
            **{**kept, **changes},
        )
        data = encode(doc, self.signer)
        if len(data) > MAX_DOCUMENT_BYTES:
            raise DesiredStatePublishError(
                f"desired-state document for {tenant_id}/{device_id} would be {len(data)} bytes, over the "
                f"{MAX_DOCUMENT_BYTES} devices accept: {len(doc.state_edits)} state edits are pending; shorten "
                "edit_horizon or stop editing this device's state centrally until it syncs"
            )
        record = DesiredRecord(tenant_id, device_id, doc.revision, data)
        key = (tenant_id, device_id)
        with self._batch_guard:
            if self._batch is not None:
                self._batch[key] = (record, seen)
                return doc
        # the record first: a failed put below is re-signed from it
        self.records.put_many([record], {key: seen})
        self.store.put(desired_key(tenant_id, device_id), data)
        return doc

    def _bound(self, edits: list[StateEdit]) -> list[StateEdit]:
        horizon_hlc = (physical_ms(self.clock.now()) - int(self.edit_horizon.total_seconds() * 1000)) << 16
        latest: dict[tuple[str, str, str], tuple[int, str]] = {}
        for e in edits:
            f = (e.namespace, e.key, e.field)
            latest[f] = max(latest.get(f, (e.hlc, e.node_id)), (e.hlc, e.node_id))
        return [
            e
            for e in edits
            if e.hlc >= horizon_hlc or latest[(e.namespace, e.key, e.field)] == (e.hlc, e.node_id)
        ]

    @contextlib.contextmanager
    def _locked(self, tenant_id: str, device_id: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault((tenant_id, device_id), threading.Lock())
        with lock, self._file_lock():
            yield

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if not isinstance(self.store, LocalObjectStore):
            yield
            return
        fd = os.open(self.store.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock


def _dedupe(edits: list[StateEdit]) -> list[StateEdit]:
    """One edit per (namespace, key, field, hlc, node_id), the first seen, in HLC order."""
    seen: dict[tuple[str, str, str, int, str], StateEdit] = {}
    for e in edits:
        seen.setdefault((e.namespace, e.key, e.field, e.hlc, e.node_id), e)
    return sorted(seen.values(), key=lambda e: (e.hlc, e.node_id, e.namespace, e.key, e.field))


def _claimed_revision(data: bytes) -> int:
    """The revision an unverifiable document claims, or 0 (only ever used to go higher)."""
    try:
        rev = bounded_loads(data)["document"]["revision"]
    except (ValueError, KeyError, TypeError):
        return 0
    return rev if isinstance(rev, int) and not isinstance(rev, bool) and 0 <= rev < 1 << 62 else 0
