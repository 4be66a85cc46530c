"""Batch object keys: ``tenant=<T>/device=<D>/stream=<S>/<first:020d>-<last:020d>.batch``.

A batch's key follows from its manifest (tenant, device, stream, seq range), so a batch cut
again after a crash lands at the same key and put-if-absent makes its upload idempotent;
the central side lists and routes objects by key before it reads any of them.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from edge_sync.ids import validate_id
from edge_sync.streams import get_stream

BATCH_SUFFIX = ".batch"
# Every batch key starts here: listings of new batches start at this prefix, so nothing stored
# beside the tenants' keys (the central archive, ``archive/...``) is ever listed as a batch.
BATCH_PREFIX = "tenant="
# Where the platform moves settled batches (edgeplat/sync/archive.py): ``archive/<batch key>``.
# Nothing under it is a batch to ingest, whichever way its key reaches the ingest.
ARCHIVE_PREFIX = "archive/"
SEQ_DIGITS = 20
MAX_SEQ = 10**SEQ_DIGITS - 1


class ObjectKey(NamedTuple):
    """The parts of a batch object key."""

    tenant_id: str
    device_id: str
    stream: str
    first_seq: int
    last_seq: int


_KEY_RE = re.compile(
    r"tenant=(?P<tenant>[^/]+)/device=(?P<device>[^/]+)/stream=(?P<stream>[^/]+)/"
    rf"(?P<first>[0-9]{{{SEQ_DIGITS}}})-(?P<last>[0-9]{{{SEQ_DIGITS}}}){re.escape(BATCH_SUFFIX)}"
)


def _check_seq_range(first_seq: int, last_seq: int) -> None:
    if (
        not (isinstance(first_seq, int) and isinstance(last_seq, int))
        or not 0 <= first_seq <= last_seq <= MAX_SEQ
    ):
        raise ValueError(f"seq range {first_seq!r}..{last_seq!r} must be integers with 0 <= first <= last")


def object_key(tenant_id: str, device_id: str, stream: str, first_seq: int, last_seq: int) -> str:
    """The deterministic object key of a batch (ids validated, seqs zero-padded to 20 digits)."""
    validate_id("tenant", tenant_id)
    validate_id("device", device_id)
    get_stream(validate_id("stream", stream))
    _check_seq_range(first_seq, last_seq)
    return f"tenant={tenant_id}/device={device_id}/stream={stream}/{first_seq:020d}-{last_seq:020d}{BATCH_SUFFIX}"


def parse_object_key(key: str) -> ObjectKey:
    """Inverse of :func:`object_key`; ``ValueError`` for anything that is not exactly such a key."""
    m = _KEY_RE.fullmatch(key) if isinstance(key, str) else None
    if not m:
        raise ValueError(
            f"{key!r} is not a batch object key; expected "
            f"'tenant=<T>/device=<D>/stream=<S>/<first:020d>-<last:020d>{BATCH_SUFFIX}'"
        )
    parsed = ObjectKey(m["tenant"], m["device"], m["stream"], int(m["first"]), int(m["last"]))
    object_key(*parsed)  # validates ids, stream and range
    return parsed
