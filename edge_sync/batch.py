# Over 500 lines on purpose: the writer and the reader of one byte format read best side by side.
"""Batch format v2: the one reader and writer of uploaded batches, for device and central code.

A batch is one device's rows of one stream over a seq range, stored at a deterministic
object key ``tenant=<T>/device=<D>/stream=<S>/<first:020d>-<last:020d>.batch``
(:mod:`edge_sync.batch_keys`)::

    b"EDGB" | version (1 byte) | manifest length (u32 BE) | manifest | ciphertext | signature (64)

* manifest: canonical JSON of :class:`~edge_sync.batch_manifest.Manifest` (tenant, device,
  stream, schema fingerprint, seq and HLC ranges, evictions, wrapped data key, nonce,
  plaintext SHA-256, signer).
  It is readable without any key, so the ingest can route and check a batch before
  decrypting, but everything in it is covered by the signature.
* ciphertext: AES-256-GCM of the compact Parquet payload (:mod:`edge_sync.batch_encoding`)
  under a fresh data key from the :class:`~edge_sync.keys.KeyService`; the associated data
  is the header plus the manifest bytes, so no manifest field can be swapped.
* signature: Ed25519 by the device identity over everything before it.

Versions: the writer writes 2; the reader reads 1 and 2, which differ only in how the
payload is compressed (v1: zstd inside each Parquet page; v2: one zstd frame around the
whole Parquet file, see batch_encoding), so batches an older agent queued before its upgrade
still ingest. Crypto and checks are the same for both, and the version byte is covered by
the signature and the AEAD, so it cannot be changed in transit. Any other version is refused.

:func:`read_batch` checks in this order and raises a :class:`BatchError` whose ``reason``
says what failed: ``truncated`` (shorter than the header), ``bad_magic``,
``unsupported_version`` (also a downgraded version byte), ``oversized_manifest`` (before
any JSON parsing), ``bad_manifest`` (not JSON / no signer), ``truncated`` (total length
differs from header + manifest ``payload_bytes`` + signature), ``unknown_device``,
``bad_signature``, ``bad_manifest`` (signed but invalid), ``path_mismatch``,
``unknown_schema``, ``tenant_mismatch``, ``decryption_failure``, ``hash_mismatch``,
``corrupt_payload``, ``bad_range``. Nothing from the manifest is trusted before the
signature verifies, except the signer's ids and the length used to find the signature.
Any other failure while reading (a parser's own error, an Arrow error, memory) is the
object's fault too: ``malformed`` while opening, ``corrupt_payload`` while decoding. Only a
failure of the key service or the device registry raises :class:`ServiceError`, which is
never a reason to quarantine.
The central ingest runs the same checks in two steps: :func:`open_batch` for each object
(everything up to the payload's hash), then :func:`decode_batches` for many opened batches
of one stream at once (payload and ranges): one pass over their columns, not one per batch.

Size: the payload encoding makes a batch several times smaller than zstd JSON lines or default
Parquet; see batch_encoding for the choices, docs/decisions.md for the evidence and
bench/bench_batch_size.py for the current figures.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from edge_sync.batch_encoding import (
    PayloadDecodeError,
    RowCountMismatch,
    decode_table,
    decode_tables,
    dictionary_schema,
    encode_table,
)
from edge_sync.batch_errors import (
    BadMagic,
    BadManifest,
    BadRange,
    BadSignature,
    BatchError,
    CorruptPayload,
    CrossTenantKey,
    DecryptionFailure,
    HashMismatch,
    MalformedBatch,
    OversizedManifest,
    PathMismatch,
    ServiceError,
    TruncatedBatch,
    UnknownDevice,
    UnknownSchema,
    UnsupportedVersion,
)
from edge_sync.batch_keys import MAX_SEQ, ObjectKey, parse_object_key
from edge_sync.batch_manifest import TAG_BYTES, Eviction, Manifest
from edge_sync.identity import SIGNATURE_BYTES, DeviceIdentity, verify_signature
from edge_sync.ids import is_valid_id, validate_id
from edge_sync.json_bounded import TooDeep
from edge_sync.json_bounded import loads as bounded_loads
from edge_sync.keys import KeyService, KeyServiceError
from edge_sync.streams import STREAMS, StreamSpec, get_stream

MAGIC = b"EDGB"
FORMAT_VERSION = 2  # written
READ_VERSIONS = (1, 2)  # read (module docstring)
MAX_MANIFEST_BYTES = 64 * 1024
_HEADER = struct.Struct(">4sBI")  # magic, version, manifest length
_NONCE_BYTES = 12


# ----------------------------------------------------------------------------- schema fingerprints
# ``StreamSpec.fingerprint`` rebuilds the schema and hashes it on every access, and finding the
# spec of a fingerprint would do that for every stream on every batch read. Cached per spec object
# (the entry holds the spec, so a replaced spec is hashed afresh, never served a stale value).
_FINGERPRINTS: dict[int, tuple[StreamSpec, tuple[str, ...]]] = {}


def _fingerprint(spec: StreamSpec) -> str:
    return _fingerprints(spec)[0]


def _fingerprints(spec: StreamSpec) -> tuple[str, ...]:
    """The spec's fingerprint, then its legacy one (batches of agents from before ``added``) if any."""
    hit = _FINGERPRINTS.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    fingerprints = (spec.fingerprint, *filter(None, [spec.legacy_fingerprint]))
    _FINGERPRINTS[id(spec)] = (spec, fingerprints)  # a benign race between decode threads: same value
    return fingerprints


def _stream_for_fingerprint(fingerprint: str) -> StreamSpec | None:
    """``streams.stream_for_fingerprint`` over the cached fingerprints."""
    for spec in STREAMS.values():
        if fingerprint in _fingerprints(spec):
            return spec
    return None


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class EncodedBatch:
    """What the uploader puts into the object store: ``data`` at ``key``."""

    key: str
    data: bytes
    manifest: Manifest


@dataclass(frozen=True)
class DecodedBatch:
    """A verified, decrypted batch: its manifest and the rows (``stream`` schema, seq order)."""

    manifest: Manifest
    table: pa.Table


# ----------------------------------------------------------------------------- writer
def _conform(table: pa.Table, spec: StreamSpec) -> pa.Table:
    """``table`` with the stream's column order and exact schema, or ValueError naming the problem."""
    names = set(table.column_names)
    expected = spec.schema
    missing = [n for n in expected.names if n not in names]
    extra = [n for n in table.column_names if n not in expected.names]
    if missing or extra or len(table.column_names) != len(expected):
        raise ValueError(
            f"table for stream {spec.name!r} must have exactly the columns {expected.names}; "
            f"missing {missing}, unexpected {extra}"
        )
    table = table.select(expected.names)
    for field in expected:
        got = table.schema.field(field.name).type
        if got != field.type:
            raise ValueError(
                f"column {field.name!r} of stream {spec.name!r} is {got}, expected {field.type}; cast it first"
            )
        if not field.nullable and table.column(field.name).null_count:
            raise ValueError(f"envelope column {field.name!r} has nulls; every row needs a {field.name}")
    return pa.Table.from_arrays([c.combine_chunks() for c in table.columns], schema=expected)


def _check_constant(table: pa.Table, column: str, value: str) -> None:
    if table.num_rows and not pc.all(pc.equal(table.column(column), value)).as_py():
        others = sorted(set(pc.unique(table.column(column)).to_pylist()) - {value})[:3]
        raise ValueError(
            f"all rows of a batch must have {column} = {value!r}; found {others}: split by {column}"
        )


def _evictions_overlapping(seq: np.ndarray, evictions: Sequence[Eviction]) -> Eviction | None:
    for e in evictions:
        lo = np.searchsorted(seq, e.first_seq, side="left")
        if lo < seq.size and seq[lo] <= e.last_seq:
            return e
    return None


def write_batch(
    table: pa.Table,
    *,
    tenant_id: str,
    device_id: str,
    stream: str,
    evictions: Sequence[dict | Eviction] = (),
    key_service: KeyService,
    identity: DeviceIdentity,
    created_ms: int | None = None,
) -> EncodedBatch:
    """Encode, encrypt and sign one device's rows of one stream (seqs strictly ascending).

    ``evictions`` are dicts ``{first_seq, last_seq, count, reason}`` describing rows the
    device evicted; a batch may carry only evictions (an empty table). ``ValueError`` on
    bad input, naming the problem.
    """
    validate_id("tenant", tenant_id)
    validate_id("device", device_id)
    spec = get_stream(validate_id("stream", stream))
    if (identity.tenant_id, identity.device_id) != (tenant_id, device_id):
        raise ValueError(
            f"identity is for {identity.tenant_id}/{identity.device_id}, not {tenant_id}/{device_id}: "
            "sign with the device's own identity"
        )
    table = _conform(table, spec)
    for column, value in (("tenant_id", tenant_id), ("device_id", device_id), ("stream", stream)):
        _check_constant(table, column, value)
    ev = tuple(e if isinstance(e, Eviction) else Eviction.model_validate(e) for e in evictions)
    seq = table.column("seq").to_numpy()
    if seq.size and (seq[0] < 0 or seq[-1] > MAX_SEQ):
        raise ValueError(f"seqs must be between 0 and {MAX_SEQ}; got {seq[0]}..{seq[-1]}")
    if seq.size > 1 and not np.all(np.diff(seq) > 0):
        bad = int(np.argmax(np.diff(seq) <= 0))
        raise ValueError(
            f"seqs must be strictly ascending; row {bad + 1} has seq {seq[bad + 1]} after {seq[bad]}"
        )
    if not seq.size and not ev:
        raise ValueError("nothing to write: the table is empty and there are no evictions")
    clash = _evictions_overlapping(seq, ev)
    if clash is not None:
        raise ValueError(f"eviction {clash.first_seq}..{clash.last_seq} overlaps rows in this batch")
    bounds = [int(seq[0]), int(seq[-1])] if seq.size else []
    bounds += [s for e in ev for s in (e.first_seq, e.last_seq)]
    hlc = table.column("hlc")

    payload = encode_table(table, spec, device_id)
    data_key = key_service.generate_data_key(tenant_id)
    if len(data_key.plaintext) != 32:
        raise ValueError(f"key service returned a {len(data_key.plaintext)}-byte data key; AES-256 needs 32")
    nonce = secrets.token_bytes(_NONCE_BYTES)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        tenant_id=tenant_id,
        device_id=device_id,
        stream=stream,
        schema_fingerprint=_fingerprint(spec),
        first_seq=min(bounds),
        last_seq=max(bounds),
        row_count=table.num_rows,
        hlc_min=pc.min(hlc).as_py() if seq.size else None,
        hlc_max=pc.max(hlc).as_py() if seq.size else None,
        evictions=ev,
        key_id=data_key.key_id,
        wrapped_key=base64.b64encode(data_key.wrapped).decode("ascii"),
        nonce=base64.b64encode(nonce).decode("ascii"),
        payload_bytes=len(payload) + TAG_BYTES,
        plaintext_sha256=hashlib.sha256(payload).hexdigest(),
        signer_key_id=identity.key_id,
        created_ms=time.time_ns() // 1_000_000 if created_ms is None else created_ms,
    )
    manifest_bytes = manifest.canonical_bytes()
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise ValueError(
            f"manifest is {len(manifest_bytes)} bytes, above {MAX_MANIFEST_BYTES}: coalesce the evictions"
        )
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, len(manifest_bytes)) + manifest_bytes
    body = head + AESGCM(data_key.plaintext).encrypt(nonce, payload, head)
    return EncodedBatch(key=manifest.object_key, data=body + identity.sign(body), manifest=manifest)


# ----------------------------------------------------------------------------- reader
PublicKeys = Callable[[str, str], Sequence[bytes | tuple[str, bytes]]] | Sequence[bytes | tuple[str, bytes]]


def read_manifest(data: bytes, *, key: str | None = None) -> Manifest:
    """The manifest of a batch WITHOUT verifying the signature (for listings and routing only)."""
    return _parse_manifest(_split(data, key).manifest_bytes, key)


@dataclass(frozen=True)
class _Parts:
    signed: bytes  # everything before the signature
    head: bytes  # header + manifest: the AEAD associated data
    manifest_bytes: bytes
    ciphertext: bytes
    signature: bytes
    tenant_id: str  # as claimed by the (not yet verified) manifest
    device_id: str
    version: int  # the header's format version


def _split(data: bytes, key: str | None) -> _Parts:
    """Cut a batch into its parts after the structural checks (nothing is trusted yet)."""
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise TruncatedBatch(
            f"{len(data)} bytes is shorter than the {_HEADER.size}-byte header; re-upload it", key=key
        )
    magic, version, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BadMagic(f"starts with {magic!r}, not {MAGIC!r}: not an edge-sync batch", key=key)
    if version not in READ_VERSIONS:
        raise UnsupportedVersion(
            f"format version {version}; this reader reads versions {', '.join(map(str, READ_VERSIONS))} "
            "(upgrade the reader for newer ones)",
            key=key,
        )
    if length > MAX_MANIFEST_BYTES:
        raise OversizedManifest(
            f"manifest length {length} exceeds the {MAX_MANIFEST_BYTES}-byte limit", key=key
        )
    end = _HEADER.size + length
    if len(data) < end:
        raise TruncatedBatch(
            f"{len(data)} bytes cannot hold the {length}-byte manifest the header announces; re-upload it",
            key=key,
        )
    claimed = _pre_parse(data[_HEADER.size : end], key)
    expected = end + claimed["payload_bytes"] + SIGNATURE_BYTES
    if len(data) != expected:
        raise TruncatedBatch(
            f"{len(data)} bytes, but header and manifest announce {expected} "
            "(manifest + ciphertext + 64-byte signature): the object is cut short or has trailing bytes; "
            "re-upload it",
            key=key,
        )
    return _Parts(
        signed=data[:-SIGNATURE_BYTES],
        head=data[:end],
        manifest_bytes=data[_HEADER.size : end],
        ciphertext=data[end:-SIGNATURE_BYTES],
        signature=data[-SIGNATURE_BYTES:],
        tenant_id=claimed["tenant_id"],
        device_id=claimed["device_id"],
        version=version,
    )


def _parse_manifest(manifest_bytes: bytes, key: str | None) -> Manifest:
    try:
        return Manifest.model_validate_json(manifest_bytes)
    except ValidationError as exc:
        raise BadManifest(
            f"manifest is not a valid manifest ({exc.error_count()} errors: {exc.errors()[:2]})", key=key
        ) from None


def _pre_parse(manifest_bytes: bytes, key: str | None) -> dict:
    """The few manifest fields needed before the signature can be checked (signer, payload length)."""
    try:
        doc = bounded_loads(manifest_bytes)
    except TooDeep as exc:
        raise BadManifest(f"manifest is not a plain JSON object ({exc})", key=key) from None
    except ValueError:
        raise BadManifest("manifest is not JSON (corrupted or tampered)", key=key) from None
    if not isinstance(doc, dict):
        raise BadManifest("manifest is not a JSON object", key=key)
    tenant, device, size = doc.get("tenant_id"), doc.get("device_id"), doc.get("payload_bytes")
    if not (is_valid_id(tenant) and is_valid_id(device)):
        raise BadManifest(f"manifest has no valid tenant_id/device_id ({tenant!r}, {device!r})", key=key)
    if not isinstance(size, int) or isinstance(size, bool) or size < TAG_BYTES:
        raise BadManifest(f"manifest payload_bytes {size!r} is not a ciphertext length", key=key)
    return {"tenant_id": tenant, "device_id": device, "payload_bytes": size}


def _verify(
    signed: bytes, signature: bytes, tenant: str, device: str, public_keys: PublicKeys, key: str | None
) -> None:
    try:
        keys = public_keys(tenant, device) if callable(public_keys) else public_keys
    except ValueError as exc:  # ids the registry refuses: not a batch we can trust
        raise BadManifest(f"device {tenant}/{device} cannot be looked up: {exc}", key=key) from None
    except Exception as exc:
        raise ServiceError(f"device registry failed looking up {tenant}/{device}: {exc!r}") from exc
    raw = [k[1] if isinstance(k, tuple) else k for k in keys]
    if not raw:
        raise UnknownDevice(
            f"no registered public key for device {tenant}/{device}; register the device before ingesting",
            key=key,
        )
    if not any(verify_signature(bytes(k), signature, signed) for k in raw):
        raise BadSignature(
            f"signature does not verify with any of {len(raw)} key(s) of {tenant}/{device}: "
            "the object was altered, or signed by another or revoked device key",
            key=key,
        )


@dataclass(frozen=True)
class OpenedBatch:
    """A batch whose signature, manifest, key, AEAD and hash are verified; its payload not yet decoded."""

    manifest: Manifest
    spec: StreamSpec
    payload: bytes  # the compact Parquet plaintext (batch_encoding)


def read_batch(
    data: bytes,
    *,
    key_service: KeyService,
    public_keys: PublicKeys,
    expected_key: str | None = None,
) -> DecodedBatch:
    """Verify, decrypt and decode a batch; raises a :class:`BatchError` subclass with a ``reason``.

    ``public_keys`` is either ``callable(tenant_id, device_id)`` returning the device's
    registered keys (raw 32-byte Ed25519 keys or ``(key_id, raw)`` pairs, e.g.
    ``DeviceRegistry.public_keys``) or such a list directly. ``expected_key`` is the object
    key the batch was read from; the manifest must agree with it.
    """
    opened = open_batch(data, key_service=key_service, public_keys=public_keys, expected_key=expected_key)
    manifest = opened.manifest
    try:
        table = decode_table(
            opened.payload, opened.spec, manifest.tenant_id, manifest.device_id, manifest.row_count
        )
    except Exception as exc:  # any failure to decode is the payload's (module docstring)
        raise _corrupt(exc, expected_key) from None
    _check_ranges(manifest, table.column("seq").to_numpy(), table.column("hlc").to_numpy(), expected_key)
    return DecodedBatch(manifest=manifest, table=table)


def open_batch(
    data: bytes,
    *,
    key_service: KeyService,
    public_keys: PublicKeys,
    expected_key: str | None = None,
) -> OpenedBatch:
    """Every check of :func:`read_batch` up to the decrypted payload's hash; the payload stays encoded.

    Raises a :class:`BatchError` for anything wrong with the object, whatever failed inside
    (a parser's own error included), and :class:`ServiceError` only when the key service or
    the registry failed.
    """
    try:
        return _open(data, key_service, public_keys, expected_key)
    except (BatchError, ServiceError):
        raise
    except Exception as exc:
        raise MalformedBatch(f"cannot be read ({type(exc).__name__}: {exc})", key=expected_key) from exc


def _open(
    data: bytes, key_service: KeyService, public_keys: PublicKeys, expected_key: str | None
) -> OpenedBatch:
    key = expected_key
    parts = _split(data, key)
    _verify(parts.signed, parts.signature, parts.tenant_id, parts.device_id, public_keys, key)
    manifest = _parse_manifest(parts.manifest_bytes, key)
    if manifest.format_version != parts.version:
        raise UnsupportedVersion(
            f"manifest says format version {manifest.format_version}, header says {parts.version}", key=key
        )
    if expected_key is not None:
        try:
            where = parse_object_key(expected_key)
        except ValueError as exc:
            raise PathMismatch(str(exc), key=key) from None
        here = ObjectKey(
            manifest.tenant_id, manifest.device_id, manifest.stream, manifest.first_seq, manifest.last_seq
        )
        if where != here:
            raise PathMismatch(
                f"manifest describes {manifest.object_key!r}, not this key: the object was moved or replayed "
                "under another tenant, device, stream or range; quarantine it",
                key=key,
            )
    spec = _stream_for_fingerprint(manifest.schema_fingerprint)
    if spec is None or spec.name != manifest.stream:
        raise UnknownSchema(
            f"schema fingerprint {manifest.schema_fingerprint!r} is not the current schema of stream "
            f"{manifest.stream!r} (known: {', '.join(f'{n}={_fingerprint(s)}' for n, s in STREAMS.items())}); "
            "upgrade the reader or migrate the device",
            key=key,
        )
    plaintext = _decrypt(manifest, parts.head, parts.ciphertext, key_service, key)
    if hashlib.sha256(plaintext).hexdigest() != manifest.plaintext_sha256:
        raise HashMismatch("decrypted payload does not match the manifest's plaintext_sha256", key=key)
    return OpenedBatch(manifest=manifest, spec=spec, payload=plaintext)


@dataclass(frozen=True)
class DecodedBatches:
    """Opened batches of one stream decoded together (:func:`decode_batches`).

    ``table`` holds the rows of the batches that decoded, batch after batch in the order
    given, each in seq order, string columns dictionary-encoded; ``counts[i]`` is batch
    ``i``'s number of rows there (0 for a failed one); ``errors`` maps the index of each
    batch that failed to its error.
    """

    table: pa.Table
    counts: np.ndarray
    errors: dict[int, BatchError]


def decode_batches(opened: Sequence[OpenedBatch], keys: Sequence[str | None]) -> DecodedBatches:
    """Decode and range-check many opened batches of one stream in one pass (the central ingest).

    The same checks and errors as :func:`read_batch`, batch by batch: a bad payload or range
    fails that batch only.
    """
    if not opened:
        raise ValueError("decode_batches needs at least one batch")
    spec = opened[0].spec
    if any(o.spec is not spec for o in opened):
        raise ValueError("decode_batches takes the batches of one stream; group them by stream first")
    errors: dict[int, BatchError] = {}
    try:
        table, counts = _decode_payloads(opened)
    except Exception:  # which one? each alone says
        parts, counts = [], np.zeros(len(opened), dtype=np.int64)
        for i, o in enumerate(opened):
            try:
                part, _ = _decode_payloads([o])
            except Exception as exc:  # any failure to decode is the payload's (module docstring)
                errors[i] = _corrupt(exc, keys[i])
                continue
            parts.append(part)
            counts[i] = part.num_rows
        table = pa.concat_tables(parts) if parts else dictionary_schema(spec).empty_table()
    seq, hlc = (table.column(c).to_numpy() for c in ("seq", "hlc"))
    ends = np.cumsum(counts)
    for i, o in enumerate(opened):
        if i in errors:
            continue
        rows = slice(int(ends[i] - counts[i]), int(ends[i]))
        try:
            _check_ranges(o.manifest, seq[rows], hlc[rows], keys[i])
        except BadRange as exc:
            errors[i] = exc
    if any(counts[i] for i in errors):
        keep = np.repeat([i not in errors for i in range(len(opened))], counts)
        table = table.filter(pa.array(keep))
        counts = np.where([i in errors for i in range(len(opened))], 0, counts)
    return DecodedBatches(table=table, counts=counts, errors=errors)


def _decode_payloads(opened: Sequence[OpenedBatch]) -> tuple[pa.Table, np.ndarray]:
    m = [o.manifest for o in opened]
    return decode_tables(
        [o.payload for o in opened],
        opened[0].spec,
        [x.tenant_id for x in m],
        [x.device_id for x in m],
        [x.row_count for x in m],
    )


def _corrupt(exc: Exception, key: str | None) -> CorruptPayload | BadRange:
    if isinstance(exc, RowCountMismatch):
        return BadRange(f"{exc}: the writer is broken; quarantine the batch", key=key)
    what = str(exc) if isinstance(exc, PayloadDecodeError) else f"payload does not decode ({exc!r:.500})"
    return CorruptPayload(f"{what}; the writer is broken or of another format revision", key=key)


def _decrypt(
    manifest: Manifest, head: bytes, ciphertext: bytes, key_service: KeyService, key: str | None
) -> bytes:
    try:
        wrapped = base64.b64decode(manifest.wrapped_key, validate=True)
        nonce = base64.b64decode(manifest.nonce, validate=True)
    except ValueError:
        raise BadManifest("wrapped_key or nonce is not base64", key=key) from None
    try:
        data_key = key_service.unwrap(manifest.tenant_id, manifest.key_id, wrapped)
    except KeyServiceError as exc:
        cls = CrossTenantKey if exc.reason == "tenant_mismatch" else DecryptionFailure
        raise cls(
            f"data key {manifest.key_id!r} cannot be unwrapped: {exc}", key=key, detail=exc.reason
        ) from None
    except Exception as exc:  # the service itself failed (unreachable, timed out): not the batch's fault
        raise ServiceError(f"key service failed unwrapping data key {manifest.key_id!r}: {exc!r}") from exc
    if len(nonce) != _NONCE_BYTES or len(data_key) != 32:
        raise DecryptionFailure(
            f"nonce is {len(nonce)} bytes or data key {len(data_key)} bytes; expected 12 and 32", key=key
        )
    try:
        return AESGCM(data_key).decrypt(nonce, ciphertext, head)
    except InvalidTag:
        raise DecryptionFailure(
            "AES-GCM authentication failed: the ciphertext or manifest was altered after encryption", key=key
        ) from None


def _check_ranges(manifest: Manifest, seq: np.ndarray, hlc: np.ndarray, key: str | None) -> None:
    """The rows' ``seq`` and ``hlc`` (seq order) against the manifest's counts and ranges."""
    problems = []
    if seq.size != manifest.row_count:
        problems.append(f"row_count {manifest.row_count} but {seq.size} rows")
    if seq.size > 1 and not np.all(np.diff(seq) > 0):
        problems.append("duplicate seqs")
    bounds = [int(seq[0]), int(seq[-1])] if seq.size else []
    bounds += [s for e in manifest.evictions for s in (e.first_seq, e.last_seq)]
    if not bounds or (min(bounds), max(bounds)) != (manifest.first_seq, manifest.last_seq):
        problems.append(
            f"seq range {manifest.first_seq}..{manifest.last_seq} disagrees with rows and evictions"
        )
    if seq.size and (int(hlc.min()), int(hlc.max())) != (manifest.hlc_min, manifest.hlc_max):
        problems.append(f"HLC range {manifest.hlc_min}..{manifest.hlc_max} disagrees with the rows")
    if _evictions_overlapping(seq, manifest.evictions) is not None:
        problems.append("an eviction range overlaps rows")
    if problems:
        raise BadRange("; ".join(problems) + ": the writer is broken; quarantine the batch", key=key)
