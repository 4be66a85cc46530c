"""The edge agent's own claim: the platform and tags a device was enrolled with, from its batches.

A device's signed batch manifest carries what its config says it is (``platform``, ``tags``);
the ingest folds the latest manifest's claim of each device into the ``devices`` rows it
writes, with ``claims.resolve``: the device's word fills what no stronger source set, and a
disagreement with its platform's registry is recorded in ``conflicts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from edgeplat.inventory.claims import DeviceClaim, resolve


def enrolled_claims(rows: pa.Table, accepted: Sequence[Any], now: datetime) -> pa.Table:
    """``rows`` (``devices`` rows the ingest is about to write) with each device's enrolled claim
    folded in; ``accepted``: the batches (with ``.manifest``) this ingest accepted."""
    latest: dict[tuple[str, str], Any] = {}
    for a in accepted:
        m = a.manifest
        key = (m.tenant_id, m.device_id)
        if key not in latest or m.created_ms >= latest[key].created_ms:
            latest[key] = m
    out = []
    for row in rows.to_pylist():
        m = latest.get((row["tenant_id"], row["device_id"]))
        claim = DeviceClaim(
            row["tenant_id"],
            row["device_id"],
            "edge_agent",
            platform=getattr(m, "platform", None),
            tags=dict(getattr(m, "tags", None) or {}),
            connectivity="online",
            last_seen=now,
        )
        row.update(resolve(row, [claim]).columns())
        out.append(row)
    return pa.Table.from_pylist(out, schema=rows.schema)
