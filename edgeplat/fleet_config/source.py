"""Where a ``fleet/`` tree is read from: a commit of the GitOps clone, or a working directory.

The clone is the rollouts' :class:`~edgeplat.rollouts.gitops.GitOpsWatcher` (same repository,
branch and git plumbing); a commit's files are read with ``git ls-tree`` / ``git show``, never
from a checkout, so a tree is exactly what was committed. The working directory form is the
operator's preview (``edgeplat fleet-config render``) before pushing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeplat.fleet_config.layers import ROOT
from edgeplat.rollouts.gitops import GitOpsError, GitOpsWatcher, _git

_FORMAT = "%H%x1f%an%x1f%ae%x1f%cI%x1f%s"


@dataclass(frozen=True)
class Commit:
    """A commit of the GitOps repository: its sha, author and when it was committed."""

    sha: str
    author_name: str
    author_email: str
    committed_at: str  # ISO 8601 with offset, as git prints it
    subject: str

    @property
    def author(self) -> str:
        return f"{self.author_name} <{self.author_email}>"

    @property
    def origin(self) -> str:
        return f"gitops:{self.sha}"


def commit_info(watcher: GitOpsWatcher, ref: str) -> Commit:
    sha, name, email, at, subject = (
        _git(watcher.workdir, "log", "-1", f"--format={_FORMAT}", ref).rstrip("\n").split("\x1f", 4)
    )
    return Commit(sha, name, email, at, subject)


def fleet_paths(watcher: GitOpsWatcher, commit: str) -> list[str]:
    """Every file under ``fleet/`` at ``commit``."""
    return _git(watcher.workdir, "ls-tree", "-r", "--name-only", commit, "--", ROOT).splitlines()


def tree_at(watcher: GitOpsWatcher, commit: str) -> dict[str, str]:
    """Path -> text of every file under ``fleet/`` at ``commit``."""
    return {p: watcher.show(commit, p) for p in fleet_paths(watcher, commit)}


def fleet_changed(watcher: GitOpsWatcher, since: str | None, head: str) -> bool:
    """Whether ``since..head`` touched ``fleet/`` (always true without ``since``, or when ``since``
    is gone from the branch after a force push: the run then compares with what it recorded)."""
    if since is None:
        return True
    try:
        return bool(_git(watcher.workdir, "diff", "--name-only", since, head, "--", ROOT).strip())
    except GitOpsError:
        return True


def tree_on_disk(repo: Path | str) -> dict[str, str]:
    """Path -> text of every file under ``<repo>/fleet`` as it is on disk (uncommitted edits included)."""
    root = Path(repo)
    base = root / ROOT
    if not base.is_dir():
        raise FileNotFoundError(
            f"{base} does not exist: a fleet/ tree lives at the top of the GitOps repository"
        )
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(base.rglob("*"))
        if p.is_file() and ".git" not in p.parts
    }


def is_ancestor(watcher: GitOpsWatcher, older: str, newer: str) -> bool:
    """Whether commit ``older`` is an ancestor of ``newer`` (``git merge-base --is-ancestor``)."""
    try:
        _git(watcher.workdir, "merge-base", "--is-ancestor", older, newer)
    except GitOpsError:
        return False
    return True
