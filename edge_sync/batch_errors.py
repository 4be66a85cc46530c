"""The errors of the batch format: one class per ``reason`` a batch is refused for.

The central ingest quarantines a refused batch under ``err.reason`` (machine-readable) and
keeps ``str(err)``, which names the object and the fix. A failure of a service the reader
asks is a :class:`ServiceError` instead, never a reason to quarantine. ``detail`` carries the key
service's own reason when unwrapping the data key failed. :func:`reasons` lists every
subclass's reason, so reports can show each one before it first occurs.
"""

from __future__ import annotations


class BatchError(Exception):
    """A batch cannot be trusted or read. ``reason`` is machine-readable; ``key`` names the object."""

    reason = "batch_error"

    def __init__(self, message: str, *, key: str | None = None, detail: str | None = None) -> None:
        self.key = key
        self.detail = detail  # e.g. the key service's own reason
        super().__init__(f"batch {key or '<unnamed>'}: {message}")


def reasons() -> tuple[str, ...]:
    """The ``reason`` of every subclass of :class:`BatchError` (read when called, so subclasses
    defined elsewhere count too), in definition order."""
    found: dict[str, None] = {}
    todo = list(BatchError.__subclasses__())
    while todo:
        cls = todo.pop(0)
        found[cls.reason] = None
        todo.extend(cls.__subclasses__())
    return tuple(found)


class TruncatedBatch(BatchError):
    """Shorter than the header, or the length disagrees with header + manifest + signature."""

    reason = "truncated"


class BadMagic(BatchError):
    """Not an edge-sync batch at all."""

    reason = "bad_magic"


class UnsupportedVersion(BatchError):
    """A format version this reader does not read (downgrades included)."""

    reason = "unsupported_version"


class OversizedManifest(BatchError):
    """The header announces a manifest above the limit; refused before parsing."""

    reason = "oversized_manifest"


class BadManifest(BatchError):
    """The manifest is not JSON, names no valid signer, or (signed) is not a valid manifest."""

    reason = "bad_manifest"


class UnknownDevice(BatchError):
    """No registered public key for the claimed device."""

    reason = "unknown_device"


class BadSignature(BatchError):
    """No registered key of the device verifies the signature."""

    reason = "bad_signature"


class PathMismatch(BatchError):
    """The manifest disagrees with the object key the batch was read from."""

    reason = "path_mismatch"


class UnknownSchema(BatchError):
    """The schema fingerprint is not the current schema of the named stream."""

    reason = "unknown_schema"


class CrossTenantKey(BatchError):
    """The data key belongs to another tenant (the key service says so)."""

    reason = "tenant_mismatch"


class DecryptionFailure(BatchError):
    """The data key cannot be unwrapped, or AES-GCM authentication fails."""

    reason = "decryption_failure"


class HashMismatch(BatchError):
    """The decrypted payload's SHA-256 differs from the manifest's."""

    reason = "hash_mismatch"


class CorruptPayload(BatchError):
    """The decrypted payload is not the Parquet layout the batch format writes."""

    reason = "corrupt_payload"


class BadRange(BatchError):
    """Seq range, row count, HLC range or evictions disagree with the rows."""

    reason = "bad_range"


class MalformedBatch(BatchError):
    """Reading the object failed in a way no named check describes; still the object's fault."""

    reason = "malformed"


class ServiceError(Exception):
    """A platform service the reader asked (key service, device registry) failed.

    Not a :class:`BatchError`: the object is not at fault, so it is never quarantined for
    this; the caller retries or fails its run.
    """
