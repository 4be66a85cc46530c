"""GitOps: rollout specs in a git repository drive launches, updates and aborts.

``GitOpsWatcher`` keeps a clone of the repository (a path or URL; ``git`` subprocess, no
library) and compares the spec files (``<spec_dir>/*.yaml|yml``) on the tracked branch
between the last commit it handled and the branch head:

* a new spec file launches a rollout;
* a changed spec file updates its active rollout in place when only fields that are safe
  to change mid-flight changed (gates, bake times and approvals of phases not reached yet,
  deadlines, timeouts, maintenance window, rollback policy, later phases): a
  ``spec_updated`` event with the commit and the changed field paths
  (``commands.spec_change`` decides);
* any other change supersedes: the active rollout is aborted (rolled back) with a reason
  naming the fields, and a rollout of the new spec is launched;
* a deleted spec file aborts the active rollout of that file.

Every event records the repository, path and commit (and the commit's author as the
actor). Applying a diff is idempotent: rollout ids derive from (path, commit), aborts and
updates carry the commit as request id, so replaying a diff after a crash changes nothing.
An invalid spec, or one whose plan cannot reach a gate verdict on its target
(``plan.PlanError``: the numbers and the fix), is skipped with its errors reported (the rest of the diff still applies);
an invalid edit of a running rollout's file leaves that rollout running as it is (a typo
must not roll a fleet back).

Optional status write-back: ``write_status`` commits a JSON file with each spec's rollout,
status and phase to the branch and pushes it (the status file is never read as a spec).
``commit_file`` commits other reports the same way (the ``device_drift`` summary; JSON only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeplat.rollouts.commands import CommandError, spec_change
from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.events import TERMINAL, RolloutState, Status
from edgeplat.rollouts.plan import PlanError
from edgeplat.rollouts.spec import SpecError, load_spec

log = logging.getLogger(__name__)
SPEC_SUFFIXES = (".yaml", ".yml")


class GitOpsError(RuntimeError):
    """A git command failed; the message has the command and git's own words."""


@dataclass
class GitOpsResult:
    """What one sync did: the commit range, rollouts launched and aborted, specs rejected."""

    head: str
    previous: str | None
    launched: list[dict[str, str]] = field(default_factory=list)
    aborted: list[dict[str, str]] = field(default_factory=list)
    invalid: list[dict[str, str]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "previous": self.previous,
            "launched": self.launched,
            "aborted": self.aborted,
            "invalid": self.invalid,
            "updated": self.updated,
        }


def _git(cwd: Path | None, *args: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise GitOpsError(
            f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc.stdout


class GitOpsWatcher:
    """A clone of ``repo`` (path or URL) at ``workdir`` tracking ``branch`` (see module doc)."""

    def __init__(
        self,
        repo: str,
        workdir: Path | str,
        *,
        branch: str = "main",
        spec_dir: str = "rollouts",
        status_file: str | None = None,
    ) -> None:
        self.repo, self.workdir, self.branch = repo, Path(workdir), branch
        self.spec_dir = spec_dir.strip("/")
        self.status_file = status_file

    # ------------------------------------------------------------------ git

    def fetch(self) -> str:
        """Clone or fetch; returns the commit at the head of the tracked branch."""
        if not (self.workdir / ".git").exists():
            self.workdir.parent.mkdir(parents=True, exist_ok=True)
            _git(None, "clone", "--quiet", "--branch", self.branch, self.repo, str(self.workdir))
        else:
            _git(self.workdir, "fetch", "--quiet", "origin", self.branch)
        return _git(self.workdir, "rev-parse", f"origin/{self.branch}").strip()

    def _is_spec(self, path: str) -> bool:
        return (
            path.endswith(SPEC_SUFFIXES)
            and (not self.spec_dir or path.startswith(self.spec_dir + "/"))
            and path != self.status_file
            and not path.startswith("fleet/")  # desired device state (edgeplat.fleet_config), not specs
        )

    def changes(self, since: str | None, head: str) -> list[tuple[str, str]]:
        """``(status, path)`` of spec files changed in ``since..head``: A(dded), M(odified), D(eleted)."""
        if since is None:
            files = _git(self.workdir, "ls-tree", "-r", "--name-only", head).splitlines()
            return [("A", f) for f in sorted(files) if self._is_spec(f)]
        out = _git(self.workdir, "diff", "--name-status", "--no-renames", since, head).splitlines()
        return [
            (line.split("\t", 1)[0][0], line.split("\t", 1)[1])
            for line in out
            if self._is_spec(line.split("\t", 1)[1])
        ]

    def show(self, commit: str, path: str) -> str:
        return _git(self.workdir, "show", f"{commit}:{path}")

    def author(self, commit: str) -> tuple[str, str]:
        """(``gitops:<author email>``, commit subject)."""
        email, subject = (
            _git(self.workdir, "log", "-1", "--format=%ae%x1f%s", commit).rstrip("\n").split("\x1f", 1)
        )
        return f"gitops:{email}", subject

    # ------------------------------------------------------------------ apply

    def sync(self, ctl: Controller, since: str | None) -> GitOpsResult:
        """Apply the spec changes between ``since`` and the branch head (see module doc)."""
        head = self.fetch()
        result = GitOpsResult(head, since)
        if since == head:
            return result
        actor, subject = self.author(head)
        by_path = self.rollouts_by_path(ctl)
        for status, path in self.changes(since, head):
            source = {
                "kind": "gitops",
                "repo": self.repo,
                "branch": self.branch,
                "path": path,
                "commit": head,
            }
            active = by_path.get(path)
            state = ctl.store.state(active) if active else None
            if state is not None and state.abort_requested is not None:
                state = None  # already being aborted: nothing to update or abort
            if status == "D":
                if state is not None:
                    self._abort(
                        ctl, result, state, active, f"spec deleted in {head[:12]}: {subject}", actor, source
                    )
                continue
            try:
                spec = load_spec(self.show(head, path))
            except SpecError as exc:
                result.invalid.append({"path": path, "commit": head, "errors": str(exc)})
                continue
            rid = f"{spec.name}-{hashlib.sha256(f'{path}@{head}'.encode()).hexdigest()[:8]}"
            if state is not None and active != rid:
                change = spec_change(state, spec)
                if not change.changed:
                    continue  # same spec (formatting, comments, or a replayed update): nothing to do
                if change.in_place and _updatable(state):
                    ctl.update_spec(
                        active,
                        spec,
                        actor=actor,
                        request_id=f"gitops:{head}",
                        reason=f"{path} at {head[:12]}: {subject}",
                        inputs={"gitops": source},
                    )
                    result.updated.append(
                        {"rollout_id": active, "path": path, "commit": head, "changed": list(change.changed)}
                    )
                    continue
                why = "; ".join(change.unsafe) or f"the rollout is {state.status}"
                self._abort(
                    ctl,
                    result,
                    state,
                    active,
                    f"spec changed in {head[:12]} ({subject}); superseded because {why}",
                    actor,
                    source,
                )
            try:
                ctl.launch(
                    spec,
                    actor=actor,
                    reason=f"{path} at {head[:12]}: {subject}",
                    rollout_id=rid,
                    source=source,
                    require_plan=True,
                )
            except PlanError as exc:  # a plan that cannot decide is refused like an invalid spec
                result.invalid.append({"path": path, "commit": head, "errors": str(exc)})
                continue
            result.launched.append({"rollout_id": rid, "path": path, "commit": head})
        return result

    @staticmethod
    def _abort(
        ctl: Controller,
        result: GitOpsResult,
        state: RolloutState,
        rollout_id: str | None,
        why: str,
        actor: str,
        source: dict[str, Any],
    ) -> None:
        assert rollout_id is not None
        try:
            ctl.command(
                rollout_id,
                "abort",
                actor=actor,
                reason=why,
                request_id=f"gitops:{source['commit']}:{source['path']}",
                inputs={"gitops": source},
            )
            result.aborted.append(
                {"rollout_id": rollout_id, "path": source["path"], "commit": source["commit"]}
            )
        except CommandError as exc:
            log.info("gitops: %s (%s) not aborted: %s", rollout_id, state.status, exc)

    @staticmethod
    def rollouts_by_path(ctl: Controller) -> dict[str, str]:
        """Spec path -> its newest rollout that is still active (launched by gitops)."""
        rows = ctl.store.list_rollouts(active_only=True)
        logs = ctl.store.events_many([r.rollout_id for r in rows])
        out: dict[str, tuple[Any, str]] = {}
        for r in rows:
            events = logs.get(r.rollout_id) or []
            src = (events[0].inputs.get("source") or {}) if events else {}
            path = src.get("path") if src.get("kind") == "gitops" else None
            if path and (path not in out or out[path][0] < r.created_at):
                out[path] = (r.created_at, r.rollout_id)
        return {p: rid for p, (_, rid) in out.items()}

    # ------------------------------------------------------------------ status write-back

    def write_status(self, ctl: Controller, *, author: str = "edgeplat <edgeplat@localhost>") -> str | None:
        """Commit and push the status file if it changed; returns the new commit or None."""
        if not self.status_file:
            return None
        self.fetch()
        _git(self.workdir, "checkout", "--quiet", "-B", self.branch, f"origin/{self.branch}")
        rows = ctl.store.list_rollouts()
        logs = ctl.store.events_many([r.rollout_id for r in rows])
        status: dict[str, Any] = {}
        for r in sorted(rows, key=lambda r: r.created_at):
            src = (logs.get(r.rollout_id) or [None])[0]
            src = src.inputs.get("source") or {} if src else {}
            if src.get("kind") == "gitops" and src.get("repo") == self.repo:
                status[src["path"]] = {
                    "rollout_id": r.rollout_id,
                    "status": r.status,
                    "phase": r.phase,
                    "commit": src.get("commit"),
                    "done": r.status in {str(s) for s in TERMINAL} or r.status == Status.FAILED,
                }
        text = json.dumps(status, indent=2, sort_keys=True) + "\n"
        if not self._commit(self.status_file, text, "rollout status [edgeplat]", author):
            return None
        _git(self.workdir, "push", "--quiet", "origin", f"HEAD:{self.branch}")
        return _git(self.workdir, "rev-parse", "HEAD").strip()

    def commit_file(
        self,
        path: str,
        text: str,
        message: str,
        *,
        author: str = "edgeplat <edgeplat@localhost>",
        attempts: int = 3,
    ) -> str | None:
        """Commit ``text`` as ``path`` (a JSON report, e.g. the drift summary) on the tracked branch and
        push it; returns the new commit, or None when the file already holds ``text``. Only ``.json``
        paths inside the repository and outside the spec directory: a report is never read as a spec.
        A push another writer beat (the status write-back) is redone on the new head."""
        rel = Path(path)
        if not path.endswith(".json") or rel.is_absolute() or ".." in rel.parts or self._is_spec(path):
            raise GitOpsError(
                f"report file {path!r} must be a .json path inside the repository, outside the spec "
                f"directory {self.spec_dir!r} (e.g. status/drift.json)"
            )
        for attempt in range(1, attempts + 1):
            self.fetch()
            _git(self.workdir, "checkout", "--quiet", "-B", self.branch, f"origin/{self.branch}")
            if not self._commit(path, text, message, author):
                return None
            try:
                _git(self.workdir, "push", "--quiet", "origin", f"HEAD:{self.branch}")
            except GitOpsError:
                if attempt == attempts:
                    raise
                log.info("push of %s lost a race (attempt %d), redoing it on the new head", path, attempt)
                continue
            return _git(self.workdir, "rev-parse", "HEAD").strip()
        return None  # unreachable: the last attempt returns or raises

    def _commit(self, path: str, text: str, message: str, author: str) -> bool:
        """Write ``text`` as ``path`` in the clone and commit it as ``author`` ("Name <email>");
        False, and nothing committed, when the file already holds ``text``."""
        target = self.workdir / path
        if target.exists() and target.read_text() == text:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        name, _, email = author.partition(" <")
        _git(self.workdir, "add", path)
        _git(
            self.workdir,
            "-c",
            f"user.name={name}",
            "-c",
            f"user.email={email.rstrip('>')}",
            "commit",
            "--quiet",
            "-m",
            message,
        )
        return True


def _updatable(state: RolloutState) -> bool:
    """A rollout whose spec may still change in place (not failed or rolling back)."""
    return state.status not in (Status.FAILED, Status.ROLLING_BACK) and state.status not in TERMINAL
