"""A GitOps repository under test: a bare origin and an operator's clone that commits and pushes."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout.strip()


class GitOpsRepo:
    """``origin`` (bare, branch main) and ``dev``, a clone whose commits are authored by ``author``."""

    def __init__(self, root: Path, *, name: str = "Dana", email: str = "dana@example.com") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.origin, self.dev = root / "origin.git", root / "dev"
        git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.origin))
        git(root, "clone", "--quiet", str(self.origin), str(self.dev))
        git(self.dev, "checkout", "--quiet", "-B", "main")
        self.author(name, email)
        self.write("README.md", "GitOps repository\n")
        self.commit("init")

    def author(self, name: str, email: str) -> None:
        git(self.dev, "config", "user.name", name)
        git(self.dev, "config", "user.email", email)

    def write(self, path: str, text: str) -> None:
        target = self.dev / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def remove(self, path: str) -> None:
        (self.dev / path).unlink()

    def commit(self, message: str) -> str:
        """Commit everything in the clone and push it; returns the commit."""
        git(self.dev, "add", "-A")
        git(self.dev, "commit", "--quiet", "--allow-empty", "-m", message)
        git(self.dev, "push", "--quiet", "origin", "HEAD:main")
        return git(self.dev, "rev-parse", "HEAD")


def origin_and_clone(root: Path) -> tuple[Path, Path]:
    """(bare origin, a clone of it on branch main with one commit) under ``root``."""
    repo = GitOpsRepo(root)
    return repo.origin, repo.dev
