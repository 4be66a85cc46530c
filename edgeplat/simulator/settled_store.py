"""A store full of settled batch history, made fast: a million objects the ledger already holds.

Scale runs need a store the size of a fleet's history (objects long since ingested) without
encoding and ingesting a million real batches. :class:`SettledLayout` names that history:
``tenants`` x ``devices_per_tenant`` devices, each with ``batches_per_device`` telemetry
batches of ``rows_per_batch`` seqs, under the real key scheme (``edge_sync.batch_keys``).
The objects are empty (nothing reads a settled object: the sensor and reconciliation skip
keys the ledger holds) and the ledger rows are inserted in bulk from Arrow, so both stay
consistent: every settled key is in the store *and* in ``batches``.

:func:`fill_local_store` creates the files directly (no temp file, link and fsync per
object: that is the device upload path, not history); an S3 store is filled inside its
server process (``tests.support.moto_prefilled``) from :meth:`SettledLayout.object_keys`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from edge_sync.batch_keys import object_key
from edgeplat.lake_files import insert_rows

LEDGER_CHUNK = 250_000  # ledger rows per insert: bounded memory, few parquet files


@dataclass(frozen=True)
class SettledLayout:
    """Which settled batch objects a store holds (module doc). Keys sort by tenant, device, seq."""

    tenants: int = 4
    devices_per_tenant: int = 2_500
    batches_per_device: int = 100
    rows_per_batch: int = 600

    @property
    def count(self) -> int:
        return self.tenants * self.devices_per_tenant * self.batches_per_device

    @property
    def tenant_ids(self) -> list[str]:
        return [tenant_id(t) for t in range(self.tenants)]

    def device_ids(self) -> list[tuple[str, str]]:
        """Every (tenant, device) of the layout, in key order."""
        return [
            (tenant_id(t), device_id(d)) for t in range(self.tenants) for d in range(self.devices_per_tenant)
        ]

    def seq_range(self, index: int) -> tuple[int, int]:
        """The seqs of a device's ``index``-th batch (seqs start at 1, as device caches number them)."""
        return index * self.rows_per_batch + 1, (index + 1) * self.rows_per_batch

    @property
    def next_seq(self) -> int:
        """The first seq after every device's settled history: where new batches start."""
        return self.batches_per_device * self.rows_per_batch + 1

    def device_keys(self, tenant: str, device: str) -> list[str]:
        return [
            object_key(tenant, device, "telemetry", *self.seq_range(i))
            for i in range(self.batches_per_device)
        ]

    def object_keys(self) -> Iterator[str]:
        """Every settled object key, in lexicographic (listing) order."""
        for tenant, device in self.device_ids():
            yield from self.device_keys(tenant, device)


def tenant_id(index: int) -> str:
    return f"tenant-{index}"


def device_id(index: int) -> str:
    return f"dev-{index:05d}"


def fill_local_store(root: Path, layout: SettledLayout) -> float:
    """Create every settled object of ``layout`` as an empty file under ``root``; returns seconds."""
    started = time.perf_counter()
    flags = os.O_CREAT | os.O_WRONLY
    for tenant, device in layout.device_ids():
        keys = layout.device_keys(tenant, device)
        folder = root.joinpath(*keys[0].split("/")[:-1])
        folder.mkdir(parents=True, exist_ok=True)
        for key in keys:
            os.close(os.open(folder / key.rsplit("/", 1)[1], flags, 0o644))
    return time.perf_counter() - started


def ledger_rows(layout: SettledLayout, tenant: str, devices: list[str], ingested_at: datetime) -> pa.Table:
    """The ``batches`` ledger rows of ``devices`` (one tenant's) settled history, as ingest writes them."""
    per = layout.batches_per_device
    n = len(devices) * per
    index = np.tile(np.arange(per, dtype=np.int64), len(devices))
    first = index * layout.rows_per_batch + 1
    last = first + layout.rows_per_batch - 1
    hlc_min = (1_767_225_600_000 + first * 1000) << 16  # as edgeplat.simulator.tenant_batches stamps rows
    keys = [k for d in devices for k in layout.device_keys(tenant, d)]
    rows = np.full(n, layout.rows_per_batch, dtype=np.int64)
    return pa.table(
        {
            "tenant_id": pa.array([tenant] * n),
            "device_id": pa.array(np.repeat(np.array(devices, dtype=object), per)),
            "stream": pa.array(["telemetry"] * n),
            "first_seq": first,
            "last_seq": last,
            "row_count": rows,
            "hlc_min": hlc_min,
            "hlc_max": hlc_min + ((layout.rows_per_batch - 1) * 1000 << 16),
            "object_key": pa.array(keys),
            "object_size": np.zeros(n, dtype=np.int64),
            "plaintext_sha256": pa.array([""] * n),
            "key_id": pa.array([f"{tenant}-history"] * n),
            "rows_new": rows,
            "rows_duplicate": np.zeros(n, dtype=np.int64),
            "ingested_at": pa.array([ingested_at] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def fill_ledger(lakehouse, layout: SettledLayout) -> float:
    """Insert the ledger rows of every settled object (in chunks, one transaction each); returns seconds."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    per_chunk = max(1, LEDGER_CHUNK // layout.batches_per_device)
    for t in range(layout.tenants):
        tenant = tenant_id(t)
        for lo in range(0, layout.devices_per_tenant, per_chunk):
            devices = [device_id(d) for d in range(lo, min(lo + per_chunk, layout.devices_per_tenant))]
            table = ledger_rows(layout, tenant, devices, now)
            lakehouse.write(
                lambda con, table=table: insert_rows(con, "batches", table), what="settled ledger"
            )
    return time.perf_counter() - started
