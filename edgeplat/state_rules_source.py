"""Where the platform's conflict rules come from: the packaged file, an operator's file, or git.

The operator names a rules file (``EDGEPLAT_STATE_RULES``) or a path inside the GitOps
repository (``EDGEPLAT_STATE_RULES_GITOPS_PATH``); resolver files the rules name by path are
relative to it, so from git the rules file's directory is exported at the branch head (one
directory per commit: a commit's rules never change under a running merge). When the
repository cannot be reached the last fetched head is used, so a git outage does not stop the
ingest; it is logged.
"""

from __future__ import annotations

import logging
import subprocess
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from edge_sync.rules import RulesError, RuleSet, default_rules, load_rules
from edgeplat.rollouts.gitops import GitOpsError, GitOpsWatcher

log = logging.getLogger(__name__)


def operator_rules(path: str | Path | None) -> RuleSet:
    """The rules file at ``path`` (validated, its resolvers loaded), else the packaged rules."""
    return load_rules(path) if path else default_rules()


def gitops_rules(watcher: GitOpsWatcher, path: str, export_root: Path) -> RuleSet:
    """The rules file ``path`` at the head of the watcher's branch (the last fetched head if git fails)."""
    try:
        head = watcher.fetch()
    except GitOpsError as exc:
        if not (watcher.workdir / ".git").exists():
            raise RulesError(
                f"state rules in the GitOps repository cannot be read: {exc}; fix EDGEPLAT_GITOPS_REPO "
                "or its credentials"
            ) from None
        head = subprocess.run(
            ["git", "-C", str(watcher.workdir), "rev-parse", f"origin/{watcher.branch}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        log.warning("GitOps fetch failed, using the state rules of the last fetched commit %s: %s", head, exc)
    return rules_from_git(watcher.workdir, head, path, export_root)


def rules_from_git(clone: Path, commit: str, path: str, export_root: Path) -> RuleSet:
    """The rules file ``path`` of ``commit`` in the git clone ``clone`` (with the files beside it)."""
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.name:
        raise RulesError(f"state rules path {path!r} in the GitOps repository must be a relative file path")
    dest = export_root / commit
    if not (dest / rel).is_file():
        dest.mkdir(parents=True, exist_ok=True)
        tree = f"{commit}:{rel.parent}" if str(rel.parent) != "." else commit
        with tempfile.TemporaryFile() as tar:
            done = subprocess.run(["git", "-C", str(clone), "archive", "--format=tar", tree], stdout=tar)
            if done.returncode != 0:
                raise RulesError(
                    f"state rules directory {str(rel.parent)!r} is not in commit {commit[:12]} of the GitOps "
                    "repository: fix EDGEPLAT_STATE_RULES_GITOPS_PATH or commit the rules file"
                )
            tar.seek(0)
            with tarfile.open(fileobj=tar) as t:
                t.extractall(dest / rel.parent, filter="data")
    return load_rules(dest / rel)
