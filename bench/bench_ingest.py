"""Ingest-and-merge throughput: encrypted batches -> lakehouse, exactly once, vs plain dedupes.

10M reference telemetry rows (quick: 500k) cut into signed, encrypted device-hour batches
in a local object store, plus 10% of the rows re-delivered in re-cut overlapping batches
(as a device does after a crash). Timed end to end: list nothing, fetch, verify, decrypt,
decode, dedupe against the stage and the stored rows, append to DuckLake with the ledger.

Baselines over the same rows (duplicates included) already in plaintext Parquet:
(a) DuckDB ``QUALIFY row_number() OVER (PARTITION BY tenant, device, stream, seq)`` written
    back to Parquet,
(b) pandas ``sort_values`` + ``drop_duplicates`` written back to Parquet.
Rows per second, baselines best of 3; the ingest must reach >= 0.5x (a) and >= 2x (b).

Fairness (checked): each baseline does the whole job it claims, on exactly the rows we are
given: it reads every delivered row (the 10% re-deliveries included) from one Parquet file,
deduplicates by (tenant, device, stream, seq) and persists the result as Parquet (snappy,
like DuckLake's data files); its output has exactly the rows we store. Neither is given a
shortcut we lack: no pre-sorted input, no pre-built index, same process, same cores. What
they do not do is our extra work: fetch one object per batch, verify an Ed25519 signature,
unwrap a data key, AES-GCM decrypt, check hash, schema and ranges, and commit a ledger, the
devices table and a catalog transaction. Every contender is timed the same way: best of
three runs in this process, each of ours into a fresh lakehouse (a process's first run of
any of them pays for faulting in fresh memory: pandas' first run took 17.6 s, its next two
10.5 and 11.3). Ours decodes in the ingest's thread while the previous chunk commits in
another (``decode_workers`` 0, the default); one run with two decode worker processes is
reported in the note.

A third, informational row (no target) reads the issue's "pandas merge of the same rows"
end to end: pandas given the same encrypted objects, decoded and verified with our decoder
(``read_batch``, one thread), then ``sort_values`` + ``drop_duplicates`` + ``to_parquet``.
It shows how much of the gap to (b) is the decoding both would have to do.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import multiprocessing
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import Result, reference_telemetry
from edge_sync.batch import read_batch, write_batch
from edge_sync.identity import DeviceIdentity, LocalDeviceRegistry
from edge_sync.keys import LocalKeyring
from edge_sync.objectstore import LocalObjectStore
from edgeplat.arrow_memory import prefer_jemalloc
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.sync.env import SyncEnv, SyncSettings, local_decoder
from edgeplat.sync.ingest import ingest_objects

ROWS_PER_BATCH = 3_600
_LAKES = itertools.count()


def _encode(root: str, items: list[tuple[str, str, bytes, pa.Table]]) -> list[tuple[str, bytes]]:
    keys = LocalKeyring(Path(root) / "keys")
    out = []
    for tenant, device, pem, table in items:
        ident = DeviceIdentity(tenant, device, _load(pem))
        enc = write_batch(
            table,
            tenant_id=tenant,
            device_id=device,
            stream="telemetry",
            key_service=keys,
            identity=ident,
            created_ms=0,
        )
        out.append((enc.key, enc.data))
    return out


def _load(pem: bytes):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, password=None)


def _compact(table: pa.Table) -> pa.Table:
    """A copy of a slice that owns only its rows: a pickled slice carries its parent's whole buffers
    (54 MB per 3,600-row batch of the quick set), which made building take minutes."""
    return table.take(pa.array(np.arange(table.num_rows)))


def build(root: Path, rows: int) -> tuple[list[str], pa.Table, int]:
    """Upload the batches; returns the object keys and every delivered row (duplicates included)."""
    from cryptography.hazmat.primitives import serialization

    devices = max(1, rows // ROWS_PER_BATCH)
    hours = 1.0
    if devices > 1000:
        hours, devices = devices / 1000, 1000
    table = reference_telemetry(devices=devices, hours=hours, tenants=3, seed=1).slice(0, rows)
    table = table.sort_by([("tenant_id", "ascending"), ("device_id", "ascending"), ("seq", "ascending")])
    keys_dir, registry = root / "keys", LocalDeviceRegistry(root / "devices")
    for tenant in sorted(
        set(table.column("tenant_id").to_pylist())
    ):  # before the encoders race to create them
        LocalKeyring(keys_dir).generate_data_key(tenant)
    items, delivered = [], []
    tenants = table.column("tenant_id").to_numpy(zero_copy_only=False)
    device_ids = table.column("device_id").to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero((tenants[1:] != tenants[:-1]) | (device_ids[1:] != device_ids[:-1])) + 1
    rng = np.random.default_rng(3)
    for lo, hi in zip([0, *bounds], [*bounds, table.num_rows], strict=True):
        tenant, device = str(tenants[lo]), str(device_ids[lo])
        ident = DeviceIdentity.generate(tenant, device)
        registry.register(tenant, device, ident.public_key_bytes())
        pem = ident._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        dev = table.slice(lo, hi - lo)
        cuts = list(range(0, dev.num_rows, ROWS_PER_BATCH)) + [dev.num_rows]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            items.append((tenant, device, pem, _compact(dev.slice(a, b - a))))
            delivered.append(dev.slice(a, b - a))
        # ~10% of this device's rows again, in a re-cut batch straddling a cut (or its tail)
        n = max(1, dev.num_rows // 10)
        start = int(rng.integers(0, max(1, dev.num_rows - n)))
        items.append((tenant, device, pem, _compact(dev.slice(start, n))))
        delivered.append(dev.slice(start, n))
    ctx = multiprocessing.get_context("spawn")
    store = LocalObjectStore(root / "objects", fsync=False)
    chunks = [items[i::4] for i in range(4)]
    with cf.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        for part in pool.map(partial(_encode, str(root)), chunks):
            for key, data in part:
                store.put(key, data)
    keys = [o.key for o in _list_all(store)]
    return keys, pa.concat_tables(delivered), table.num_rows


def _list_all(store: LocalObjectStore):
    after = None
    while True:
        page = store.list("", after=after, limit=1000)
        yield from page.objects
        if page.next_after is None:
            return
        after = page.next_after


def time_ingest(root: Path, keys: list[str], workers: int) -> tuple[float, dict]:
    """One ingest of ``keys`` into a new lakehouse: (seconds, report)."""
    lake_dir = root / f"lake{next(_LAKES)}"
    lake = Lakehouse(
        LakehouseConfig(catalog=f"sqlite:{lake_dir}/catalog.sqlite", data_path=f"{lake_dir}/data/")
    )
    lake_dir.mkdir()
    lake.ensure_schema()
    env = SyncEnv(
        lake,
        LocalObjectStore(root / "objects"),
        LocalKeyring(root / "keys"),
        LocalDeviceRegistry(root / "devices"),
        settings=SyncSettings(decode_workers=workers, max_drift_ms=10**15),
        decoder=local_decoder(root / "keys", root / "devices"),
    )
    with lake.session() as con:
        t0 = time.perf_counter()
        report = ingest_objects(env, keys, con=con)
        elapsed = time.perf_counter() - t0
    return elapsed, report.as_dict()


def time_duckdb(parquet: Path, out: Path) -> float:
    con = duckdb.connect()
    t0 = time.perf_counter()
    con.execute(
        f"COPY (SELECT * FROM read_parquet('{parquet}') QUALIFY row_number() OVER "
        f"(PARTITION BY tenant_id, device_id, stream, seq ORDER BY hlc) = 1) TO '{out}' (FORMAT parquet)"
    )
    elapsed = time.perf_counter() - t0
    con.close()
    return elapsed


def time_pandas(parquet: Path, out: Path) -> float:
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_parquet(parquet)
    df = df.sort_values(["tenant_id", "device_id", "stream", "seq", "hlc"]).drop_duplicates(
        ["tenant_id", "device_id", "stream", "seq"], keep="first"
    )
    df.to_parquet(out)
    return time.perf_counter() - t0


def time_pandas_decoded(root: Path, keys: list[str], out: Path) -> float:
    """pandas given the encrypted objects: fetch, verify and decode each with our decoder, then dedupe."""

    store, keyring, registry = (
        LocalObjectStore(root / "objects"),
        LocalKeyring(root / "keys"),
        LocalDeviceRegistry(root / "devices"),
    )
    t0 = time.perf_counter()
    tables = []
    for key in keys:
        decoded = read_batch(
            store.get(key), key_service=keyring, public_keys=registry.public_keys, expected_key=key
        )
        tables.append(decoded.table)
    df = pa.concat_tables(tables).to_pandas()
    df = df.sort_values(["tenant_id", "device_id", "stream", "seq", "hlc"]).drop_duplicates(
        ["tenant_id", "device_id", "stream", "seq"], keep="first"
    )
    df.to_parquet(out)
    return time.perf_counter() - t0


def run(quick: bool) -> list[Result]:
    prefer_jemalloc()  # the pool the ingest uses, for every contender
    rows = 500_000 if quick else 10_000_000
    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        t0 = time.perf_counter()
        keys, delivered, unique = build(root, rows)
        print(f"built {len(keys)} objects in {time.perf_counter() - t0:.1f} s", flush=True)
        parquet = root / "plain.parquet"
        pq.write_table(delivered, parquet, compression="zstd")
        # every contender: best of 3 (module docstring)
        t_duck = min(time_duckdb(parquet, root / "duck.parquet") for _ in range(3))
        t_pandas = min(time_pandas(parquet, root / "pandas.parquet") for _ in range(3))
        t_pandas_dec = time_pandas_decoded(root, keys, root / "pandas-decoded.parquet")
        print(
            f"duckdb {t_duck:.2f} s, pandas {t_pandas:.2f} s, pandas from the objects {t_pandas_dec:.2f} s",
            flush=True,
        )
        runs = []
        for attempt in range(3):
            runs.append(time_ingest(root, keys, 0))
            print(f"ingest, run {attempt + 1}: {runs[-1][0]:.1f} s", flush=True)
        for _, report in runs:
            assert report["rows_new"] == unique, report  # exactly once, or the figure means nothing
        t_ours = min(t for t, _ in runs)
        t_pool, pool_report = time_ingest(root, keys, 2)
        assert pool_report["rows_new"] == unique, pool_report
        print(f"ingest with 2 decode worker processes: {t_pool:.1f} s", flush=True)
        n = delivered.num_rows
        note = (
            f"{n:,} rows delivered ({n - unique:,} re-delivered) in {len(keys)} objects; "
            f"ours {', '.join(f'{t:.1f}' for t, _ in runs)} s, with 2 decode worker processes {t_pool:.1f} s"
        )
        return [
            Result(
                "ingest_vs_duckdb_qualify",
                n / t_ours,
                "rows/s",
                "DuckDB QUALIFY dedupe of plaintext Parquet",
                n / t_duck,
                0.5,
                note=note,
            ),
            Result(
                "ingest_vs_pandas_drop_duplicates",
                n / t_ours,
                "rows/s",
                "pandas sort_values + drop_duplicates of plaintext Parquet",
                n / t_pandas,
                2.0,
                note=note,
            ),
            Result(
                "ingest_vs_pandas_decoding_the_objects",
                n / t_ours,
                "rows/s",
                "informational: pandas fed the same encrypted objects through our decoder (1 thread), "
                "then sort_values + drop_duplicates",
                n / t_pandas_dec,
                None,
                note=note,
            ),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
