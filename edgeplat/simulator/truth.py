"""Ground truth of a simulation, and a check of an object store against it.

The truth file is exactly::

    {"streams": [{"tenant_id", "device_id", "stream", "generated", "first_seq", "last_seq",
                  "evicted", "pending"}],
     "state_edits": [{"tenant_id", "device_id", "namespace", "key", "field", "value", "hlc",
                      "node_id", "origin"}]}

One ``streams`` entry per device and stream that issued at least one row: seqs
``first_seq..last_seq`` (from 1, gapless) were ``generated``; ``evicted`` of them were
dropped by the cache's size bound or TTL; ``pending`` were still in the device's cache at
the end. So ``generated == delivered + evicted + pending`` where delivered counts distinct
seqs in the object store (:func:`delivered_seqs`), exactly when the device drained
(``pending == 0``). A device that died after a put and before its ack, and never synced
again, holds rows that are both delivered and pending (its next sync re-sends them to the
same key and acknowledges them), so with ``pending > 0`` the check is
``generated - evicted - pending <= delivered <= generated - evicted``. ``state_edits`` lists every edit either
side made (``origin`` device or central; ``value`` is JSON text), including edits still
pending on an offline device, ordered by device, HLC and node.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edge_sync.batch import read_batch
from edge_sync.batch_keys import BATCH_SUFFIX, parse_object_key
from edge_sync.keys import KeyService
from edge_sync.objectstore import ObjectStore
from edge_sync.streams import STREAMS

STREAM_FIELDS = (
    "tenant_id",
    "device_id",
    "stream",
    "generated",
    "first_seq",
    "last_seq",
    "evicted",
    "pending",
)
EDIT_FIELDS = ("tenant_id", "device_id", "namespace", "key", "field", "value", "hlc", "node_id", "origin")


def stream_rows(tenant_id: str, device_id: str, stats: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Truth entries of one device from its cache's per-stream figures (``SimAgent.stream_stats``)."""
    rows = []
    for stream in STREAMS:
        s = stats.get(stream)
        if not s or s["last_seq"] == 0:
            continue
        rows.append(
            {
                "tenant_id": tenant_id,
                "device_id": device_id,
                "stream": stream,
                "generated": s["last_seq"],
                "first_seq": 1,
                "last_seq": s["last_seq"],
                "evicted": s["evicted"],
                "pending": s["pending"],
            }
        )
    return rows


def build_truth(
    streams: Iterable[dict[str, Any]], edits: Iterable[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    return {
        "streams": sorted(
            ({k: r[k] for k in STREAM_FIELDS} for r in streams),
            key=lambda r: (r["tenant_id"], r["device_id"], r["stream"]),
        ),
        "state_edits": sorted(
            ({k: e[k] for k in EDIT_FIELDS} for e in edits),
            key=lambda e: (
                e["tenant_id"],
                e["device_id"],
                e["hlc"],
                e["node_id"],
                e["namespace"],
                e["key"],
                e["field"],
            ),
        ),
    }


def write_truth(path: str | os.PathLike[str], truth: dict[str, Any]) -> Path:
    """Write the truth JSON (atomically: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def delivered_seqs(
    store: ObjectStore, key_service: KeyService, public_keys, *, prefix: str = ""
) -> dict[tuple[str, str, str], set[int]]:
    """Distinct seqs per (tenant, device, stream) in the store's batches (each verified and decrypted).

    ``public_keys`` is what ``read_batch`` takes, e.g. ``LocalDeviceRegistry.public_keys``.
    """
    seen: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    after = None
    while True:
        page = store.list(prefix, after=after)
        for info in page.objects:
            if not info.key.endswith(BATCH_SUFFIX):
                continue
            where = parse_object_key(info.key)
            batch = read_batch(
                store.get(info.key), key_service=key_service, public_keys=public_keys, expected_key=info.key
            )
            seen[(where.tenant_id, where.device_id, where.stream)].update(
                batch.table.column("seq").to_pylist()
            )
        if page.next_after is None:
            return seen
        after = page.next_after


def check_against_store(truth: dict[str, Any], delivered: dict[tuple[str, str, str], set[int]]) -> list[str]:
    """Streams whose store contents contradict the truth (see the module doc); empty: the truth holds."""
    problems = []
    for r in truth["streams"]:
        got = len(delivered.get((r["tenant_id"], r["device_id"], r["stream"]), ()))
        sent = r["generated"] - r["evicted"]
        ok = got == sent if r["pending"] == 0 else sent - r["pending"] <= got <= sent
        if not ok:
            problems.append(
                f"{r['tenant_id']}/{r['device_id']}/{r['stream']}: generated {r['generated']} vs "
                f"delivered {got} + evicted {r['evicted']} + pending {r['pending']}"
            )
    return problems
