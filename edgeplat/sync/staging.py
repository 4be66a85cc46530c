"""One commit's accepted rows, staged per stream, replay-checked, deduplicated and appended.

The ingest (:mod:`edgeplat.sync.ingest`) stages the accepted objects of a chunk as one
Arrow table per stream (strings dictionary-encoded as the batches store them, the ``day``
partition key computed from ``ts``). Rows whose seqs no other staged batch or ledger range
overlaps are appended as they are; only the *contested* ones are fingerprinted and settled
by :mod:`edgeplat.sync.contested` (replays quarantined, identical copies dropped).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from edge_sync.streams import STREAMS
from edgeplat.lakehouse import sql_list
from edgeplat.lakehouse_schema import DAY_COLUMN, TABLES, utc_day
from edgeplat.sync.contested import settle
from edgeplat.sync.decoding import Accepted, DecodedGroup

DAY = DAY_COLUMN[0]
_ids = itertools.count()


@dataclass
class Stage:
    """One stream's accepted batches of a chunk: rows with ``_bidx``/``batch_key``, and their ranges."""

    stream: str
    rows: pa.Table
    ranges: pa.Table
    keys: list[str]  # _bidx -> object key


def stage_streams(groups: Sequence[DecodedGroup], accepted: Sequence[Accepted]) -> dict[str, Stage]:
    """The ``accepted`` objects' rows, one stage per stream, objects in key order (groups come in key order)."""
    wanted = {a.object_key: a.manifest for a in accepted}
    out = {}
    for stream in sorted({s for g in groups for s in g.streams}):
        parts = [g.streams[stream] for g in groups if stream in g.streams]
        keys = [k for p in parts for k in p.keys]
        counts = np.concatenate([p.counts for p in parts])
        rows = pa.concat_tables([p.table for p in parts])
        kept = np.array([k in wanted for k in keys], dtype=bool)
        if not kept.all():  # settled by another run since they were decoded
            rows = rows.filter(pa.array(np.repeat(kept, counts)))
            keys, counts = [k for k, keep in zip(keys, kept, strict=True) if keep], counts[kept]
        if not keys:
            continue
        idx = pa.array(np.repeat(np.arange(len(keys), dtype=np.int32), counts), pa.int32())
        rows = rows.append_column("_bidx", idx).append_column(
            "batch_key", pa.DictionaryArray.from_arrays(idx, pa.array(keys, pa.string()))
        )
        if DAY in TABLES[STREAMS[stream].table].partitioned_by:  # computed here, not by DuckLake (ICU)
            rows = rows.append_column(DAY, utc_day(rows.column("ts")))
        m = [wanted[k] for k in keys]
        ranges = pa.table(
            {
                "_bidx": pa.array(range(len(keys)), pa.int32()),
                "tenant_id": [x.tenant_id for x in m],
                "device_id": [x.device_id for x in m],
                "stream": [x.stream for x in m],
                "first_seq": pa.array([x.first_seq for x in m], pa.int64()),
                "last_seq": pa.array([x.last_seq for x in m], pa.int64()),
            }
        )
        out[stream] = Stage(stream, rows, ranges, keys)
    return out


@dataclass
class StreamResult:
    """What :func:`stream_step` did to a stage: batches found replaying other rows, new rows per batch."""

    bad: dict[int, str] = field(default_factory=dict)  # _bidx -> replay detail
    new_by_bidx: dict[int, int] = field(default_factory=dict)


def stream_step(
    con: duckdb.DuckDBPyConnection, st: Stage, append: Callable[[str, list[pa.Table]], None]
) -> StreamResult:
    """Replay check, dedupe and append (``append(table, parts)``) of one stream's staged rows.

    Only *contested* rows (seqs inside the overlap of two staged batches' ranges, or of a
    staged batch and a ledger range) can be duplicates or replays: they take the
    fingerprint path; every other row is appended as is.
    """
    spec = STREAMS[st.stream]
    table = spec.table
    tag = f"_s{next(_ids)}"
    stg, rng, ct = f"{tag}_stg", f"{tag}_rng", f"{tag}_ct"
    views = [stg, rng]
    con.register(stg, st.rows)
    con.register(rng, st.ranges)
    res = StreamResult()
    try:
        tenants = sql_list(st.ranges.column("tenant_id").to_pylist())
        same3 = "a.tenant_id = b.tenant_id AND a.device_id = b.device_id AND a.stream = b.stream"
        overlap = "a.first_seq <= b.last_seq AND b.first_seq <= a.last_seq"
        span = "greatest(a.first_seq, b.first_seq) AS lo, least(a.last_seq, b.last_seq) AS hi"
        contested = con.execute(
            f"""
            SELECT a._bidx, a.tenant_id, a.device_id, a.stream, {span}, FALSE AS stored
            FROM {rng} a JOIN {rng} b ON {same3} AND a._bidx <> b._bidx AND {overlap}
            UNION ALL
            SELECT a._bidx, a.tenant_id, a.device_id, a.stream, {span}, TRUE AS stored
            FROM {rng} a JOIN (SELECT * FROM batches WHERE tenant_id IN ({tenants})) b ON {same3} AND {overlap}
            """
        ).to_arrow_table()
        counts = np.bincount(st.rows.column("_bidx").to_numpy(), minlength=len(st.keys))
        if contested.num_rows == 0:
            append(table, [st.rows])
            res.new_by_bidx = {i: int(n) for i, n in enumerate(counts)}
            return res

        con.register(ct, contested)
        views.append(ct)
        # Each batch's rows are one contiguous slice of the stage (see stage_streams): mark the contested
        # seqs slice by slice in numpy rather than probing the ranges row by row in SQL.
        offsets = np.concatenate([[0], np.cumsum(counts)])
        seqs = st.rows.column("seq").to_numpy()
        mask = np.zeros(st.rows.num_rows, dtype=bool)
        for b, lo, hi in zip(*(contested.column(c).to_numpy() for c in ("_bidx", "lo", "hi")), strict=True):
            part = slice(offsets[b], offsets[b + 1])
            mask[part] |= (seqs[part] >= lo) & (seqs[part] <= hi)
        uncontested, contested_rows = _split_runs(st.rows, mask)
        slow_in = f"{tag}_sin"
        con.register(slow_in, contested_rows.combine_chunks())  # one chunk: DuckDB scans it faster
        views.append(slow_in)
        fp_cols = ", ".join(["hlc", "node_id", "epoch_ms(ts)", *(f'"{c}"' for c in spec.payload_names)])
        fp_stored = ", ".join(
            ["t.hlc", "t.node_id", "epoch_ms(t.ts)", *(f't."{c}"' for c in spec.payload_names)]
        )
        fps = (
            con.execute(f"SELECT hash({fp_cols}) AS fp FROM {slow_in}").to_arrow_table().column(0).to_numpy()
        )
        # (tenant, device, stream) of each batch as a small integer: the contested rows' keys
        names = list(
            zip(*(st.ranges.column(c).to_pylist() for c in ("tenant_id", "device_id", "stream")), strict=True)
        )
        dev_ids = {name: i for i, name in enumerate(dict.fromkeys(names))}
        dev_of_batch = np.array([dev_ids[name] for name in names], dtype=np.int64)
        stored = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64))  # (dev, seq, fp)
        if any(contested.column("stored").to_pylist()):
            stored = _stored_fingerprints(con, table, fp_stored, ct, tenants, dev_ids)
        bidx = contested_rows.column("_bidx").to_numpy()
        settled = settle(bidx, dev_of_batch[bidx], contested_rows.column("seq").to_numpy(), fps, *stored)
        res.bad = settled.bad
        kept_rows = contested_rows.take(pa.array(settled.keep))
        # one append for uncontested and deduplicated rows: one set of data files per commit
        append(table, [_without_batches(uncontested, res.bad), kept_rows])
        slow_counts = np.bincount(bidx, minlength=len(st.keys))
        new = np.bincount(bidx[settled.keep], minlength=len(st.keys))
        for i in range(len(st.keys)):
            if i not in res.bad:
                res.new_by_bidx[i] = int(counts[i] - slow_counts[i] + new[i])
        return res
    finally:
        for v in views:
            con.unregister(v)


def _stored_fingerprints(
    con: duckdb.DuckDBPyConnection,
    table: str,
    fp_stored: str,
    contested_view: str,
    tenants: str,
    dev_ids: dict[tuple[str, str, str], int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dev, seq, fingerprint) of the stored rows in the contested ranges of stored batches."""
    rows = con.execute(
        f"""
        SELECT t.tenant_id, t.device_id, t.stream, t.seq, hash({fp_stored}) AS fp
        FROM "{table}" t JOIN (SELECT tenant_id, device_id, stream, min(lo) AS lo, max(hi) AS hi
                               FROM {contested_view} WHERE stored GROUP BY ALL) r
          ON t.tenant_id = r.tenant_id AND t.device_id = r.device_id AND t.stream = r.stream
         AND t.seq BETWEEN r.lo AND r.hi
        WHERE t.tenant_id IN ({tenants})
        """
    ).to_arrow_table()
    # rows come grouped by device: map each distinct (tenant, device, stream) once
    names = zip(*(rows.column(c).to_pylist() for c in ("tenant_id", "device_id", "stream")), strict=True)
    dev = np.fromiter((dev_ids[name] for name in names), dtype=np.int64, count=rows.num_rows)
    return dev, rows.column("seq").to_numpy(), rows.column("fp").to_numpy()


def _split_runs(table: pa.Table, mask: np.ndarray) -> tuple[pa.Table, pa.Table]:
    """(rows where ``mask`` is false, rows where it is true), as zero-copy slices.

    Contested rows come in runs (a seq range of a batch, and batches are in seq order), so
    slicing costs a few slices per contested batch, where ``Table.filter`` copied every column
    of the whole stage (a thousand small chunks).
    """
    edges = np.flatnonzero(np.diff(mask.view(np.int8))) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(mask)]])
    parts: tuple[list[pa.Table], list[pa.Table]] = ([], [])
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if b > a:
            parts[int(mask[a])].append(table.slice(a, b - a))
    empty = table.schema.empty_table()
    return tuple(pa.concat_tables(p) if p else empty for p in parts)  # type: ignore[return-value]


def _without_batches(rows: pa.Table, bad: Iterable[int]) -> pa.Table:
    bad = list(bad)
    if not bad:
        return rows
    keep = ~np.isin(rows.column("_bidx").to_numpy(), np.array(bad, dtype=np.int32))
    return rows.filter(pa.array(keep))


def accepted_rows(stage: Stage, bad: Iterable[str]) -> pa.Table:
    bad = set(bad)
    bad_idx = [i for i, k in enumerate(stage.keys) if k in bad]
    if not bad_idx:
        return stage.rows
    mask = ~np.isin(stage.rows.column("_bidx").to_numpy(), np.array(bad_idx, dtype=np.int32))
    return stage.rows.filter(pa.array(mask))
