"""Central writer of the signed desired-state documents devices pull (``desired.json``).

Every change is a read-modify-write of one device's document: read and verify the last one
this publisher signed, apply the change, bump ``revision``, stamp ``issued_hlc`` from the
central clock, sign and ``put``.

The last signed document is read from the publisher's own record
(``<record_prefix>/tenant=<T>/device=<D>.json``, outside every tenant's prefix, so no device
credential can write it), never from the device-visible ``desired.json``: a device that puts
an old, validly signed document there (a peer's, to roll it back) must not make the publisher
sign the old release again. The device-visible copy only ever raises the next revision (the
revision it claims), so the device never refuses the next document as stale. Two callers use it: the ``edge_agent`` fleet backend
(``set_release``, ``set_staged``) and the central sync (``add_state_edits``). Each call changes
only its own part of the document and keeps the rest (release, staged release, state edits,
``rollback_of``). ``rollback_of`` belongs to the release decision: only ``set_release`` sets or
clears it, so a rollback a device has not pulled yet survives every later state edit or stage.

Single writer. The object store has no compare-and-swap in our interface, so concurrent
writers of one device's document could lose an update. The publisher guards against that
within a process (a lock per device) and, for a ``LocalObjectStore``, across processes on
the machine (an ``flock`` on one lock file in the store root, hidden from listings). For an
S3 store exactly one process may publish (the Dagster code location's runs and sensors go
through one publisher per process and write rarely, but two processes publishing to the same
device on S3 at the same instant are not protected).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from edge_sync.desired import (
    MAX_DOCUMENT_BYTES,
    DesiredState,
    DesiredStateError,
    Release,
    RollbackOf,
    StateEdit,
    decode,
    desired_key,
    encode,
)
from edge_sync.hlc import CENTRAL_NODE, HybridLogicalClock, physical_ms
from edge_sync.identity import PlatformSigner
from edge_sync.ids import validate_id
from edge_sync.json_bounded import loads as bounded_loads
from edge_sync.objectstore import TMP_PREFIX, LocalObjectStore, ObjectNotFound, ObjectStore, validate_prefix

log = logging.getLogger(__name__)

DEFAULT_EDIT_HORIZON = timedelta(days=7)
# Listings skip names with the store's temp prefix, so the lock file never shows up as an object.
LOCK_FILE = f"{TMP_PREFIX}desired-publisher.lock"
# Where the publisher records what it signed: outside every ``tenant=<T>/`` prefix a device may write.
RECORD_PREFIX = "platform/desired"


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
        edit_horizon: timedelta = DEFAULT_EDIT_HORIZON,
        record_prefix: str = RECORD_PREFIX,
    ) -> None:
        if record_prefix.strip("/").startswith("tenant="):
            raise ValueError(
                f"record_prefix {record_prefix!r} is inside a tenant's prefix, which devices write"
            )
        self.record_prefix = validate_prefix(record_prefix.strip("/") + "/").rstrip("/")
        self.store = store
        self.signer = signer
        self.clock = clock or HybridLogicalClock(CENTRAL_NODE)
        self.edit_horizon = edit_horizon
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ------------------------------------------------------------------ public API

    def current(self, tenant_id: str, device_id: str) -> DesiredState | None:
        """The last document this publisher signed for the device, or None if there is none
        (or its record does not verify)."""
        return self._read(tenant_id, device_id)[0]

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
        with self._locked(tenant_id, device_id):
            old, floor = self._read(tenant_id, device_id)
            if isinstance(staged, _Keep):
                staged = old.staged if old is not None else None
            new = (release, previous, staged, rollback_of)
            if old is not None and (old.release, old.previous, old.staged, old.rollback_of) == new:
                return old
            return self._write(
                tenant_id,
                device_id,
                old,
                floor,
                release=release,
                previous=previous,
                staged=staged,
                rollback_of=rollback_of,
            )

    def set_staged(self, tenant_id: str, device_id: str, staged: Release | None) -> DesiredState | None:
        """Set (or clear, None) the release staged on the device's inactive slot; keeps the rest.

        Nothing is written when the document already stages exactly that (returns it), or when
        there is no document and nothing to stage (returns None).
        """
        with self._locked(tenant_id, device_id):
            old, floor = self._read(tenant_id, device_id)
            if (old.staged if old is not None else None) == staged:
                return old
            return self._write(tenant_id, device_id, old, floor, staged=staged)

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
        with self._locked(tenant_id, device_id):
            old, floor = self._read(tenant_id, device_id)
            existing = old.state_edits if old is not None else []
            merged = self._bound(_dedupe([*existing, *new]))
            if old is not None and merged == existing:
                return old
            return self._write(tenant_id, device_id, old, floor, state_edits=merged)

    # ------------------------------------------------------------------ internals

    def record_key(self, tenant_id: str, device_id: str) -> str:
        """The key of the publisher's own record of the device's last signed document."""
        return (
            f"{self.record_prefix}/tenant={validate_id('tenant', tenant_id)}/"
            f"device={validate_id('device', device_id)}.json"
        )

    def _read(self, tenant_id: str, device_id: str) -> tuple[DesiredState | None, int]:
        """(the recorded document or None, the lowest revision the next document may use minus 1)."""
        doc, floor = self._recorded(tenant_id, device_id)
        try:  # the device-visible copy may only raise the revision, never supply content
            shown = _claimed_revision(self.store.get(desired_key(tenant_id, device_id)))
        except ObjectNotFound:
            shown = 0
        return doc, max(floor, shown)

    def _recorded(self, tenant_id: str, device_id: str) -> tuple[DesiredState | None, int]:
        key = self.record_key(tenant_id, device_id)
        try:
            data = self.store.get(key)
        except ObjectNotFound:
            return None, 0
        try:
            doc = decode(
                data, platform_keys=[self.signer.public_key_bytes()], tenant_id=tenant_id, device_id=device_id
            )
        except DesiredStateError as exc:
            # A device may have applied a higher (valid) revision than anything we can still
            # read, and refuses lower ones: jump to a revision no counter reaches, the
            # current wall-clock milliseconds, unless the unverified text claims a higher one.
            floor = max(_claimed_revision(data), physical_ms(self.clock.now()))
            log.warning(
                "desired-state document %s in %s does not verify (%s: %s); replacing it with a fresh "
                "document at revision > %d (its release and state edits are discarded)",
                key,
                self.store.url,
                exc.reason,
                exc,
                floor,
            )
            return None, floor
        return doc, doc.revision

    def _write(
        self,
        tenant_id: str,
        device_id: str,
        old: DesiredState | None,
        floor: int,
        **changes: Any,
    ) -> DesiredState:
        """Sign and store the next revision: ``old``'s fields with ``changes`` (field names) replacing them."""
        kept = {name: getattr(old, name) if old is not None else default for name, default in _CARRIED}
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
        self.store.put(self.record_key(tenant_id, device_id), data)  # first: a failed put below is re-signed
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
