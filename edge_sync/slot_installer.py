"""The A/B slot installer: download, verify, install, switch, check, then commit or revert.

The edge agent's real installer (the ``Installer`` of ``edge_sync.downlink``), for devices
whose application the agent deploys itself. The layout under ``root``::

    journal.json         what the installer is doing (edge_sync.install_journal, atomic)
    downloads/<sha256>   verified artifacts; <sha256>.part while downloading (resumable)
    slots/a/, slots/b/   one release each: its artifacts, release.json (signed), .installed
    current -> slots/a   the running slot: a symlink replaced by rename, so the switch is atomic

``install(version, slot)`` fetches the signed manifest (``edge_sync.release_manifest``),
checks free disk space, downloads the artifacts within the bandwidth budget (resuming
partial files), verifies size and SHA-256, and builds the slot in ``slots/.<slot>.new``
before renaming it into place. It never touches the running slot. ``switch(slot)`` points
``current`` at the slot, runs the release's health check and starts its probation;
``tick()`` (every sync) runs the check again and commits once ``probation_s`` has passed. A
failed check reverts to the slot that ran before (no download: that slot still holds it),
and so does a crash loop: more than ``max_restarts`` agent starts during probation (the
agent restarts with the application it supervises, like Greengrass marking a component
BROKEN). A reverted version is not switched to again on this device.

Crash safety: every step that changes the disk is preceded by its intent in the journal;
``recover()`` (run when the installer is built, i.e. at agent start) finishes or undoes the
step it finds: a half-built slot is removed (the download resumes), a switch is completed
into probation or forgotten, a revert is finished. Afterwards ``current`` points at a
complete slot, the committed one or the one in probation.

Each step goes to the ``health`` stream as ``update_state`` (downloading, installed,
activated, committed, reverted, failed), with ``update_version`` (the release concerned)
and ``update_reason``; ``version``/``slot`` of those rows stay what actually runs, so the
central side never counts a device as updated before it switched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_sync import install_journal
from edge_sync.artifact_fetch import ArtifactFetcher
from edge_sync.bandwidth import BandwidthBudget
from edge_sync.cache import DeviceCache
from edge_sync.desired import Release
from edge_sync.install_errors import InstallError, InstallPending
from edge_sync.objectstore import ObjectNotFound, ObjectStore, StoreUnavailable
from edge_sync.release_manifest import ManifestError, ReleaseManifest, decode, manifest_key

log = logging.getLogger(__name__)

SLOTS = ("a", "b")
MANIFEST_FILE = "release.json"
INSTALLED_FILE = ".installed"
# The step boundaries a crash can fall on, in order; ``step_hook`` is called at each (tests).
STEPS = (
    "downloading",
    "downloaded",
    "slot_built",
    "slot_moved",
    "installed",
    "activating",
    "switched",
    "activated",
    "reverting",
    "reverted",
)
Check = Callable[[list[str], Path, dict[str, str], float], tuple[bool, str]]


def run_check(command: list[str], cwd: Path, env: dict[str, str], timeout_s: float) -> tuple[bool, str]:
    """Run a health-check command; (passed, why) with the tail of its output when it failed."""
    try:
        done = subprocess.run(
            command, cwd=cwd, env={**os.environ, **env}, capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return False, f"health check {command[0]} did not finish within {timeout_s:g}s"
    except OSError as exc:
        return False, f"health check {command[0]} could not run: {exc}"
    if done.returncode == 0:
        return True, ""
    tail = (done.stderr or done.stdout or b"").decode(errors="replace").strip()[-300:]
    return False, f"health check {command[0]} exited {done.returncode}: {tail}"


class SlotInstaller:
    """A/B slots on disk with a crash-safe journal (see module doc)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        cache: DeviceCache,
        store: ObjectStore,
        platform_keys: bytes | list[bytes],
        budget: BandwidthBudget | None = None,
        chunk_bytes: int = 1 << 20,
        min_free_bytes: int = 64 << 20,
        free_bytes: Callable[[Path], int] | None = None,
        check: Check = run_check,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        step_hook: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root)
        (self.root / "slots").mkdir(parents=True, exist_ok=True)
        self.cache, self.store, self.platform_keys = cache, store, platform_keys
        self.journal_path = self.root / "journal.json"
        self.fetcher = ArtifactFetcher(
            store, self.root / "downloads", budget=budget, chunk_bytes=chunk_bytes, sleep=sleep
        )
        self.min_free_bytes = min_free_bytes
        self._free = free_bytes or (lambda p: shutil.disk_usage(p).free)
        self._check = check
        self._wall = wall
        self._hook = step_hook or (lambda step: None)
        self.journal = install_journal.read(self.journal_path)
        self.recover()

    def use_store(self, store: ObjectStore) -> None:
        """Fetch from ``store`` from now on (the agent rebuilt it with a rotated credential)."""
        self.store = self.fetcher.store = store

    # ------------------------------------------------------------------ what is on disk
    def slot_dir(self, slot: str) -> Path:
        return self.root / "slots" / slot

    def active_slot(self) -> str | None:
        """The slot ``current`` points at, or None."""
        try:
            target = os.readlink(self.root / "current")
        except (FileNotFoundError, OSError):
            return None
        name = Path(target).name
        return name if name in SLOTS else None

    def slot_version(self, slot: str) -> str | None:
        """The version a complete slot holds (its ``.installed`` marker), or None."""
        try:
            return (self.slot_dir(slot) / INSTALLED_FILE).read_text().strip() or None
        except (FileNotFoundError, NotADirectoryError):
            return None

    def slots(self) -> dict[str, str]:
        return {s: v for s in SLOTS if (v := self.slot_version(s)) is not None}

    def running(self) -> tuple[str | None, str | None]:
        """(version, slot) ``current`` points at."""
        slot = self.active_slot()
        return (self.slot_version(slot), slot) if slot else (None, None)

    def status(self) -> dict[str, Any]:
        """What ``edge-sync status`` shows: the committed release, a step under way, reverted versions."""
        p = self.journal["pending"]
        return {
            "committed": self.journal["committed"],
            "pending": None if p is None else {k: p[k] for k in ("step", "version", "slot") if k in p},
            "slots": self.slots(),
            "reverted": self.journal["reverted"],
        }

    def in_probation(self) -> bool:
        p = self.journal["pending"]
        return p is not None and p["step"] == "activated"

    # ------------------------------------------------------------------ Installer protocol
    def install(self, version: str, slot: str) -> None:
        """Download, verify and build ``version`` into the inactive ``slot`` (no switch)."""
        _check_slot(slot)
        if self.slot_version(slot) == version:
            return  # already there (a retried pull after a crash, or staged earlier)
        if self.active_slot() == slot:
            raise InstallError(
                "active_slot", f"slot {slot} runs {self.slot_version(slot)}: install into the other slot"
            )
        raw, manifest = self._manifest(version)
        pending = self.journal["pending"]
        if pending is None or (pending.get("version"), pending.get("slot")) != (version, slot):
            self._journal(pending={"step": "downloading", "version": version, "slot": slot})
            self._report("downloading", version)
        self._hook("downloading")
        try:
            self._check_disk(manifest)
            allowance = self.fetcher.allowance()
            files = [self.fetcher.fetch(a, allowance) for a in manifest.artifacts]
        except InstallError as exc:
            self._journal(pending=None)
            self._report("failed", version, f"{exc.reason}: {exc}")
            raise
        self._hook("downloaded")
        try:
            self._build_slot(slot, version, raw, manifest, files)
        except InstallError as exc:
            shutil.rmtree(self.root / "slots" / f".{slot}.new", ignore_errors=True)
            self._journal(pending=None)
            self._report("failed", version, f"{exc.reason}: {exc}")
            for a in manifest.artifacts:
                self.fetcher.discard(a)  # signed bytes that do not unpack: fetching them again will not help
            raise
        self._journal(pending=None)
        self._report("installed", version)
        for a in manifest.artifacts:
            self.fetcher.discard(a)

    def switch(self, slot: str) -> None:
        """Activate ``slot`` atomically, run its health check, start probation (or commit at once)."""
        _check_slot(slot)
        version = self.slot_version(slot)
        if version is None:
            raise InstallError(
                "empty_slot", f"slot {slot} holds no complete release: install one into it first"
            )
        if version in self.journal["reverted"]:
            raise InstallError(
                "reverted_before",
                f"{version} was reverted on this device ({self.journal['reverted'][version]}); not activated again",
            )
        if self.active_slot() == slot:
            return
        manifest = self._slot_manifest(slot)
        run_v, run_s = self.running()
        previous = {"version": run_v, "slot": run_s} if run_v else None
        self._journal(pending={"step": "activating", "version": version, "slot": slot, "previous": previous})
        self._hook("activating")
        self._point_current(slot)
        self._hook("switched")
        self._journal(
            pending={
                **self.journal["pending"],
                "step": "activated",
                "activated_at": self._wall(),
                "starts": 0,
            }
        )
        self._report("activated", version)
        self._hook("activated")
        ok, why = self._health(slot, version, manifest)
        if not ok:
            self._revert(f"health_check: {why}")
            raise InstallError("health_check", f"{version} in slot {slot} failed its health check: {why}")
        if manifest.probation_s == 0:
            self._commit()

    def rollback(self, previous: Release | None) -> None:
        """After a failed install or switch: make sure a committed release runs."""
        if self.journal["pending"] is not None and self.journal["pending"]["step"] in (
            "activating",
            "activated",
        ):
            self._revert("rollback: the install failed")
            return
        committed = self.journal["committed"]
        if committed is not None and self.active_slot() == committed["slot"]:
            return  # a release that passed its check runs (a failed switch already reverted here)
        if previous is not None and self.slot_version(previous.slot) == previous.version:
            if self.active_slot() != previous.slot:
                self._point_current(previous.slot)
            self._journal(committed={"version": previous.version, "slot": previous.slot})

    # ------------------------------------------------------------------ probation
    def tick(self) -> str | None:
        """Advance probation: revert on a failed check, commit when it is over; the new update_state or None."""
        p = self.journal["pending"]
        if p is None or p["step"] != "activated":
            return None
        try:
            manifest = self._slot_manifest(p["slot"])
        except InstallError as exc:  # the slot in probation changed under us: not a release to keep
            self._revert(f"{exc.reason}: {exc}")
            return "reverted"
        ok, why = self._health(p["slot"], p["version"], manifest)
        if not ok:
            self._revert(f"health_check: {why}")
            return "reverted"
        if self._wall() - p["activated_at"] >= manifest.probation_s:
            self._commit()
            return "committed"
        return None

    # ------------------------------------------------------------------ crash recovery
    def recover(self) -> None:
        """Finish or undo the step a previous agent was killed in (module doc)."""
        p = self.journal["pending"]
        for slot in SLOTS:  # leftovers of a slot build
            for leftover in (self.root / "slots" / f".{slot}.new", self.root / "slots" / f".{slot}.old"):
                shutil.rmtree(leftover, ignore_errors=True)
        if p is None:
            committed = self.journal["committed"]
            if (
                committed
                and self.active_slot() != committed["slot"]
                and self.slot_version(committed["slot"]) == committed["version"]
            ):
                self._point_current(committed["slot"])
            return
        step = p["step"]
        if step == "downloading":
            self._journal(pending=None)  # the partial download stays: the next install resumes it
        elif step == "activating":
            if self.active_slot() == p["slot"]:
                self._journal(pending={**p, "step": "activated", "activated_at": self._wall(), "starts": 0})
                self._report("activated", p["version"])
            else:
                self._journal(pending=None)
        elif step == "activated":
            starts = int(p.get("starts", 0)) + 1
            self._journal(pending={**p, "starts": starts})
            try:
                limit = self._slot_manifest(p["slot"]).max_restarts
            except InstallError as exc:
                self._revert(f"{exc.reason}: {exc}")
                return
            if starts > limit:
                self._revert(
                    f"crash_loop: the agent restarted {starts} times during probation (limit {limit})"
                )
        elif step == "reverting":
            self._finish_revert()

    # ------------------------------------------------------------------ steps
    def _manifest(self, version: str) -> tuple[bytes, ReleaseManifest]:
        try:
            raw = self.store.get(manifest_key(self.cache.tenant_id, version))
        except ObjectNotFound as exc:
            self._report("failed", version, "no_manifest")
            raise InstallError(
                "no_manifest", f"release {version} has no manifest in the store: {exc}"
            ) from exc
        except StoreUnavailable as exc:
            raise InstallPending(
                f"release manifest of {version} unreachable ({exc}); retrying next sync"
            ) from exc
        try:
            manifest = decode(
                raw, platform_keys=self.platform_keys, tenant_id=self.cache.tenant_id, version=version
            )
        except ManifestError as exc:
            self._report("failed", version, f"{exc.reason}: {exc}")
            raise InstallError(exc.reason, str(exc)) from exc
        return raw, manifest

    def _slot_manifest(self, slot: str) -> ReleaseManifest:
        """The signed manifest kept in a slot, verified again; ``InstallError(slot_damaged)`` if it is not."""
        version = self.slot_version(slot)
        try:
            raw = (self.slot_dir(slot) / MANIFEST_FILE).read_bytes()
            return decode(
                raw, platform_keys=self.platform_keys, tenant_id=self.cache.tenant_id, version=version or ""
            )
        except (OSError, ManifestError) as exc:
            raise InstallError(
                "slot_damaged", f"slot {slot} ({version}) has no valid release.json: {exc}"
            ) from exc

    def _check_disk(self, manifest: ReleaseManifest) -> None:
        to_download = sum(self.fetcher.missing_bytes(a) for a in manifest.artifacts)
        need = (
            to_download + manifest.total_bytes + self.min_free_bytes
        )  # the download, then its copy in the slot
        free = self._free(self.root)
        if free < need:
            raise InstallError(
                "disk_full",
                f"release {manifest.version} needs {need} bytes free under {self.root} ({to_download} to download, "
                f"{manifest.total_bytes} for the slot, {self.min_free_bytes} kept free); {free} are free",
            )

    def _build_slot(
        self, slot: str, version: str, raw: bytes, manifest: ReleaseManifest, files: list[Path]
    ) -> None:
        new = self.root / "slots" / f".{slot}.new"
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir()
        for artifact, path in zip(manifest.artifacts, files, strict=True):
            if artifact.unpack:
                try:
                    with tarfile.open(path) as tar:
                        tar.extractall(new, filter="data")  # refuses absolute paths, links out, devices
                except tarfile.TarError as exc:  # FilterError included: a member that would escape
                    raise InstallError(
                        "bad_archive", f"{artifact.name} does not unpack safely: {exc}"
                    ) from exc
            else:
                shutil.copyfile(path, new / artifact.name)
        (new / MANIFEST_FILE).write_bytes(raw)
        for f in new.rglob("*"):
            if f.is_file() and not f.is_symlink():
                _fsync_file(f)
        _write_durable(new / INSTALLED_FILE, version)
        self._hook("slot_built")
        final, old = self.slot_dir(slot), self.root / "slots" / f".{slot}.old"
        if final.exists():
            os.rename(final, old)
        os.rename(new, final)
        install_journal.sync_dir(final.parent)
        self._hook("slot_moved")
        shutil.rmtree(old, ignore_errors=True)
        self._hook("installed")

    def _point_current(self, slot: str) -> None:
        tmp = self.root / ".current.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(f"slots/{slot}", tmp)
        os.replace(tmp, self.root / "current")
        install_journal.sync_dir(self.root)

    def _health(self, slot: str, version: str, manifest: ReleaseManifest) -> tuple[bool, str]:
        if manifest.health_check is None:
            return True, ""
        env = {
            "EDGE_SYNC_SLOT": slot,
            "EDGE_SYNC_VERSION": version,
            "EDGE_SYNC_SLOT_DIR": str(self.slot_dir(slot)),
        }
        return self._check(
            list(manifest.health_check.command), self.slot_dir(slot), env, manifest.health_check.timeout_s
        )

    def _commit(self) -> None:
        p = self.journal["pending"]
        self._journal(committed={"version": p["version"], "slot": p["slot"]}, pending=None)
        self._report("committed", p["version"])

    def _revert(self, reason: str) -> None:
        self._journal(pending={**self.journal["pending"], "step": "reverting", "reason": reason})
        self._hook("reverting")
        self._finish_revert()

    def _finish_revert(self) -> None:
        p = self.journal["pending"]
        prev = p.get("previous")
        if prev and self.slot_version(prev["slot"]) == prev["version"]:
            self._point_current(prev["slot"])
        else:  # nothing ran before this release: run nothing rather than a failed release
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / "current")
            install_journal.sync_dir(self.root)
        self._hook("reverted")
        reverted = {**self.journal["reverted"], p["version"]: p.get("reason", "reverted")}
        self._journal(pending=None, reverted=reverted, committed=prev)
        log.warning("reverted %s from slot %s: %s", p["version"], p["slot"], p.get("reason"))
        self._report("reverted", p["version"], p.get("reason"))

    def _journal(self, **changes: Any) -> None:
        self.journal = {**self.journal, **changes}
        install_journal.write(self.journal_path, self.journal)

    def _report(self, state: str, version: str, reason: str | None = None) -> None:
        run_v, run_s = self.running()
        self.cache.record(
            "health",
            {
                "version": run_v,
                "slot": run_s,
                "update_state": state,
                "update_version": version,
                "update_reason": (reason or None) and reason[:500],
            },
        )


def _check_slot(slot: str) -> None:
    if slot not in SLOTS:
        raise InstallError("bad_slot", f"slot {slot!r} is not one of {SLOTS}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
