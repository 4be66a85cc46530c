"""The ingest of several tenants spread over worker processes: how N Dagster run pods share it.

In production the batch arrival sensor requests one ingest run per tenant and key group, the
run queue lets one run per tenant start at a time, and the ``K8sRunLauncher`` gives each run
its own pod. :func:`ingest_tenants` does the same on one machine: each tenant's keys are
ingested by one of ``workers`` processes (never two at once for one tenant), each opening its
own lakehouse connection and store client, as a pod would. The scale-out benchmark and the
concurrent-ingest test run it against the PostgreSQL catalog and S3.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import time
from dataclasses import dataclass, field

from edge_sync.identity import LocalDeviceRegistry
from edge_sync.keys import LocalKeyring
from edge_sync.objectstore_url import from_url
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.sync.env import SyncEnv, SyncSettings
from edgeplat.sync.ingest import ingest_objects


@dataclass(frozen=True)
class IngestWorkerSpec:
    """What a worker process needs to build the sync's collaborators (all picklable)."""

    lake: LakehouseConfig
    objects_url: str
    keys_dir: str
    registry_dir: str
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = field(default=None, repr=False)
    max_drift_ms: int = 10**15


def ingest_one_tenant(spec: IngestWorkerSpec, tenant_id: str, keys: list[str]) -> dict:
    """One ingest run of one tenant's keys, with collaborators of its own; returns its report."""
    store = (
        from_url(
            spec.objects_url,
            endpoint_url=spec.s3_endpoint_url,
            access_key_id=spec.s3_access_key_id,
            secret_access_key=spec.s3_secret_access_key,
        )
        if spec.objects_url.startswith("s3://")
        else from_url(spec.objects_url)
    )
    env = SyncEnv(
        Lakehouse(spec.lake),
        store,
        LocalKeyring(spec.keys_dir),
        LocalDeviceRegistry(spec.registry_dir),
        settings=SyncSettings(max_drift_ms=spec.max_drift_ms),
    )
    report = ingest_objects(env, keys).as_dict()
    store.close()
    return {"tenant_id": tenant_id, **report}


def _ready(_: int) -> float:
    # the spawned worker has imported the ingest's libraries (the slow part of its start) by now;
    # the pause keeps one worker from taking every warm-up task
    time.sleep(0.3)
    return time.monotonic()


def ingest_tenants(
    spec: IngestWorkerSpec, keys_by_tenant: dict[str, list[str]], workers: int
) -> tuple[float, list[dict]]:
    """Ingest every tenant's keys on ``workers`` processes, one tenant per process at a time.

    Returns the wall-clock seconds from the started workers' first task to the last tenant's
    commit (worker start-up excluded), and each tenant's ingest report.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        list(pool.map(_ready, range(workers)))
        started = time.perf_counter()
        futures = [
            pool.submit(ingest_one_tenant, spec, t, keys) for t, keys in sorted(keys_by_tenant.items())
        ]
        reports = [f.result() for f in futures]
        return time.perf_counter() - started, reports
