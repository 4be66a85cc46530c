"""Upload size of the batch format (v2) per row, against JSON lines (plain, gzip, zstd) and default Parquet.

Each device's hour of reference telemetry (~3,600 rows) becomes one batch, the unit the
uploader sends; every baseline encodes exactly the same rows in the same per-device units.
Our figure includes everything uploaded: header, manifest (with wrapped key), AES-GCM
tag and the Ed25519 signature. JSON lines write ``ts`` as integer milliseconds (the
compact choice, so the baseline is not inflated by ISO strings).

``batch_size_budget`` holds the encoding budget, under 4.4 B/row for the largest device-hour
batch (an absolute bound, like bench_agent_memory's: ``target`` is 4.4 B/row over that
device-hour's zstd JSON lines, so ``met`` holds exactly when the batch is under budget). The
spot-checked batches must decode bit for bit (NaN and -0.0 included), or no figure counts.
"""

from __future__ import annotations

import gzip
import io
import json
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from bench.harness import Result, reference_telemetry
from edge_sync.batch import read_batch, write_batch
from edge_sync.identity import DeviceIdentity
from edge_sync.keys import LocalKeyring
from edge_sync.streams import get_stream


def _device_tables(table: pa.Table) -> list[pa.Table]:
    """The reference table is device-major: cut it at device boundaries."""
    ids = table.column("device_id").to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    return [table.slice(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True)]


BUDGET_B_PER_ROW = 4.4


def _same_bits(a: pa.Table, b: pa.Table) -> bool:
    """Same schema and the same values bit for bit (float columns compared as their int64 bits)."""
    if not a.schema.equals(b.schema) or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        if pa.types.is_float64(x.type):
            bits = [np.asarray(c.fill_null(0.0).to_numpy()).view(np.int64) for c in (x, y)]
            if not (x.is_null().equals(y.is_null()) and np.array_equal(*bits)):
                return False
        elif not x.equals(y):
            return False
    return True


def _json_lines(table: pa.Table) -> bytes:
    rows = table.set_column(6, "ts", table.column("ts").cast(pa.int64())).to_pylist()
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()


def _parquet_default(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    return out.getvalue()


def run(quick: bool) -> list[Result]:
    devices = 20 if quick else 200
    spec = get_stream("telemetry")
    reference = reference_telemetry(devices=devices, hours=1.0).cast(spec.schema)
    totals = dict(ours=0, jsonl=0, gzip=0, zstd=0, parquet=0)
    zc = zstandard.ZstdCompressor(level=3)
    rows = 0
    worst = (0.0, 0.0)  # (ours, zstd JSON lines) in B/row of the device-hour with the largest batch per row
    with tempfile.TemporaryDirectory() as tmp:
        keyring = LocalKeyring(tmp)
        for i, table in enumerate(_device_tables(reference)):
            tenant, device = table["tenant_id"][0].as_py(), table["device_id"][0].as_py()
            identity = DeviceIdentity.generate(tenant, device)
            batch = write_batch(
                table,
                tenant_id=tenant,
                device_id=device,
                stream="telemetry",
                key_service=keyring,
                identity=identity,
            )
            if i < 3:  # spot-check losslessness: the figure only counts if the rows come back exactly
                back = read_batch(batch.data, key_service=keyring, public_keys=[identity.public_key_bytes()])
                assert _same_bits(back.table, table), "batch round trip changed the rows"
            jl = _json_lines(table)
            zstd = len(zc.compress(jl))
            rows += table.num_rows
            totals["ours"] += len(batch.data)
            totals["jsonl"] += len(jl)
            totals["gzip"] += len(gzip.compress(jl, compresslevel=6, mtime=0))
            totals["zstd"] += zstd
            worst = max(worst, (len(batch.data) / table.num_rows, zstd / table.num_rows))
            totals["parquet"] += len(_parquet_default(table))
    per_row = {k: v / rows for k, v in totals.items()}
    note = f"{devices} devices x 1 h, {rows:,} rows, one batch per device-hour (~{rows // devices:,} rows)"

    def result(name: str, baseline: str, key: str, target: float | None) -> Result:
        return Result(
            name=name,
            value=per_row["ours"],
            unit="B/row",
            baseline=baseline,
            baseline_value=per_row[key],
            target=target,
            higher_is_better=False,
            note=note,
        )

    return [
        result("batch_size_vs_jsonl", "JSON lines", "jsonl", 0.025),
        result("batch_size_vs_gzip_jsonl", "gzip JSON lines", "gzip", None),
        result("batch_size_vs_zstd_jsonl", "zstd JSON lines", "zstd", 0.4),
        result("batch_size_vs_parquet_zstd", "pyarrow Parquet+zstd default", "parquet", None),
        Result(
            name="batch_size_budget",
            value=worst[0],
            unit="B/row",
            baseline="zstd JSON lines of the same device-hour",
            baseline_value=worst[1],
            target=round(BUDGET_B_PER_ROW / worst[1], 4),
            higher_is_better=False,
            note=f"target: < {BUDGET_B_PER_ROW} B/row absolute for the largest device-hour batch; " + note,
        ),
    ]
