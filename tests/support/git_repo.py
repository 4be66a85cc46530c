"""Real git repositories for tests: a bare origin and a developer's clone of it on ``main``."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def origin_and_clone(root: Path) -> tuple[Path, Path]:
    """(bare origin, a clone of it on branch main with one commit) under ``root``."""
    origin, dev = root / "origin.git", root / "dev"
    git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
    git(root, "clone", "--quiet", str(origin), str(dev))
    git(dev, "checkout", "--quiet", "-B", "main")
    git(dev, "config", "user.email", "dana@example.com")
    git(dev, "config", "user.name", "Dana")
    (dev / "README.md").write_text("fleet\n")
    git(dev, "add", "-A")
    git(dev, "commit", "--quiet", "-m", "init")
    git(dev, "push", "--quiet", "origin", "HEAD:main")
    return origin, dev
