"""Signed, encrypted telemetry batches of several tenants, with re-deliveries, for scale-out runs.

Each device of each tenant gets ``rows_per_device`` telemetry rows (seq 0..n-1) cut into
batches of ``rows_per_batch``, plus one re-cut batch repeating a tenth of its rows across a
cut (as a device re-sends after a crash mid-upload), so an ingest must drop duplicates to
store every row exactly once. Devices are enrolled in a local registry and the tenants' data
keys in a local keyring, both under ``root``; the batches go to any object store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from edge_sync.batch import write_batch
from edge_sync.identity import DeviceIdentity, LocalDeviceRegistry
from edge_sync.keys import LocalKeyring
from edge_sync.objectstore import ObjectStore
from edge_sync.streams import get_stream

TS0_MS = 1_767_225_600_000


@dataclass(frozen=True)
class TenantBatches:
    """Where the batches are and what an exactly-once ingest must store."""

    keys_by_tenant: dict[str, list[str]]
    unique_rows: int  # rows an exactly-once ingest stores
    delivered_rows: int  # rows in all batches, re-deliveries included
    keys_dir: Path
    registry_dir: Path


def telemetry_rows(tenant_id: str, device_id: str, first_seq: int, n: int) -> pa.Table:
    spec = get_stream("telemetry")
    seq = first_seq + np.arange(n, dtype=np.int64)
    ts = TS0_MS + seq * 1000
    return pa.Table.from_pydict(
        {
            "tenant_id": pa.array([tenant_id] * n),
            "device_id": pa.array([device_id] * n),
            "stream": pa.array(["telemetry"] * n),
            "seq": pa.array(seq),
            "hlc": pa.array(ts << 16),
            "node_id": pa.array([device_id] * n),
            "ts": pa.array(ts).cast(pa.timestamp("ms", tz="UTC")),
            "metric": pa.array(np.array(["cpu", "mem", "temp"])[seq % 3]),  # by seq: a re-send is identical
            "value": pa.array((seq % 97) * 0.5),
        }
    ).cast(spec.schema)


def write_tenant_batches(
    root: Path,
    store: ObjectStore,
    *,
    tenants: int,
    devices_per_tenant: int,
    rows_per_device: int,
    rows_per_batch: int,
) -> TenantBatches:
    """Enrol the devices, write their batches to ``store`` and say what was written (module doc)."""
    keys_dir, registry_dir = root / "keys", root / "registry"
    keyring, registry = LocalKeyring(keys_dir), LocalDeviceRegistry(registry_dir)
    keys_by_tenant: dict[str, list[str]] = {}
    delivered = 0
    for t in range(tenants):
        tenant = f"tenant-{t}"
        keyring.generate_data_key(tenant)
        for d in range(devices_per_tenant):
            device = f"dev-{d:04d}"
            ident = DeviceIdentity.generate(tenant, device)
            registry.register(tenant, device, ident.public_key_bytes())
            cuts = [*range(0, rows_per_device, rows_per_batch), rows_per_device]
            spans = list(zip(cuts[:-1], cuts[1:], strict=True))
            redo = max(1, rows_per_device // 10)
            start = max(0, min(rows_per_device - redo, rows_per_batch - redo // 2))
            spans.append((start, start + redo))
            for lo, hi in spans:
                enc = write_batch(
                    telemetry_rows(tenant, device, lo, hi - lo),
                    tenant_id=tenant,
                    device_id=device,
                    stream="telemetry",
                    key_service=keyring,
                    identity=ident,
                    created_ms=0,
                )
                store.put(enc.key, enc.data)
                keys_by_tenant.setdefault(tenant, []).append(enc.key)
                delivered += hi - lo
    return TenantBatches(
        keys_by_tenant,
        tenants * devices_per_tenant * rows_per_device,
        delivered,
        keys_dir,
        registry_dir,
    )
