"""Batch-format test helpers: a sample table of every stream, bit-exact comparison, and
batches written, read and forged (built by hand, correctly encrypted and signed) with one
tenant keyring and device identity (the ``keyring`` and ``ident`` fixtures of tests/edge_sync)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import struct

import numpy as np
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_sync.batch import FORMAT_VERSION, MAGIC, BatchError, read_batch, write_batch
from edge_sync.batch_encoding import encode_table
from edge_sync.identity import canonical_json
from edge_sync.keys import DataKey, LocalKeyring
from edge_sync.streams import get_stream

T, D = "tenant-a", "dev-1"
TS0 = 1_767_225_600_000


def sample_values(dtype: pa.DataType, n: int) -> pa.Array:
    if pa.types.is_string(dtype):
        pool = ["", "héllo wörld ✓", None, "a", "日本語", "x" * 50, "line\nbreak"]
    elif pa.types.is_float64(dtype):
        pool = [1.5, None, -0.0, float("nan"), 21.3, 1e300, float("-inf"), 0.1 + 0.2, 5e-324]
    else:
        pool = [1, None, -5, 2**62, 0]
    return pa.array([pool[i % len(pool)] for i in range(n)], dtype)


def make_table(stream: str, n: int = 23, first_seq: int = 100, device: str = D) -> pa.Table:
    spec = get_stream(stream)
    ts = TS0 + np.arange(n, dtype=np.int64) * 997
    cols = {
        "tenant_id": pa.array([T] * n),
        "device_id": pa.array([device] * n),
        "stream": pa.array([stream] * n),
        "seq": pa.array(first_seq + np.arange(n, dtype=np.int64) * 2),  # gaps are allowed
        "hlc": pa.array((ts << 16) + np.arange(n, dtype=np.int64) % 7),
        "node_id": pa.array([device] * n),
        "ts": pa.array(ts).cast(pa.timestamp("ms", tz="UTC")),
    }
    for f in spec.payload:
        cols[f.name] = sample_values(f.type, n)
    return pa.Table.from_pydict(cols).cast(spec.schema)


def assert_identical(a: pa.Table, b: pa.Table) -> None:
    """Same schema and the same values bit for bit (NaN, -0.0 included)."""
    assert a.schema.equals(b.schema), (a.schema, b.schema)
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        if pa.types.is_float64(x.type):
            assert x.is_null().equals(y.is_null()), name
            xb = np.asarray(x.fill_null(0.0).to_numpy()).view(np.int64)
            yb = np.asarray(y.fill_null(0.0).to_numpy()).view(np.int64)
            assert np.array_equal(xb, yb), name
        else:
            assert x.equals(y), name


def write(table, keyring, ident, **kw):
    args = dict(
        tenant_id=T, device_id=D, stream=table.column("stream")[0].as_py() if table.num_rows else "telemetry"
    )
    args.update(kw)
    return write_batch(table, key_service=keyring, identity=ident, **args)


def read(data, keyring, ident, **kw):
    kw.setdefault("public_keys", [ident.public_key_bytes()])
    return read_batch(data, key_service=keyring, **kw)


def reason_of(data, keyring, ident, **kw) -> str:
    with pytest.raises(BatchError) as info:
        read(data, keyring, ident, **kw)
    return info.value.reason


def seal(
    manifest: dict,
    payload: bytes,
    data_key: DataKey,
    signer,
    *,
    changes: dict | None = None,
    version: int = FORMAT_VERSION,
    announced_length: int | None = None,
) -> bytes:
    """The object ``write_batch`` makes of ``manifest`` and ``payload``: header, manifest, the payload
    encrypted under ``data_key``, ``signer``'s signature. ``changes`` are made to the manifest after
    its encryption fields are set, and the header may announce a ``version`` and manifest length of
    the caller's choice, so that exactly one thing is wrong when a test wants it wrong."""
    nonce = secrets.token_bytes(12)
    m = {
        **manifest,
        "key_id": data_key.key_id,
        "wrapped_key": base64.b64encode(data_key.wrapped).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "payload_bytes": len(payload) + 16,
        "plaintext_sha256": hashlib.sha256(payload).hexdigest(),
    }
    m.update(changes or {})
    mb = canonical_json(m)
    head = (
        struct.pack(">4sBI", MAGIC, version, len(mb) if announced_length is None else announced_length) + mb
    )
    body = head + AESGCM(data_key.plaintext).encrypt(nonce, payload, head)
    return body + signer.sign(body)


def forge(
    ident,
    keyring,
    stream="telemetry",
    table=None,
    payload=None,
    changes=None,
    data_key=None,
    version=FORMAT_VERSION,
):
    """A batch built by hand (correctly encrypted and signed) with chosen manifest fields and format version."""
    spec = get_stream(stream)
    table = table if table is not None else make_table(stream)
    good = write(table, keyring, ident, stream=stream)
    payload = payload if payload is not None else encode_table(table, spec, D)
    manifest = good.manifest.model_dump(mode="json") | {"format_version": version}
    dk = data_key or keyring.generate_data_key(T)
    return seal(manifest, payload, dk, ident, changes=changes, version=version)


class OtherTenantKeys:
    """A device (misconfigured or malicious) that wraps its data keys under another tenant's key."""

    def __init__(self, keyring: LocalKeyring, tenant: str) -> None:
        self.keyring, self.tenant = keyring, tenant

    def generate_data_key(self, tenant_id: str) -> DataKey:
        return self.keyring.generate_data_key(self.tenant)

    def unwrap(self, tenant_id: str, key_id: str, wrapped: bytes) -> bytes:  # pragma: no cover - writer only
        raise AssertionError("writer only")
