"""The installer's journal: one small JSON file replaced atomically at every step.

Written to a temp file in the same folder, fsynced, renamed over the journal and the folder
fsynced: after a crash or power loss the journal is the old one or the new one, never a mix.
The installer writes its intent before each step that changes the disk, so an agent killed
at any point reads back what it was doing and finishes or undoes it (see
``edge_sync.slot_installer``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edge_sync.private_files import private_dir

FORMAT = 1


def empty() -> dict[str, Any]:
    """A journal of a device that never installed anything."""
    return {"format": FORMAT, "committed": None, "pending": None, "reverted": {}}


def read(path: Path) -> dict[str, Any]:
    """The journal at ``path``, or an empty one when there is none yet."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return empty()
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(
            f"install journal {path} is not a format-{FORMAT} journal; it was written by another agent "
            "version: move it aside and let the agent start a new one"
        )
    return {**empty(), **doc}


def write(path: Path, journal: dict[str, Any]) -> None:
    """Replace the journal atomically and durably."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(journal, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    """Make renames and new entries in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
