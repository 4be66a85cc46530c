"""The demo fleet's real data path: device identities, signed encrypted batches, the object store, the ingest.

:class:`BatchUplink` gives every device of a :class:`~edgeplat.simulator.rollout_fleet.DemoFleet`
an Ed25519 :class:`~edge_sync.identity.DeviceIdentity` registered in ``SyncEnv.registry``,
cuts each device upload into one ``health`` batch with :func:`edge_sync.batch.write_batch`
(data key from ``SyncEnv.key_service``, signed by the device), puts it into
``SyncEnv.store`` under its object key (``put_if_absent``, as the device uploader does),
and ingests every batch of a step with one :func:`edgeplat.sync.ingest.ingest_objects`
call: the same verification, exactly-once ledger and ``devices`` update the sync job runs.
Central "now" is the fleet's simulated clock, so the ingest's drift bound and timestamps
agree with the devices' HLCs.

Cost: a batch takes a few milliseconds to write and as much to verify and decode, so the
fleet bounds their number (one per device and upload, see ``DemoFleet.upload_every``).
``workers`` > 1 writes batches in that many threads. ``key_service``: the devices' side of the
key service (wraps data keys) where it differs from the central one in ``SyncEnv`` (which in
production may only decrypt); default ``SyncEnv.key_service``.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import pyarrow as pa

from edge_sync.batch import EncodedBatch, write_batch
from edge_sync.identity import DeviceIdentity, DeviceRegistry
from edge_sync.keys import KeyService
from edge_sync.objectstore import LocalObjectStore
from edgeplat.lakehouse import retried
from edgeplat.simulator.rollout_fleet import FleetDevice, epoch_ms, register_devices
from edgeplat.sync.env import SyncEnv
from edgeplat.sync.ingest import IngestReport, ingest_objects


def enrol(keys: Sequence[tuple[str, str, bytes]], registry: DeviceRegistry) -> None:
    """Register (tenant, device, public key) triples, one registry write per tenant where the
    registry can (``LocalDeviceRegistry.register_many``); one by one otherwise."""
    many = getattr(registry, "register_many", None)
    if callable(many):
        many(keys)
        return
    for tenant_id, device_id, public_key in keys:
        registry.register(tenant_id, device_id, public_key)


class DemoIngestError(RuntimeError):
    """A demo device's batch was quarantined: the fleet or the platform broke the batch contract."""


class BatchUplink:
    """Uploads through batches and the central ingest (see module doc)."""

    def __init__(self, env: SyncEnv, *, workers: int = 0, key_service: KeyService | None = None) -> None:
        self.env = env
        self.workers = workers
        self.key_service = env.key_service if key_service is None else key_service
        # The devices' side of the store: the same objects; locally without fsync, as the
        # simulator's devices upload (a demo tests the protocol, not the disk, and fsync per batch is slow).
        store = env.store
        self.upload_store = (
            LocalObjectStore(store.root, fsync=False) if isinstance(store, LocalObjectStore) else store
        )
        self.report = IngestReport()
        self.batches = 0
        self._con = env.lakehouse.connect()  # one connection for the fleet's life: attaching is the slow part
        self._pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="demo-batch") if workers > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self._con.close()

    def register(self, devices: Sequence[FleetDevice], at: datetime) -> None:
        """Enrol each device: a fresh identity whose public key goes into the registry, and its ``devices`` row."""
        for d in devices:
            d.identity = DeviceIdentity.generate(d.tenant_id, d.device_id)
        enrol([(d.tenant_id, d.device_id, d.identity.public_key_bytes()) for d in devices], self.env.registry)
        retried(self._con, lambda con: register_devices(con, devices, at), what="demo fleet registration")

    def _write(self, d: FleetDevice, rows: pa.Table, created_ms: int) -> EncodedBatch:
        if d.identity is None:
            raise ValueError(f"device {d.key} has no identity: register the fleet's devices before uploading")
        batch = write_batch(
            rows,
            tenant_id=d.tenant_id,
            device_id=d.device_id,
            stream="health",
            key_service=self.key_service,
            identity=d.identity,
            created_ms=created_ms,
        )
        self.upload_store.put_if_absent(batch.key, batch.data)
        return batch

    def upload(self, uploads: Sequence[tuple[FleetDevice, pa.Table]], now: datetime) -> None:
        """One batch per device upload, then one ingest of all of them; quarantine is an error here."""
        created = epoch_ms(now)
        if self._pool is not None:
            batches = list(self._pool.map(lambda u: self._write(*u, created), uploads))
        else:
            batches = [self._write(d, rows, created) for d, rows in uploads]
        env = replace(self.env, now_ms=lambda: created)
        report = ingest_objects(env, [b.key for b in batches], con=self._con)
        self.report.add(report)
        self.batches += len(batches)
        if report.quarantined or report.missing:
            raise DemoIngestError(
                f"the ingest refused demo batches: quarantined {dict(report.quarantined)}, missing {report.missing}; "
                "see the quarantine table (SELECT reason, detail FROM quarantine ORDER BY quarantined_at DESC)"
            )

    def summary(self) -> dict[str, int | dict[str, int]]:
        r = self.report
        return {
            "batches": self.batches,
            "rows_ingested": r.rows_new,
            "duplicates_dropped": r.duplicates_dropped,
            "quarantined": dict(Counter(r.quarantined)),
        }
