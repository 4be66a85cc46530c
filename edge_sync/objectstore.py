"""Object store: one small interface over an S3 API endpoint or a local folder.

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
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

MiB = 1024 * 1024
MAX_KEY_BYTES = 1024  # S3's limit
MAX_SEGMENT_BYTES = 255  # common filesystem name limit, so local and S3 accept the same keys
S3_MIN_PART = 5 * MiB  # S3 rejects smaller parts except the last
S3_MAX_PARTS = 10_000
LIST_PAGE_MAX = 1000  # S3's ListObjectsV2 page size
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


def _check_limit(limit: int) -> None:
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
    overwrite). A key cannot be both an object and a prefix of other keys here (a path is
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

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
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
        _check_limit(limit)
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


# --------------------------------------------------------------------------- S3 API


class S3ObjectStore(ObjectStore):
    """Objects in an S3 bucket (AWS or any S3 API endpoint such as MinIO or moto), via boto3.

    ``put_if_absent`` is a conditional write (``If-None-Match: *``) on PutObject, or on
    CompleteMultipartUpload for objects above ``multipart_threshold``: S3 decides atomically,
    so of concurrent writers exactly one wins. Transient failures (5xx, throttling, timeouts,
    dropped connections) are retried by botocore (``retry_mode``, ``max_attempts`` total
    attempts per request); what still fails raises ``StoreUnavailable``.

    One caveat of conditional writes under retries: if a write reached S3 but its response was
    lost, the retry sees the object and ``put_if_absent`` returns False although this call
    wrote it. Callers treat False as "the key holds an object", which for immutable,
    content-addressed batches is the same outcome.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        retry_mode: Literal["standard", "adaptive"] = "standard",
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        multipart_threshold: int = 8 * MiB,
        multipart_chunksize: int = 8 * MiB,
        addressing_style: Literal["auto", "path", "virtual"] = "auto",
        checksums: Literal["when_supported", "when_required"] = "when_supported",
        max_pool_connections: int = 10,
    ) -> None:
        from botocore.config import Config

        if not bucket or "/" in bucket:
            raise ValueError(f"S3 bucket name {bucket!r} is invalid: give just the bucket name")
        if retry_mode not in ("standard", "adaptive"):
            raise ValueError(f"retry_mode must be 'standard' or 'adaptive', got {retry_mode!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts counts the first try and must be >= 1, got {max_attempts}")
        if multipart_chunksize < S3_MIN_PART:
            raise ValueError(
                f"multipart_chunksize must be at least 5 MiB (S3's minimum part), got {multipart_chunksize}"
            )
        if multipart_threshold < 1:
            raise ValueError(f"multipart_threshold must be positive, got {multipart_threshold}")
        if addressing_style not in ("auto", "path", "virtual"):
            raise ValueError(f"addressing_style must be auto, path or virtual, got {addressing_style!r}")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.bucket = bucket
        self._base = f"{prefix}/" if prefix else ""
        self.max_attempts = max_attempts
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        config = Config(
            region_name=region,
            retries={"mode": retry_mode, "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": addressing_style},
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
            max_pool_connections=max_pool_connections,
        )
        self._client = _new_s3_client(
            endpoint_url=endpoint_url,
            config=config,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
        )
        self.endpoint = self._client.meta.endpoint_url
        self.url = f"s3://{bucket}/{self._base}"
        self._bucket_checked = threading.Event()

    # -- helpers

    def _full(self, key: str) -> str:
        return self._base + validate_key(key)

    def _error(self, exc: Exception, operation: str, key: str | None = None) -> Exception:
        """Translate a botocore error into this module's errors."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"s3://{self.bucket}/{self._base}{key or ''} at {self.endpoint}"
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NoSuchBucket":
                return BucketNotFound(self.bucket, self.endpoint)
            if code == "NoSuchKey" and key is not None:
                return ObjectNotFound(key, self.url)
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
                return ObjectStoreError(
                    f"S3 {operation} of {where} was refused ({code or status}): check the credentials "
                    "and the bucket policy"
                )
            if status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout"):
                return StoreUnavailable(
                    f"S3 {operation} of {where} kept failing after {self.max_attempts} attempts: {code} {status}"
                )
            return ObjectStoreError(f"S3 {operation} of {where} failed: {code} {exc}")
        if isinstance(exc, NoCredentialsError):
            return ObjectStoreError(
                f"no AWS credentials for {where}: pass access_key_id/secret_access_key or set the "
                "standard AWS environment variables or profile"
            )
        if isinstance(exc, BotoCoreError):
            return StoreUnavailable(
                f"S3 {operation} of {where} failed after {self.max_attempts} attempts: {exc}"
            )
        return exc

    def _call(self, operation: str, key: str | None, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, operation, key) from exc

    @staticmethod
    def _is_precondition_failed(exc: BaseException) -> bool:
        cause = exc.__cause__
        response = getattr(cause, "response", None) or {}
        return (
            response.get("Error", {}).get("Code") == "PreconditionFailed"
            or response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412
        )

    @staticmethod
    def _is_conditional_conflict(exc: BaseException) -> bool:
        response = getattr(exc.__cause__, "response", None) or {}
        return response.get("Error", {}).get("Code") == "ConditionalRequestConflict"

    # -- interface

    def put_if_absent(self, key: str, data: bytes) -> bool:
        full = self._full(key)
        if len(data) > self.multipart_threshold:
            # cheap check first so a device does not upload megabytes that would be refused
            try:
                present = self.head(key) is not None
            except StoreUnavailable:
                raise
            except ObjectStoreError:
                # a key scoped to its tenant prefix may get 403 for a missing key (AWS without
                # s3:ListBucket): the conditional completion below decides on its own
                present = False
            if present:
                return False
            return self._put_multipart(key, data, if_absent=True)
        for attempt in range(self.max_attempts):
            try:
                self._call("put_object", key, Key=full, Body=data, IfNoneMatch="*")
                return True
            except ObjectStoreError as exc:
                if self._is_precondition_failed(exc):
                    return False
                # S3 answers 409 while another conditional write of the key is in flight:
                # retry, and the next attempt normally sees the winner's object (412)
                if self._is_conditional_conflict(exc) and attempt + 1 < self.max_attempts:
                    time.sleep(0.05 * 2**attempt)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def put(self, key: str, data: bytes) -> None:
        full = self._full(key)
        if len(data) > self.multipart_threshold:
            self._put_multipart(key, data, if_absent=False)
        else:
            self._call("put_object", key, Key=full, Body=data)

    def _put_multipart(self, key: str, data: bytes, *, if_absent: bool) -> bool:
        full = self._full(key)
        chunk = max(self.multipart_chunksize, -(-len(data) // S3_MAX_PARTS))
        upload_id = self._call("create_multipart_upload", key, Key=full)["UploadId"]
        try:
            parts = []
            for number, offset in enumerate(range(0, len(data), chunk), start=1):
                response = self._call(
                    "upload_part",
                    key,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data[offset : offset + chunk],
                )
                part = {"ETag": response["ETag"], "PartNumber": number}
                for field in (
                    "ChecksumCRC32",
                    "ChecksumCRC32C",
                    "ChecksumCRC64NVME",
                    "ChecksumSHA1",
                    "ChecksumSHA256",
                ):
                    if field in response:
                        part[field] = response[field]
                parts.append(part)
            conditional = {"IfNoneMatch": "*"} if if_absent else {}
            self._call(
                "complete_multipart_upload",
                key,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **conditional,
            )
            return True
        except ObjectStoreError as exc:
            self._abort(full, upload_id)
            if if_absent and self._is_precondition_failed(exc):
                return False
            raise
        except BaseException:
            self._abort(full, upload_id)
            raise

    def _abort(self, full: str, upload_id: str) -> None:
        # best effort: a leftover upload only costs storage until a bucket lifecycle rule clears it
        with contextlib.suppress(Exception):
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)

    def get(self, key: str) -> bytes:
        from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

        full = self._full(key)
        # botocore retries the request but not a body read that stalls or breaks midway
        for attempt in range(self.max_attempts):
            response = self._call("get_object", key, Key=full)
            try:
                return response["Body"].read()
            except (ReadTimeoutError, ResponseStreamingError, IncompleteReadError) as exc:
                if attempt + 1 == self.max_attempts:
                    raise self._error(exc, "get_object", key) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        try:
            response = self._call("head_object", key, Key=full)
        except ObjectStoreError as exc:
            status = getattr(exc.__cause__, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status != 404:
                raise
            # HEAD has no error body, so a missing bucket looks like a missing key: check once
            self._check_bucket()
            return None
        return ObjectInfo(
            key,
            response["ContentLength"],
            response["ETag"].strip('"'),
            response["LastModified"].astimezone(UTC),
        )

    def _check_bucket(self) -> None:
        if self._bucket_checked.is_set():
            return
        try:
            self._call("head_bucket", None)
        except ObjectStoreError as exc:
            status = getattr(exc.__cause__, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                raise BucketNotFound(self.bucket, self.endpoint) from exc
            # 403: the bucket exists (S3 says 404 for a missing one), these credentials just may
            # not list it, as a tenant-scoped device key may not
            if status != 403:
                raise
        self._bucket_checked.set()

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ListPage:
        validate_prefix(prefix)
        _check_limit(limit)
        request: dict[str, Any] = {"Prefix": self._base + prefix}
        if after is not None:
            request["StartAfter"] = self._base + after
        objects: list[ObjectInfo] = []
        truncated = False
        while len(objects) < limit:
            request["MaxKeys"] = min(LIST_PAGE_MAX, limit - len(objects))
            response = self._call("list_objects_v2", None, **request)
            for item in response.get("Contents", []):
                objects.append(
                    ObjectInfo(
                        item["Key"][len(self._base) :],
                        item["Size"],
                        item["ETag"].strip('"'),
                        item["LastModified"].astimezone(UTC),
                    )
                )
            truncated = bool(response.get("IsTruncated"))
            if not truncated:
                break
            request["ContinuationToken"] = response["NextContinuationToken"]
        return ListPage(objects, objects[-1].key if truncated and objects else None)

    def delete(self, key: str) -> None:
        self._call("delete_object", key, Key=self._full(key))

    def close(self) -> None:
        self._client.close()


_session_lock = threading.Lock()
_session: Any = None


def _new_s3_client(**kwargs: Any) -> Any:
    """An S3 client from one shared boto3 session: a fresh session reloads the service
    models (~0.2 s); clients are thread-safe, creating them from one session is not."""
    global _session
    import boto3

    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client("s3", **kwargs)


# --------------------------------------------------------------------------- factory


def from_url(url: str | Path, **options: Any) -> ObjectStore:
    """An object store for ``s3://bucket/prefix`` (options go to ``S3ObjectStore``) or for
    ``file:///path`` / a plain path (options go to ``LocalObjectStore``)."""
    if isinstance(url, Path):
        return LocalObjectStore(url, **options)
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"object store URL {url!r} has no bucket: write s3://bucket/optional/prefix")
        return S3ObjectStore(parsed.netloc, parsed.path.strip("/"), **options)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"object store URL {url!r} names a host; write file:///absolute/path")
        return LocalObjectStore(Path(unquote(parsed.path)), **options)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return LocalObjectStore(Path(url), **options)
    raise ValueError(
        f"object store URL {url!r} has unsupported scheme {parsed.scheme!r}: use s3://bucket/prefix, "
        "file:///path or a plain path"
    )
