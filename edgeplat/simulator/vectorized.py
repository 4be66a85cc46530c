"""Vectorised fleets for benchmarks: rows generated with numpy, written through the real batch writer.

For fleets too big to run agent by agent (each agent opens an encrypted DuckDB cache),
this draws the same telemetry and health models as :mod:`edgeplat.simulator.device`
(same metrics, resolutions, release profiles; not the same numbers) for whole
device-hours at once, and encodes each device-hour of a stream as one batch with
``edge_sync.batch.write_batch`` (the device's own identity, the tenant's key service),
optionally putting it into an object store with ``put_if_absent`` like the uploader.
No cache is involved, so nothing is pending or evicted: the truth is "everything delivered".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from edge_sync.batch import EncodedBatch, write_batch
from edge_sync.identity import DeviceIdentity
from edge_sync.keys import KeyService
from edge_sync.objectstore import ObjectStore
from edge_sync.streams import get_stream
from edgeplat.simulator.config import SimulationConfig
from edgeplat.simulator.device import METRICS
from edgeplat.simulator.fleet import SimDevice, build_fleet
from edgeplat.simulator.profiles import ReleaseProfiles


def _envelope(spec_name: str, dev: SimDevice, seq0: int, ts: np.ndarray) -> dict[str, pa.Array]:
    n = ts.size
    seq = np.arange(seq0, seq0 + n, dtype=np.int64)
    hlc = (ts << 16) | (seq & 0x3)  # wall time with a small logical counter, as record() gives at one sample
    return {
        "tenant_id": pa.array([dev.tenant_id] * n, pa.string()),
        "device_id": pa.array([dev.device_id] * n, pa.string()),
        "stream": pa.array([spec_name] * n, pa.string()),
        "seq": pa.array(seq, pa.int64()),
        "hlc": pa.array(hlc, pa.int64()),
        "node_id": pa.array([dev.device_id] * n, pa.string()),
        "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
    }


def telemetry_table(
    config: SimulationConfig,
    dev: SimDevice,
    profiles: ReleaseProfiles,
    hour: int,
    seq0: int,
    rng: np.random.Generator,
    version: str | None = None,
) -> pa.Table:
    """One device-hour of telemetry (``metrics_per_sample`` rows per sample, sample-major)."""
    step = int(config.telemetry_interval_s * 1000)
    t0 = config.start_ms + hour * 3_600_000 + (dev.phase_s * 1000) % step
    t = np.arange(t0, config.start_ms + (hour + 1) * 3_600_000, step, dtype=np.int64) + dev.skew_ms
    n, k = t.size, config.metrics_per_sample
    profile = profiles.get(version or config.release)
    values = np.empty((n, k))
    for i in range(k):
        name, start, drift, sd, res = METRICS[i]
        if drift is None:
            v = np.cumsum(rng.poisson(sd, n)).astype(np.float64)
        else:
            centre = {"cpu_pct": profile.cpu_pct * dev.factor, "mem_mb": profile.mem_mb}.get(name, 0.0)
            walk = start * (1 + rng.normal(0, 0.02)) + (
                np.cumsum(rng.normal(0.0, drift, n)) if drift else 0.0
            )
            v = centre + walk + rng.normal(0.0, 1.0, n) * sd
        values[:, i] = np.round(np.round(v / res) * res, 3)
    names = np.array([m[0] for m in METRICS[:k]], dtype=object)
    cols = _envelope("telemetry", dev, seq0, np.repeat(t, k))
    cols["metric"] = pa.array(np.tile(names, n), pa.string())
    cols["value"] = pa.array(values.reshape(-1), pa.float64())
    return pa.table(cols).cast(get_stream("telemetry").schema)


def health_table(
    config: SimulationConfig,
    dev: SimDevice,
    profiles: ReleaseProfiles,
    hour: int,
    seq0: int,
    rng: np.random.Generator,
    version: str | None = None,
) -> pa.Table:
    """One device-hour of per-minute health rows drawn from the release profile."""
    version = version or config.release
    p = profiles.get(version)
    ts = (
        config.start_ms
        + hour * 3_600_000
        + np.arange(60, dtype=np.int64) * 60_000
        + (dev.phase_s % 60) * 1000
        + dev.skew_ms
    )
    requests = rng.poisson(p.requests_per_min, 60)
    errors = rng.binomial(requests, min(1.0, p.error_rate * dev.factor))
    crashes = np.cumsum(rng.poisson(p.crash_rate * dev.factor / 60, 60))
    cols = _envelope("health", dev, seq0, ts)
    cols.update(
        {
            "version": pa.array([version] * 60, pa.string()),
            "slot": pa.array(["a"] * 60, pa.string()),
            "desired_revision": pa.array(np.ones(60, dtype=np.int64)),
            "error_rate": pa.array(
                np.round(np.where(requests > 0, errors / np.maximum(requests, 1), 0.0), 4)
            ),
            "requests": pa.array(requests.astype(np.int64)),
            "errors": pa.array(errors.astype(np.int64)),
            "crash_count": pa.array(crashes.astype(np.int64)),
            "cpu_pct": pa.array(np.round(np.clip(rng.normal(p.cpu_pct * dev.factor, 3.0, 60), 0, 100), 1)),
            "mem_mb": pa.array(np.round(np.maximum(1.0, rng.normal(p.mem_mb, 5.0, 60)), 0)),
            "heartbeat": pa.array(hour * 60 + np.arange(1, 61, dtype=np.int64)),
            "queue_depth": pa.array(np.zeros(60, dtype=np.int64)),
            **{c: pa.nulls(60, pa.string()) for c in ("update_state", "update_version", "update_reason")},
        }
    )
    return pa.table(cols).cast(get_stream("health").schema)


@dataclass
class VectorBatch:
    """One encoded device-hour batch and the rows it holds."""

    device: SimDevice
    stream: str
    table: pa.Table
    batch: EncodedBatch


def device_hour_batches(
    config: SimulationConfig,
    key_service: KeyService,
    *,
    profiles: ReleaseProfiles | None = None,
    streams: tuple[str, ...] = ("telemetry", "health"),
    store: ObjectStore | None = None,
    identities: dict[str, DeviceIdentity] | None = None,
) -> Iterator[VectorBatch]:
    """Yield one encoded batch per device, hour and stream (put into ``store`` when given).

    ``identities`` (device id -> identity) lets the caller register the keys; missing ones
    are generated and added to the dict.
    """
    profiles = profiles or ReleaseProfiles()
    identities = identities if identities is not None else {}
    makers = {"telemetry": telemetry_table, "health": health_table}
    unknown = [s for s in streams if s not in makers]
    if unknown:
        raise ValueError(f"the vectorised generator makes {sorted(makers)}, not {unknown}")
    hours = max(1, int(np.ceil(config.hours)))
    for dev in build_fleet(config):
        rng = np.random.default_rng([config.seed, dev.index, 0x7EC])
        identity = identities.get(dev.device_id)
        if identity is None:
            identity = identities[dev.device_id] = DeviceIdentity.generate(dev.tenant_id, dev.device_id)
        seq = dict.fromkeys(streams, 1)
        for hour in range(hours):
            for stream in streams:
                table = makers[stream](config, dev, profiles, hour, seq[stream], rng)
                seq[stream] += table.num_rows
                batch = write_batch(
                    table,
                    tenant_id=dev.tenant_id,
                    device_id=dev.device_id,
                    stream=stream,
                    key_service=key_service,
                    identity=identity,
                    created_ms=config.start_ms + (hour + 1) * 3_600_000,
                )
                if store is not None:
                    store.put_if_absent(batch.key, batch.data)
                yield VectorBatch(dev, stream, table, batch)
