"""The object store on an S3 API endpoint (AWS, MinIO, moto), through boto3.

Kept apart from the interface and the local folder store in ``edge_sync.objectstore``;
``edge_sync.objectstore_url.from_url`` picks it for ``s3://bucket/prefix`` URLs. botocore is
imported where it is first used, so a device that spools to a folder never loads it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC
from typing import Any, Literal

from edge_sync.objectstore import (
    BucketNotFound,
    ListPage,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    StoreUnavailable,
    check_limit,
    validate_key,
    validate_prefix,
)

MiB = 1024 * 1024
S3_MIN_PART = 5 * MiB  # S3 rejects smaller parts except the last
S3_MAX_PARTS = 10_000
LIST_PAGE_MAX = 1000  # S3's ListObjectsV2 page size


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
        credentials: Any = None,
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
        if credentials is not None and access_key_id:
            raise ValueError("give either credentials (refreshable) or access_key_id/secret_access_key")
        # credentials: a botocore Credentials object (e.g. edge_sync.iot_credentials' refreshable
        # ones); the client asks it for current keys before signing each request
        self._client = _new_s3_client(
            credentials,
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
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            CredentialRetrievalError,
            NoCredentialsError,
        )

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
        if isinstance(exc, CredentialRetrievalError):
            # temporary credentials could not be refreshed (provider down or refusing): try later
            return StoreUnavailable(f"S3 {operation} of {where}: no current credentials: {exc}")
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

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        response = self._call(
            "get_object", key, Key=self._full(key), Range=f"bytes={start}-{start + length - 1}"
        )
        return response["Body"].read()

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
        check_limit(limit)
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
_loader: Any = None


def _new_s3_client(credentials: Any = None, **kwargs: Any) -> Any:
    """An S3 client from one shared boto3 session: a fresh session reloads the service
    models, which is slow; clients are thread-safe, creating them from one session is not.

    With ``credentials`` (a botocore Credentials object) the client comes from a session of
    its own whose credential chain is just those credentials; such sessions share one loader."""
    global _session, _loader
    import boto3

    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        if credentials is None:
            return _session.client("s3", **kwargs)
        import botocore.loaders
        import botocore.session

        if _loader is None:
            _loader = botocore.loaders.create_loader()
        core = botocore.session.Session()
        core.register_component("data_loader", _loader)
        core.register_component("credential_provider", _Given(credentials))
        return boto3.session.Session(botocore_session=core).client("s3", **kwargs)


class _Given:
    """A credential resolver that answers with the credentials it was given."""

    def __init__(self, credentials: Any) -> None:
        self.credentials = credentials

    def load_credentials(self) -> Any:
        return self.credentials
