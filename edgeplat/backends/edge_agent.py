"""The embedded default fleet backend: signed desired-state documents the edge agent pulls.

``deploy`` sets each device's desired release (version, slot, rollout, phase) with the
device's current release as ``previous``; ``rollback`` sets the release back to
``previous`` (or to the given release). Documents live in the object store, so a device
that is offline during a rollback reads it when it comes back.

Rolling back a device whose previous release the platform does not know (it had no document,
or one without a release, when the rollout reached it: a device running its factory image)
writes ``release: null`` with ``rollback_of = {rollout_id, version}``; the agent then goes back
to the release it recorded itself just before it first applied that rollout's release
(``edge_sync.downlink``), or keeps what it runs if it never applied it. Why the device and not
the platform remembers it (rather than filling ``previous`` at deploy time from the versions
devices report to the lakehouse): only the device knows for certain what it ran and in which
slot at the moment it switched. Reported versions lag by a sync, are missing for a device
that never reported (just registered, or offline since it was flashed), carry no guarantee
about the slot, and the production resource builds this backend without a ``reported``
source at all; a wrong ``previous`` would install a release the device never ran. A
``release: null`` alone is no answer either: it means "keep what you run", i.e. the bad
release. The rollback stays durable and idempotent: ``rollback_of`` stays in the document
(state edits and staging keep it) until a new release decision, a repeated rollback finds
nothing left of the rollout and writes nothing, a repeated deploy of the rolled-back rollout
is refused (the document itself says it was rolled back, even if the index write was lost),
and revisions stay monotonic, so no older document undoes it.

Blue/green: ``stage`` sets the document's ``staged`` release (the inactive slot, no phase);
the agent installs it there without switching. ``deploy(..., slot="inactive")`` of the same
rollout then switches to the staged slot (``release`` = the staged version on the staged
slot, ``previous`` = the running release on the old slot, ``staged`` cleared), and
``rollback`` makes ``previous`` the release again: the old slot is still installed, so the
agent switches back without a download. ``rollback`` also withdraws a staged release of the
rollout from devices that were never switched.

The backend also keeps a small index per rollout in the store
(``<index_prefix>/rollout=<id>/devices.json``: device -> phase and the document revision
it must acknowledge), so ``status`` does not have to list every device's documents.
``reported(tenant, device) -> (version, slot, desired_revision) | None`` (from the
lakehouse health data) lets ``status`` say whether a device acknowledged and what it runs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any, Literal

from edge_sync.desired import DesiredState, Release, RollbackOf
from edge_sync.objectstore import ObjectNotFound, validate_prefix
from edgeplat.backends.base import (
    BackendStatus,
    DeployResult,
    DeviceRef,
    DeviceStatus,
    FleetBackend,
    ReleaseSpec,
    Reported,
    check_deploy_args,
    unique_devices,
)
from edgeplat.desired_publisher import DesiredStatePublisher

INDEX_FORMAT = 1
Slot = Literal["a", "b"]


def _other(slot: Slot) -> Slot:
    return "b" if slot == "a" else "a"


class EdgeAgentBackend(FleetBackend):
    """Deploys through desired-state documents in the object store (see module doc)."""

    name = "edge_agent"
    staging_unsupported = None

    def __init__(
        self,
        publisher: DesiredStatePublisher,
        *,
        reported: Reported | None = None,
        index_prefix: str = "rollouts/edge_agent",
    ) -> None:
        self.publisher = publisher
        self.store = publisher.store
        self.reported = reported
        self.index_prefix = validate_prefix(index_prefix.rstrip("/") + "/").rstrip("/")
        self._index_lock = threading.Lock()

    # ------------------------------------------------------------------ FleetBackend

    def _deploy(
        self,
        devices: list[DeviceRef],
        skipped: dict[tuple[str, str], str],
        spec: ReleaseSpec,
        rollout_id: str,
        phase: int,
        slot: str | None,
    ) -> DeployResult:
        changed: list[tuple[str, str]] = []
        entries: dict[str, dict[str, Any]] = {}
        with self.publisher.batch():  # one record commit for the phase; documents go out after it
            self._deploy_each(devices, spec, rollout_id, phase, slot, changed, entries)
        self._update_index(rollout_id, entries)
        return self._result("deploy", rollout_id, phase, devices, changed, _document_keys(changed), skipped)

    def _deploy_each(
        self,
        devices: list[DeviceRef],
        spec: ReleaseSpec,
        rollout_id: str,
        phase: int,
        slot: str | None,
        changed: list[tuple[str, str]],
        entries: dict[str, dict[str, Any]],
    ) -> None:
        for d, entry, doc in self._current(rollout_id, devices):
            cur = doc.release if doc else None
            if cur is not None and cur.rollout_id == rollout_id and cur.version == spec.version:
                # already deployed by this rollout (this or an earlier phase): keep the earliest phase
                assert doc is not None
                if entry is None or entry.get("phase") is None:  # no entry, or the one of its staging
                    entry = _entry(
                        cur.phase if cur.phase is not None else phase, doc.revision, version=cur.version
                    )
                entries[_dkey(d)] = entry
                continue
            if (entry is not None and entry.get("rolled_back")) or _rolled_back_by(doc, rollout_id):
                continue  # never re-deploy a release this rollout already rolled back
            staged = doc.staged if doc else None
            ours = staged is not None and staged.rollout_id == rollout_id and staged.version == spec.version
            use_staged = ours and slot == "inactive" and (cur is None or staged.slot != cur.slot)
            new = Release(
                version=spec.version,
                slot=staged.slot if use_staged and staged is not None else _pick_slot(cur, slot),
                rollout_id=rollout_id,
                phase=phase,
            )
            previous = (
                cur if cur is not None and cur.version != spec.version else (doc.previous if doc else None)
            )
            # the switch consumes this rollout's staged release; another rollout's stays
            out = self.publisher.set_release(
                d.tenant_id, d.device_id, new, previous, staged=None if ours else staged
            )
            entries[_dkey(d)] = _entry(phase, out.revision, version=spec.version)
            changed.append(d.key)

    def stage(self, devices: list[DeviceRef], release: ReleaseSpec, *, rollout_id: str) -> DeployResult:
        check_deploy_args(devices, rollout_id, 0, "inactive")
        spec = ReleaseSpec.of(release)
        devices = unique_devices(devices)
        changed: list[tuple[str, str]] = []
        skipped: dict[tuple[str, str], str] = {}
        entries: dict[str, dict[str, Any]] = {}
        with self.publisher.batch():  # one record commit; the documents go out after it
            for d, entry, doc in self._current(rollout_id, devices):
                cur = doc.release if doc else None
                staged = doc.staged if doc else None
                if entry is not None and entry.get("rolled_back"):
                    skipped[d.key] = "rolled back by this rollout"
                    continue
                if cur is not None and cur.rollout_id == rollout_id and cur.version == spec.version:
                    continue  # already switched by this rollout
                if staged is not None and staged.rollout_id == rollout_id and staged.version == spec.version:
                    if entry is None:  # staged by a run that died before writing the index
                        assert doc is not None
                        entries[_dkey(d)] = _entry(None, doc.revision, version=spec.version, staged=True)
                    continue
                if cur is not None and cur.version == spec.version:
                    skipped[d.key] = f"already runs {spec.version} (slot {cur.slot})"
                    continue
                new = Release(version=spec.version, slot=_pick_slot(cur, "inactive"), rollout_id=rollout_id)
                out = self.publisher.set_staged(d.tenant_id, d.device_id, new)
                assert out is not None
                entries[_dkey(d)] = _entry(None, out.revision, version=spec.version, staged=True)
                changed.append(d.key)
        self._update_index(rollout_id, entries)
        return self._result("stage", rollout_id, None, devices, changed, _document_keys(changed), skipped)

    def rollback(self, devices: list[DeviceRef], *, rollout_id: str, to: ReleaseSpec | None) -> DeployResult:
        if not isinstance(rollout_id, str) or not rollout_id:
            raise ValueError(f"rollout_id must be a non-empty string, got {rollout_id!r}")
        target = ReleaseSpec.of(to) if to is not None else None
        devices = unique_devices(devices)
        changed: list[tuple[str, str]] = []
        entries: dict[str, dict[str, Any]] = {}
        index = self._load_index(rollout_id)
        with self.publisher.batch():  # one record commit; the documents go out after it
            for d in devices:
                doc = self.publisher.current(d.tenant_id, d.device_id)
                cur = doc.release if doc else None
                if doc is None:
                    continue
                unstage = doc.staged is not None and doc.staged.rollout_id == rollout_id
                if cur is None or cur.rollout_id != rollout_id:
                    entry = index["devices"].get(_dkey(d))
                    if _rolled_back_by(doc, rollout_id) and not (entry or {}).get("rolled_back"):
                        # rolled back by a run that died before writing the index: record it now
                        entry = dict(entry or _entry(None, doc.revision))
                        entry.update(rolled_back=True, revision=doc.revision, version=None)
                        entries[_dkey(d)] = entry
                    if unstage:  # staged but never switched: withdraw the staged release
                        out = self.publisher.set_staged(d.tenant_id, d.device_id, None)
                        assert out is not None
                        entry = dict(index["devices"].get(_dkey(d)) or _entry(None, out.revision))
                        entry.update(rolled_back=True, staged=False, revision=out.revision, version=None)
                        entries[_dkey(d)] = entry
                        changed.append(d.key)
                    continue  # never got this rollout, or already rolled back (or moved on)
                back = _rollback_release(doc, target)
                # previous unknown: the device goes back to what it recorded before this rollout
                undo = RollbackOf(rollout_id=rollout_id, version=cur.version) if back is None else None
                out = self.publisher.set_release(
                    d.tenant_id,
                    d.device_id,
                    back,
                    None,
                    staged=None if unstage else doc.staged,
                    rollback_of=undo,
                )
                entry = dict(index["devices"].get(_dkey(d)) or _entry(cur.phase or 0, out.revision))
                entry.update(rolled_back=True, revision=out.revision, version=back.version if back else None)
                entries[_dkey(d)] = entry
                changed.append(d.key)
        self._update_index(rollout_id, entries)
        return self._result("rollback", rollout_id, None, devices, changed, _document_keys(changed))

    def status(self, rollout_id: str | None = None) -> BackendStatus:
        rollouts = [rollout_id] if rollout_id is not None else self._rollout_ids()
        out: list[DeviceStatus] = []
        for rid in rollouts:
            for dkey, entry in sorted(self._load_index(rid)["devices"].items()):
                tenant, device = dkey.split("/", 1)
                out.append(self._device_status(rid, tenant, device, entry))
        return BackendStatus(self.name, rollout_id, tuple(out))

    # ------------------------------------------------------------------ internals

    def _device_status(
        self, rollout_id: str, tenant: str, device: str, entry: dict[str, Any]
    ) -> DeviceStatus:
        doc = self.publisher.current(tenant, device)
        desired = doc.release.version if doc and doc.release else None
        reported = self.reported(tenant, device) if self.reported else None
        version, _slot, rev = reported if reported else (None, None, None)
        acked = rev is not None and rev >= entry["revision"]
        if entry.get("rolled_back"):
            state = "rolled_back" if acked else "rolling_back"
        elif entry.get("staged") and entry.get("phase") is None:
            state = "staged" if acked else "staging"
        elif not acked:
            state = "pending"
        else:
            state = "succeeded" if version == desired else "failed"
        return DeviceStatus(
            tenant_id=tenant,
            device_id=device,
            rollout_id=rollout_id,
            phase=entry.get("phase"),
            desired_version=desired,
            acknowledged=acked,
            reported_version=version,
            state=state,
            detail=f"desired revision {doc.revision}" if doc else "no desired-state document",
        )

    def _current(
        self, rollout_id: str, devices: list[DeviceRef]
    ) -> Iterator[tuple[DeviceRef, dict[str, Any] | None, DesiredState | None]]:
        """Each device with its entry in the rollout's index and its current desired-state document."""
        index = self._load_index(rollout_id)
        for d in devices:
            yield d, index["devices"].get(_dkey(d)), self.publisher.current(d.tenant_id, d.device_id)

    def _index_key(self, rollout_id: str) -> str:
        return f"{self.index_prefix}/rollout={rollout_id}/devices.json"

    def _load_index(self, rollout_id: str) -> dict[str, Any]:
        try:
            index = json.loads(self.store.get(self._index_key(rollout_id)))
        except ObjectNotFound:
            return {"format": INDEX_FORMAT, "rollout_id": rollout_id, "devices": {}}
        if index.get("rollout_id") != rollout_id:
            raise ValueError(
                f"rollout index {self._index_key(rollout_id)} in {self.store.url} belongs to "
                f"{index.get('rollout_id')!r}; remove it or use another index_prefix"
            )
        return index

    def _update_index(self, rollout_id: str, entries: dict[str, dict[str, Any]]) -> None:
        with self._index_lock:
            index = self._load_index(rollout_id)
            if all(index["devices"].get(k) == v for k, v in entries.items()):
                return
            index["devices"].update(entries)
            self.store.put(self._index_key(rollout_id), json.dumps(index, sort_keys=True).encode())

    def _rollout_ids(self) -> list[str]:
        ids, after = [], None
        while True:
            page = self.store.list(f"{self.index_prefix}/rollout=", after=after)
            ids += [o.key.split("rollout=", 1)[1].split("/", 1)[0] for o in page.objects]
            if page.next_after is None:
                return sorted(set(ids))
            after = page.next_after


def _document_keys(changed: list[tuple[str, str]]) -> list[str]:
    """The deployments of a deploy, stage or rollback: one document per changed device."""
    return [f"{t}/{d}" for t, d in changed]


def _dkey(d: DeviceRef) -> str:
    return f"{d.tenant_id}/{d.device_id}"


def _entry(
    phase: int | None, revision: int, *, version: str | None = None, staged: bool = False
) -> dict[str, Any]:
    entry = {"phase": phase, "revision": revision, "version": version, "rolled_back": False}
    if staged:
        entry["staged"] = True
    return entry


def _rolled_back_by(doc: DesiredState | None, rollout_id: str) -> bool:
    """The document is a rollback of this rollout's release (one the device undoes itself)."""
    return doc is not None and doc.rollback_of is not None and doc.rollback_of.rollout_id == rollout_id


def _pick_slot(current: Release | None, slot: str | None) -> Slot:
    running: Slot = current.slot if current is not None else "a"
    if slot is None:
        return running
    if slot == "inactive":
        return _other(running)
    return "b" if slot == "b" else "a"


def _rollback_release(doc: DesiredState, to: ReleaseSpec | None) -> Release | None:
    """``previous`` when it is what we roll back to (its slot is still installed), else ``to``
    installed in place of the release being rolled back."""
    assert doc.release is not None
    if to is None or (doc.previous is not None and doc.previous.version == to.version):
        return doc.previous
    return Release(version=to.version, slot=doc.release.slot)
