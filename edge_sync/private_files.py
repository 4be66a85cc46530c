"""Private files and folders: keys and credentials that only their owner may read.

Like ssh with its private keys, the device and the platform refuse to use a credential
file (AppRole role id and secret id, cache key, keyring, signing key) that group or others
can read: anyone else on the host could have copied it, and a silent success would hide
that. Folders created for such files are mode 0700, every missing level of them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class InsecureFileError(PermissionError):
    """A credential file is readable by group or others; the message names it and the fix."""


def private_dir(path: str | os.PathLike[str], *, tighten: bool = False) -> Path:
    """Create ``path`` and its missing parents with mode 0700; return it.

    ``tighten`` also removes group and other access from an existing ``path`` owned by this
    user: for folders that hold nothing but private files (a keyring, a lakehouse's data).
    """
    p = Path(path)
    missing = []
    for level in (p, *p.parents):
        if level.exists():
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            level.mkdir(mode=0o700)
        except FileExistsError:
            continue  # created meanwhile by another process
        os.chmod(level, 0o700)  # mkdir's mode is filtered by the umask
    if tighten and not missing:
        st = p.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(p, stat.S_IMODE(st.st_mode) & 0o700)
    return p


def check_private(path: str | os.PathLike[str], what: str, *, fd: int | None = None) -> None:
    """Raise :class:`InsecureFileError` when ``path`` (or the open ``fd``) is accessible by group or others."""
    mode = stat.S_IMODE((os.fstat(fd) if fd is not None else os.stat(path)).st_mode)
    if mode & 0o077:
        raise InsecureFileError(
            f"{what} {path} is accessible by group or others (mode {mode:04o}); a credential file must be "
            f"private to its owner: run `chmod 600 {path}`"
        )


def read_private_bytes(path: str | os.PathLike[str], what: str) -> bytes:
    """The contents of a credential file, refused when others could have read it."""
    with open(path, "rb") as f:
        check_private(path, what, fd=f.fileno())
        return f.read()
