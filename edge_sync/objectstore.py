"""Object store: one small interface over an S3 API endpoint or a local folder.

This module holds the interface, its errors, key validation and the local folder store (the
embedded default and the device's spool); the S3 store is ``edge_sync.objectstore_s3`` and
``edge_sync.objectstore_url.from_url`` picks one from a URL.

The device uploader writes batches with ``put_if_absent`` (a batch key is written once and
never overwritten, so a retried or duplicated upload is harmless), the central side lists
new keys after a cursor and reads them, and desired-state documents are replaced with
``put``. ``from_url`` picks the backend: ``s3://bucket/prefix`` or ``file:///path`` / a
plain path. Keys are ``/``-separated and validated the same way on both backends, so a key
that works locally works on S3.

Listing is lexicographic (the order S3 uses) and strictly after a cursor. A key written
later that sorts before a consumer's cursor is not seen by that consumer's next page: that
is expected, and the central reconciliation finds such late keys.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge_sync.objectstore_journal import append_record

MAX_KEY_BYTES = 1024  # S3's limit
MAX_SEGMENT_BYTES = 255  # common filesystem name limit, so local and S3 accept the same keys
# Local temp files live beside their target (same filesystem, so link/replace are atomic);
# keys may not use this prefix, so a temp file is never mistaken for an object.
TMP_PREFIX = ".objstore-tmp-"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # one regex search, not a Python loop over every character


class ObjectStoreError(RuntimeError):
    """An object store operation failed; the message names the store and the fix."""


class ObjectNotFound(ObjectStoreError):
    """``get`` of a key that has no object."""

    def __init__(self, key: str, where: str = "") -> None:
        self.key = key
        super().__init__(f"no object at key {key!r}" + (f" in {where}" if where else ""))


class BucketNotFound(ObjectStoreError):
    """The configured S3 bucket does not exist at the endpoint."""

    def __init__(self, bucket: str, endpoint: str) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        super().__init__(
            f"S3 bucket {bucket!r} does not exist at endpoint {endpoint}: create it, or fix the "
            "bucket name / endpoint_url"
        )


class StoreUnavailable(ObjectStoreError):
    """The store could not be reached, or kept failing, after all retries (e.g. offline)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object. ``etag`` is opaque and only comparable within one backend."""

    key: str
    size: int
    etag: str
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class ListPage:
    """A page of ``list``; pass ``next_after`` back as ``after`` for the next page (None: done)."""

    objects: list[ObjectInfo]
    next_after: str | None


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise ValueError saying why."""
    if not isinstance(key, str):
        raise TypeError(f"object key must be a str, got {type(key).__name__}")
    problem = _key_problem(key, allow_partial=False)
    if problem:
        raise ValueError(f"invalid object key {key!r}: {problem}")
    return key


def validate_prefix(prefix: str) -> str:
    """Like ``validate_key`` for a list prefix: may be empty, end in '/', or end mid-segment."""
    if not isinstance(prefix, str):
        raise TypeError(f"list prefix must be a str, got {type(prefix).__name__}")
    problem = _key_problem(prefix, allow_partial=True) if prefix else None
    if problem:
        raise ValueError(f"invalid list prefix {prefix!r}: {problem}")
    return prefix


def _key_problem(key: str, *, allow_partial: bool) -> str | None:
    if not key:
        return "it is empty"
    if key.startswith("/"):
        return "it starts with '/'; keys are relative, like 'tenant=t1/device=d1/x.batch'"
    if "\\" in key:
        return "it contains a backslash; use '/' to separate segments"
    if _CONTROL.search(key):
        return "it contains a control character"
    if len(key.encode()) > MAX_KEY_BYTES:
        return f"it is longer than {MAX_KEY_BYTES} bytes (UTF-8)"
    segments = key.split("/")
    if allow_partial:
        # the last piece of a prefix is a partial name (or '' after a trailing '/')
        segments = segments[:-1]
    for segment in segments:
        if not segment:
            return "it has an empty segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"it has a {segment!r} segment"
        if segment.startswith(TMP_PREFIX):
            return f"segments starting with {TMP_PREFIX!r} are reserved for temporary files"
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            return f"segment {segment[:20]!r}... is longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def check_limit(limit: int) -> None:
    """Both stores take the same ``list`` limits."""
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"list limit must be a positive integer, got {limit!r}")


class ObjectStore(ABC):
    """The object store interface shared by the device uploader and the central side."""

    url: str  # where the store is, for messages and logs (no credentials)

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` unless an object is there: True if written, False if not.

        Never overwrites. Atomic: of concurrent writers of one key, exactly one gets True.
        """

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key``, replacing any object there (readers see old or new, whole)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; raises ``ObjectNotFound`` if there is none."""

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes of the object from offset ``start`` (resumable downloads).

        This fallback reads the whole object; the stores override it with a ranged read.
        """
        return self.get(key)[start : start + length]

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """The object's metadata, or None if there is no object at ``key``."""

    @abstractmethod
    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ListPage:
        """Up to ``limit`` objects whose keys start with ``prefix`` and sort strictly after
        ``after``, in lexicographic order (of code points, which is S3's UTF-8 byte order)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object at ``key``; deleting a missing key is not an error."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for stores holding nothing
        """Release network connections; the store must not be used afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url})"


# --------------------------------------------------------------------------- local folder


class LocalObjectStore(ObjectStore):
    """Objects as files under ``root``: the embedded default and the device's offline spool.

    Writes go to a temp file in the target's directory, are fsynced, then published with
    ``os.link`` (fails if the name exists: atomic if-absent) or ``os.replace`` (atomic
    overwrite), then recorded in the arrival journal if the root holds one
    (``edge_sync.objectstore_journal``). A key cannot be both an object and a prefix of other keys here (a path is
    either a file or a directory); that conflict raises ObjectStoreError.
    """

    def __init__(self, root: Path | str, *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _write_temp(self, path: Path, data: bytes) -> str:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise self._conflict(path) from None
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return tmp

    def _conflict(self, path: Path) -> ObjectStoreError:
        key = path.relative_to(self.root).as_posix()
        return ObjectStoreError(
            f"key {key!r} conflicts with an existing object or prefix in {self.url}: a local store "
            "cannot hold both 'a/b' and 'a/b/c'; choose keys where no key is a prefix folder of another"
        )

    def _sync_dir(self, directory: Path) -> None:
        # makes the new directory entry durable across power loss, not just the file bytes
        if not self.fsync:
            return
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            if path.is_dir():
                raise self._conflict(path) from None
            return False
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise ObjectStoreError(
                    f"the filesystem under {self.url} does not support hard links, which the local "
                    "store needs for atomic put_if_absent; put the store on a POSIX filesystem (ext4, xfs)"
                ) from exc
            raise
        finally:
            _unlink_quietly(tmp)
        self._sync_dir(path.parent)
        append_record(self.root, key, len(data), fsync=self.fsync)
        return True

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        except (IsADirectoryError, NotADirectoryError):
            _unlink_quietly(tmp)
            raise self._conflict(path) from None
        except BaseException:
            _unlink_quietly(tmp)
            raise
        self._sync_dir(path.parent)
        append_record(self.root, key, len(data), fsync=self.fsync)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key, self.url) from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                f.seek(start)
                return f.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key, self.url) from None

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(key), follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return _local_info(key, st)

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ListPage:
        validate_prefix(prefix)
        check_limit(limit)
        # start in the deepest folder the prefix names completely, not at the root
        whole = prefix.split("/")[:-1]
        start = self.root.joinpath(*whole)
        start_key = "".join(f"{s}/" for s in whole)
        objects: list[ObjectInfo] = []
        more = False
        for key, st in self._walk(start, start_key, prefix, after):
            if len(objects) == limit:
                more = True
                break
            objects.append(_local_info(key, st))
        return ListPage(objects, objects[-1].key if more else None)

    def _walk(
        self, directory: Path, dir_key: str, prefix: str, after: str | None
    ) -> Iterator[tuple[str, os.stat_result]]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        # A folder sorts as 'name/': every key inside it starts with that, so visiting entries
        # in this order yields keys in full-key lexicographic order ('a-b' < 'a/x' < 'a0').
        items = []
        for entry in entries:
            if entry.name.startswith(TMP_PREFIX):
                continue
            if entry.is_dir(follow_symlinks=False):
                items.append((f"{dir_key}{entry.name}/", entry, True))
            elif entry.is_file(follow_symlinks=False):
                items.append((f"{dir_key}{entry.name}", entry, False))
        items.sort(key=lambda item: item[0])
        for key, entry, is_dir in items:
            if is_dir:
                if not (key.startswith(prefix) or prefix.startswith(key)):
                    continue
                # skip a folder whose every key sorts at or before the cursor
                if after is not None and after > key and not after.startswith(key):
                    continue
                yield from self._walk(Path(entry.path), key, prefix, after)
            elif key.startswith(prefix) and (after is None or key > after):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # deleted while listing
                    continue
                yield key, st

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            os.unlink(self._path(key))


def _local_info(key: str, st: os.stat_result) -> ObjectInfo:
    # every write makes a new inode (link or replace of a fresh temp file), so inode+mtime+size
    # changes whenever the content does, without hashing the file
    etag = f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"
    return ObjectInfo(key, st.st_size, etag, datetime.fromtimestamp(st.st_mtime, tz=UTC))


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
