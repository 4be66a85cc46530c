"""The downlink: pull this device's signed desired state and apply it to the device.

Each sync the agent reads ``tenant=<T>/device=<D>/desired.json`` and:

1. verifies it with the platform public key and refuses stale revisions, other devices'
   documents and tampered ones (``edge_sync.desired.decode``); a refusal is recorded once
   per distinct document as an ``alerts`` row (code ``desired_<reason>``);
2. skips a revision it already applied;
3. pulls the cache's HLC past ``issued_hlc`` (causally later device edits win over it);
4. applies the release through a pluggable :class:`Installer` (install, then switch slot;
   on failure it rolls back to the previous release and records an alert). A slot that
   already holds the version is only switched to, not installed again: this is what makes
   a blue/green switch, and the switch back of a rollback, instant;
   then installs a ``staged`` release on the inactive slot without switching (blue/green
   staging; never onto the running slot, refused with an alert). A document without a
   release but with ``rollback_of`` (a rollback the platform could not name a release for)
   makes the agent go back to what it ran before that rollout (see below);
5. adopts the document's ``state_rules`` (the operator's conflict rules) if every resolver
   they name is installed here, else keeps its rules and alerts (``edge_sync.device_rules``);
   then merges the central ``state_edits`` into the device's local state with the shared
   merge (``edge_sync.merge.StateMerger``, the same conflict rules as the central side);
6. persists the applied revision together with the merged rows (one transaction), then
   reports version, slot and desired revision in the ``health`` stream (the staged version
   and slot are kept in ``_agent`` state, key ``staged``; ``staged_release`` reads them).

An installer that keeps its own record on disk (``edge_sync.slot_installer``) is followed at
the start of every pull: its probation ``tick`` runs, and what it runs and holds (after a
revert, a crash loop, a recovery) is copied into ``_agent``. When it raises ``InstallPending``
(a download spanning syncs) the document is left unapplied, status ``pending``, and the next
pull resumes it; its state edits wait with it.

Bookkeeping lives in the cache's local state under the reserved namespace ``_agent``
(written with ``replace_state_rows``, so it is never uploaded as a device edit).

Before the agent first applies a release of rollout R it records what it runs then under
key ``before:R`` (fields ``version``, ``slot``, and ``release``: R's version), once, before
installing anything, so a crash mid-install keeps the right answer. It is the only record of
the release to go back to for a device the platform never managed before R (a factory
image): a ``rollback_of = {R, version}`` document sends it back there if it still runs that
version (a switch when the slot still holds it, else an install), and changes nothing when it
never got R's release or already went back. One record per rollout the device took part in
(first write wins, so going back to an older rollout's release never overwrites that
rollout's own record); each is three short fields.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import duckdb
import pyarrow as pa

from edge_sync.cache import DeviceCache
from edge_sync.cache_store import STATE_SCHEMA
from edge_sync.desired import (
    DesiredState,
    DesiredStateError,
    Release,
    RollbackOf,
    StateEdit,
    decode,
    desired_key,
)
from edge_sync.device_rules import DeviceRules
from edge_sync.install_errors import InstallPending
from edge_sync.merge import StateMerger
from edge_sync.objectstore import ObjectNotFound, ObjectStore
from edge_sync.rules import RuleSet, rule_kind

log = logging.getLogger(__name__)

AGENT_NAMESPACE = "_agent"


# ----------------------------------------------------------------------------- installer
@runtime_checkable
class Installer(Protocol):
    """What applies a release on the device (a package manager, a container runtime, a test double)."""

    def install(self, version: str, slot: str) -> None:
        """Put ``version`` into ``slot`` without running it yet (A/B slots)."""
        ...

    def switch(self, slot: str) -> None:
        """Make ``slot`` the running one."""
        ...

    def rollback(self, previous: Release | None) -> None:
        """Return to ``previous`` (the last good release) after a failed install or switch."""
        ...


class CacheInstaller:
    """The default installer: records the release in the cache's ``_agent`` state, runs nothing.

    Devices whose software is deployed by Greengrass or IoT Edge themselves use this: the
    agent then only reports what the platform asked for.
    """

    def __init__(self, cache: DeviceCache) -> None:
        self.cache = cache

    def install(self, version: str, slot: str) -> None:
        write_agent_state(self.cache, {("slots", slot): version})

    def switch(self, slot: str) -> None:
        version = self.cache.get_state(AGENT_NAMESPACE, "slots").get(slot)
        if version is None:
            raise RuntimeError(f"slot {slot!r} has nothing installed; install a version into it first")
        write_agent_state(self.cache, {("release", "version"): version, ("release", "slot"): slot})

    def rollback(self, previous: Release | None) -> None:
        if previous is None:
            return  # nothing to go back to: keep what runs
        write_agent_state(
            self.cache,
            {
                ("slots", previous.slot): previous.version,
                ("release", "version"): previous.version,
                ("release", "slot"): previous.slot,
            },
        )


def write_agent_state(
    cache: DeviceCache, values: dict[tuple[str, str], Any], extra: pa.Table | None = None
) -> None:
    """Upsert ``_agent`` bookkeeping (``{(key, field): value}``), with ``extra`` state rows, in one write."""
    hlc = cache.observe_hlc(0)  # a fresh local HLC for the bookkeeping rows
    rows = [
        {
            "namespace": AGENT_NAMESPACE,
            "key": k,
            "field": f,
            "value": json.dumps(v, sort_keys=True),
            "hlc": hlc,
            "node_id": cache.device_id,
            "origin": "device",
        }
        for (k, f), v in values.items()
    ]
    table = pa.Table.from_pylist(rows, schema=STATE_SCHEMA)
    if extra is not None and extra.num_rows:
        table = pa.concat_tables([extra.select(STATE_SCHEMA.names).cast(STATE_SCHEMA), table])
    cache.replace_state_rows(table)


def active_release(cache: DeviceCache) -> tuple[str | None, str | None]:
    """(version, slot) the device runs, as recorded in ``_agent`` state."""
    r = cache.get_state(AGENT_NAMESPACE, "release")
    return r.get("version"), r.get("slot")


def installed_slots(cache: DeviceCache) -> dict[str, str]:
    """slot -> version installed in it, as recorded in ``_agent`` state."""
    return {k: v for k, v in cache.get_state(AGENT_NAMESPACE, "slots").items() if isinstance(v, str)}


def staged_release(cache: DeviceCache) -> tuple[str | None, str | None]:
    """(version, slot) staged on the inactive slot and not yet switched to, as recorded in ``_agent`` state."""
    r = cache.get_state(AGENT_NAMESPACE, "staged")
    return r.get("version"), r.get("slot")


def before_rollout(cache: DeviceCache, rollout_id: str) -> tuple[str | None, str | None]:
    """(version, slot) the device ran just before it first applied a release of ``rollout_id``."""
    r = cache.get_state(AGENT_NAMESPACE, _before_key(rollout_id))
    return r.get("version"), r.get("slot")


def _before_key(rollout_id: str) -> str:
    return f"before:{rollout_id}"


def applied_revision(cache: DeviceCache) -> int:
    return int(cache.get_state(AGENT_NAMESPACE, "desired").get("revision", 0))


# ----------------------------------------------------------------------------- state merge
def merge_central_edits(
    state: pa.Table, edits: Iterable[StateEdit], rules: RuleSet, *, tenant_id: str, device_id: str
) -> pa.Table:
    """The device state rows the central ``edits`` change, merged with the shared conflict rules.

    ``state`` is the cache's ``state_table()``. The device keeps only the current value of
    each field (no per-node history), so the merge is seeded with that value as the only
    known head of its node (for ``counter`` fields: as one increment). For picking rules
    (lww, max, min, prefer_*) this gives exactly the central result, because the current
    value is the greatest of everything the device has seen. Runs ``StateMerger`` on a
    private in-memory DuckDB; returns rows in ``STATE_SCHEMA`` (only fields whose value,
    HLC, node or origin changed).
    """
    edits = list(edits)
    if not edits:
        return STATE_SCHEMA.empty_table()
    touched = {(e.namespace, e.key, e.field) for e in edits}
    seed = [r for r in state.to_pylist() if (r["namespace"], r["key"], r["field"]) in touched]
    con = duckdb.connect(":memory:")
    try:
        merger = StateMerger(con, rules, state_table="st", conflicts_table="cf", contributions_table="co")
        _seed(con, seed, rules, tenant_id, device_id)
        merger.merge(
            pa.Table.from_pylist(
                [
                    {
                        "tenant_id": tenant_id,
                        "device_id": device_id,
                        **e.model_dump(
                            include={"namespace", "key", "field", "value", "hlc", "node_id", "origin"}
                        ),
                    }
                    for e in edits
                ]
            )
        )
        merged = con.execute(
            "SELECT namespace, key, field, value, hlc, node_id, origin FROM st ORDER BY namespace, key, field"
        ).to_arrow_table()
    finally:
        con.close()
    before = {(r["namespace"], r["key"], r["field"]): r for r in seed}
    changed = [r for r in merged.to_pylist() if before.get((r["namespace"], r["key"], r["field"])) != r]
    return pa.Table.from_pylist(changed, schema=STATE_SCHEMA)


def _seed(
    con: duckdb.DuckDBPyConnection, seed: list[dict], rules: RuleSet, tenant_id: str, device_id: str
) -> None:
    if not seed:
        return
    state, contrib = [], []
    for r in seed:
        rule = rules.rule_for(r["namespace"], r["field"])
        key = (tenant_id, device_id, r["namespace"], r["key"], r["field"])
        state.append((*key, r["value"], r["hlc"], r["node_id"], r["origin"], rule, rules.version, 0))
        kind = "increment" if rule_kind(rule).sums else "head"
        contrib.append((*key, r["node_id"], r["hlc"], r["value"], r["origin"], kind, rule))
    con.executemany("INSERT INTO st VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", state)
    con.executemany("INSERT INTO co VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", contrib)


# ----------------------------------------------------------------------------- downlink
@dataclass
class DownlinkResult:
    """What one pull did. ``status``: absent, unchanged, applied, pending (install under way), refused, offline."""

    status: str
    revision: int | None = None
    reason: str | None = None
    message: str | None = None
    release: dict[str, Any] | None = None
    install_error: str | None = None
    staged: dict[str, Any] | None = None  # what is staged on the inactive slot after the pull
    stage_error: str | None = None
    install_pending: str | None = None  # an install under way (download budget): retried next pull
    edits_received: int = 0
    fields_changed: int = 0
    dropped_edits: list[str] = field(default_factory=list)
    rules_version: int | None = None  # the rules version the state edits merged under
    rules_error: str | None = None  # the document's state rules were refused (why)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Downlink:
    """Pulls and applies this device's desired state; one ``pull()`` per sync."""

    def __init__(
        self,
        cache: DeviceCache,
        store: ObjectStore,
        *,
        platform_keys: bytes | list[bytes],
        rules: RuleSet,
        installer: Installer | None = None,
    ) -> None:
        self.cache, self.store = cache, store
        self.platform_keys = platform_keys
        self.device_rules = DeviceRules(rules, cache, AGENT_NAMESPACE)
        self.installer = installer or CacheInstaller(cache)
        self.key = desired_key(cache.tenant_id, cache.device_id)
        self._refused: set[str] = set()  # digests of documents and refusals already alerted on

    @property
    def rules(self) -> RuleSet:
        """The rules central edits merge with now: the document's when adopted, else the configured."""
        return self.device_rules.active

    def pull(self) -> DownlinkResult:
        """Fetch, verify and apply; network trouble propagates (``StoreUnavailable``)."""
        self._follow_installer()
        try:
            data = self.store.get(self.key)
        except ObjectNotFound:
            return DownlinkResult("absent")
        current = applied_revision(self.cache)
        try:
            doc = decode(
                data,
                platform_keys=self.platform_keys,
                tenant_id=self.cache.tenant_id,
                device_id=self.cache.device_id,
                applied_revision=current,
            )
        except DesiredStateError as exc:
            self._alert_refusal(data, exc)
            return DownlinkResult("refused", reason=exc.reason, message=str(exc))
        if doc.revision == current:
            return DownlinkResult("unchanged", revision=current)
        return self.apply(doc)

    def _follow_installer(self) -> None:
        """Advance an installer's probation and record what it really runs (a revert, a crash).

        Installers that keep their own record on disk (``SlotInstaller``) are the truth about
        what runs; the cache's ``_agent`` record follows them, so status and health rows agree.
        """
        tick = getattr(self.installer, "tick", None)
        if callable(tick):
            tick()
        running = getattr(self.installer, "running", None)
        slots = getattr(self.installer, "slots", None)
        if not callable(running) or not callable(slots):
            return
        book: dict[tuple[str, str], Any] = {}
        version, slot = running()
        if version is not None and (version, slot) != active_release(self.cache):
            book[("release", "version")], book[("release", "slot")] = version, slot
        on_disk = slots()
        for s, v in on_disk.items():
            if installed_slots(self.cache).get(s) != v:
                book[("slots", s)] = v
        for s in installed_slots(self.cache).keys() - on_disk.keys():
            book[("slots", s)] = None
        if book:
            write_agent_state(self.cache, book)

    def _alert_refusal(self, data: bytes, exc: DesiredStateError) -> None:
        digest = hashlib.sha256(data).hexdigest()
        log.warning("desired state refused (%s): %s", exc.reason, exc)
        if digest in self._refused:
            return
        self._refused.add(digest)
        severity = "critical" if exc.reason in ("bad_signature", "wrong_device") else "warning"
        self.cache.record(
            "alerts", {"severity": severity, "code": f"desired_{exc.reason}", "message": str(exc)[:500]}
        )

    def apply(self, doc: DesiredState) -> DownlinkResult:
        """Apply a verified document (release, state edits, revision, health row)."""
        self.cache.observe_hlc(doc.issued_hlc)
        result = DownlinkResult("applied", revision=doc.revision, edits_received=len(doc.state_edits))
        try:
            if doc.release is not None:
                result.install_error = self._apply_release(doc)
            elif doc.rollback_of is not None:
                result.install_error = self._revert(doc.rollback_of)
            if doc.staged is not None:
                result.stage_error = self._stage(doc.staged)
        except InstallPending as exc:  # not applied yet: the next pull resumes (same revision)
            log.info("install under way: %s", exc)
            result.status, result.install_pending = "pending", str(exc)
            version, slot = active_release(self.cache)
            result.release = {"version": version, "slot": slot}
            return result
        book: dict[tuple[str, str], Any] = {("desired", "revision"): doc.revision}
        staged = self._staged_now(doc.staged if result.stage_error is None else None)
        if staged != staged_release(self.cache):
            book[("staged", "version")], book[("staged", "slot")] = staged
        result.rules_error = self.device_rules.follow(doc.state_rules, book.update, self._alert_once)
        result.rules_version = self.rules.version
        edits, dropped, counter_hlc = self._usable_edits(doc.state_edits)
        result.dropped_edits = dropped
        changed = merge_central_edits(
            self.cache.state_table(),
            edits,
            self.rules,
            tenant_id=self.cache.tenant_id,
            device_id=self.cache.device_id,
        )
        result.fields_changed = changed.num_rows
        if counter_hlc is not None:
            book[("desired", "counter_hlc")] = counter_hlc
        write_agent_state(self.cache, book, extra=changed)  # merged rows and revision: one transaction
        version, slot = active_release(self.cache)
        result.release = {"version": version, "slot": slot}
        if staged[0] is not None:
            result.staged = {"version": staged[0], "slot": staged[1]}
        self.cache.record("health", {"version": version, "slot": slot, "desired_revision": doc.revision})
        return result

    def _apply_release(self, doc: DesiredState) -> str | None:
        release = doc.release
        assert release is not None
        if release.rollout_id is not None:
            self._remember_before(release)
        return self._switch_to(release, doc.previous)

    def _remember_before(self, release: Release) -> None:
        """Record what runs now, the first time a release of this rollout is applied (module doc)."""
        assert release.rollout_id is not None
        key = _before_key(release.rollout_id)
        if self.cache.get_state(AGENT_NAMESPACE, key):
            return  # first write wins: later revisions of the rollout, or going back to it
        version, slot = active_release(self.cache)
        write_agent_state(
            self.cache, {(key, "version"): version, (key, "slot"): slot, (key, "release"): release.version}
        )

    def _revert(self, rollback: RollbackOf) -> str | None:
        """Undo ``rollback``'s release: go back to what ran before its rollout; an error message, or None."""
        version, slot = active_release(self.cache)
        if version != rollback.version:
            return None  # never installed it, already went back, or moved on since
        before, before_slot = before_rollout(self.cache, rollback.rollout_id)
        if before is None or before_slot not in ("a", "b"):
            message = (
                f"rollback of {rollback.version} (rollout {rollback.rollout_id}) cannot be applied: this device "
                "has no record of what it ran before that rollout (its cache was reset, or its agent predates "
                f"the record); it keeps running {version}. Deploy the release to go back to explicitly"
            )
            self._alert_once("critical", "rollback_unknown_previous", message)
            return message
        return self._switch_to(Release(version=before, slot=before_slot), None)

    def _switch_to(self, release: Release, previous: Release | None) -> str | None:
        """Run ``release`` (install it unless its slot holds it, then switch); an error message, or None."""
        if active_release(self.cache) == (release.version, release.slot):
            return None
        try:
            # A slot that already holds the version (staged, or the old slot kept by a
            # blue/green switch) is switched to without a download: the instant switch.
            if installed_slots(self.cache).get(release.slot) != release.version:
                self.installer.install(release.version, release.slot)
            self.installer.switch(release.slot)
            if isinstance(self.installer, CacheInstaller):
                return None
            write_agent_state(
                self.cache,
                {
                    ("slots", release.slot): release.version,
                    ("release", "version"): release.version,
                    ("release", "slot"): release.slot,
                },
            )
            return None
        except InstallPending:
            raise
        except Exception as exc:  # any installer failure: go back to the last good release, tell central
            log.exception("installing %s into slot %s failed", release.version, release.slot)
            if previous is None:
                version, slot = active_release(self.cache)
                previous = Release(version=version, slot=slot) if version and slot in ("a", "b") else None
            try:
                self.installer.rollback(previous)
            except Exception:
                log.exception("rollback to %s failed too", previous)
            message = f"install of {release.version} into slot {release.slot} failed: {exc}"
            self.cache.record(
                "alerts", {"severity": "critical", "code": "install_failed", "message": message[:500]}
            )
            return message

    def _stage(self, staged: Release) -> str | None:
        """Install ``staged`` on its slot without switching; an error message, or None."""
        version, slot = active_release(self.cache)
        if staged.slot == slot:
            message = (
                f"staged release {staged.version} targets slot {staged.slot}, which runs {version}: not installed "
                "(staging only fills the inactive slot; the switch will install it)"
            )
            self._alert_once("warning", "stage_refused", message)
            return message
        if installed_slots(self.cache).get(staged.slot) == staged.version:
            return None  # already there (staged by an earlier revision, or kept from a switch)
        try:
            self.installer.install(staged.version, staged.slot)
            if not isinstance(self.installer, CacheInstaller):
                write_agent_state(self.cache, {("slots", staged.slot): staged.version})
            return None
        except InstallPending:
            raise
        except Exception as exc:  # a failed staging changes nothing that runs: report it, keep going
            log.exception("staging %s into slot %s failed", staged.version, staged.slot)
            message = f"staging {staged.version} into slot {staged.slot} failed: {exc}"
            self.cache.record(
                "alerts", {"severity": "warning", "code": "stage_failed", "message": message[:500]}
            )
            return message

    def _staged_now(self, staged: Release | None) -> tuple[str | None, str | None]:
        """What is staged after this pull: the document's staged release if its slot holds it and
        is not the running one (a switch to it or a refusal leaves nothing staged)."""
        if staged is None:
            return None, None
        running = active_release(self.cache)
        if (
            running == (staged.version, staged.slot)
            or installed_slots(self.cache).get(staged.slot) != staged.version
        ):
            return None, None
        return staged.version, staged.slot

    def _alert_once(self, severity: str, code: str, message: str) -> None:
        digest = hashlib.sha256(f"{code}\n{message}".encode()).hexdigest()
        if digest not in self._refused:
            self._refused.add(digest)
            self.cache.record("alerts", {"severity": severity, "code": code, "message": message[:500]})

    def _usable_edits(self, edits: list[StateEdit]) -> tuple[list[StateEdit], list[str], int | None]:
        """Drop edits of the reserved namespace and counter increments already applied.

        Picking rules are idempotent, but the device keeps no per-edit history for
        counters: increments at or below the last applied counter HLC are not added again.
        """
        seen = self.cache.get_state(AGENT_NAMESPACE, "desired").get("counter_hlc", 0)
        keep, dropped, top = [], [], None
        for e in edits:
            where = f"{e.namespace}/{e.key}.{e.field}@{e.hlc}"
            if e.namespace == AGENT_NAMESPACE:
                dropped.append(f"{where}: namespace {AGENT_NAMESPACE!r} is reserved for the agent")
                continue
            if rule_kind(self.rules.rule_for(e.namespace, e.field)).sums:
                if e.hlc <= seen:
                    dropped.append(f"{where}: counter increment already applied")
                    continue
                top = max(top or 0, e.hlc)
            keep.append(e)  # picking rules, set_union and custom: re-applying is harmless
        return keep, dropped, top
