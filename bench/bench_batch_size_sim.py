"""Upload size per row on the simulator's telemetry (issue 3: "run it on the simulator's telemetry too").

Same shape as bench_batch_size: each device-hour of telemetry becomes one batch (format v2:
header, manifest with wrapped key, AES-GCM, Ed25519 signature), against JSON lines, gzip
JSON lines and zstd JSON lines of exactly the same rows, in the same per-device units.

Two sources, both the simulator's telemetry model (edgeplat.simulator): the vectorised
generator (many device-hours, through ``write_batch``), and a real agent run (devices
running ``DeviceAgent`` with one sync per hour, so the uploader cuts device-hour batches;
the bytes are the objects it actually put into the store, decoded back for the baselines).
"""

from __future__ import annotations

import gzip
import json
import tempfile

import pyarrow as pa
import zstandard

from bench.harness import Result
from edge_sync.batch import read_batch
from edge_sync.batch_keys import BATCH_SUFFIX, parse_object_key
from edge_sync.keys import LocalKeyring
from edgeplat.simulator import SimulationConfig, simulate
from edgeplat.simulator.parts import default_parts
from edgeplat.simulator.vectorized import device_hour_batches


def _json_lines(table: pa.Table) -> bytes:
    i = table.column_names.index("ts")
    rows = table.set_column(i, "ts", table.column("ts").cast(pa.int64())).to_pylist()
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()


class _Totals:
    def __init__(self) -> None:
        self.bytes = dict(ours=0, jsonl=0, gzip=0, zstd=0)
        self.rows = 0
        self.zc = zstandard.ZstdCompressor(level=3)

    def add(self, table: pa.Table, ours: int) -> None:
        jl = _json_lines(table)
        self.rows += table.num_rows
        self.bytes["ours"] += ours
        self.bytes["jsonl"] += len(jl)
        self.bytes["gzip"] += len(gzip.compress(jl, compresslevel=6, mtime=0))
        self.bytes["zstd"] += len(self.zc.compress(jl))

    def results(self, prefix: str, note: str, *, targets: bool = True) -> list[Result]:
        per_row = {k: v / self.rows for k, v in self.bytes.items()}
        specs = (
            ("jsonl", "JSON lines", 0.025 if targets else None),
            ("gzip", "gzip JSON lines", None),
            ("zstd", "zstd JSON lines", 0.4 if targets else None),
        )
        return [
            Result(
                name=f"{prefix}_vs_{key}",
                value=per_row["ours"],
                unit="B/row",
                baseline=label,
                baseline_value=per_row[key],
                target=target,
                higher_is_better=False,
                note=note,
            )
            for key, label, target in specs
        ]


def _vectorised(devices: int) -> list[Result]:
    config = SimulationConfig(devices=devices, tenants=3, hours=1, seed=11)
    totals = _Totals()
    with tempfile.TemporaryDirectory() as tmp:
        keyring = LocalKeyring(tmp)
        for vb in device_hour_batches(config, keyring, streams=("telemetry",)):
            totals.add(vb.table, len(vb.batch.data))
    note = (
        f"simulator telemetry (vectorised), {devices} devices x 1 h, {config.metrics_per_sample} metrics per "
        f"{config.telemetry_interval_s:g} s sample, {totals.rows:,} rows, one batch per device-hour"
    )
    return totals.results("batch_size_sim", note)


def _agents(devices: int) -> list[Result]:
    config = SimulationConfig(
        devices=devices, tenants=1, hours=1, seed=12, offline_fraction=0.0, sync_interval_min=60
    )
    totals = _Totals()
    with tempfile.TemporaryDirectory() as home:
        simulate(config, home=home)
        parts = default_parts(home)
        page = parts.store.list("")
        keys = [
            o.key
            for o in page.objects
            if o.key.endswith(BATCH_SUFFIX) and parse_object_key(o.key).stream == "telemetry"
        ]
        for key in keys:
            data = parts.store.get(key)
            table = read_batch(
                data, key_service=parts.keyring, public_keys=parts.registry.public_keys, expected_key=key
            ).table
            totals.add(table, len(data))
    note = (
        f"real agents: {devices} devices x 1 h, sync once an hour, {len(keys)} uploaded telemetry batches of "
        f"{totals.rows / max(1, len(keys)):,.0f} rows on average (the uploader cuts at syncs and hour spans, so "
        "batches are smaller than a device-hour; no target: the issue's unit is the device-hour batch)"
    )
    return totals.results("batch_size_sim_agents", note, targets=False)


def run(quick: bool) -> list[Result]:
    return _vectorised(20 if quick else 200) + _agents(1 if quick else 3)
