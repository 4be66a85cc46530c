"""Eviction for the device cache: which rows go when the size bound is reached, and the record of it.

Order, when the bound is reached (see ``DeviceCache`` for when that is checked):

1. expired rows (``ts`` older than the stream's TTL; alerts and state never expire);
2. then by priority, lowest first (logs, telemetry, health, state, alerts), oldest seq first,
   down to ``LOW_WATER`` of the bound so a full cache does not evict a few rows on every flush.
   A stream is only touched once every lower-priority stream is empty, so an unsent alert
   survives while any lower class still has rows.

Every eviction is written, in the same transaction as the delete, as contiguous seq ranges
(``count == last_seq - first_seq + 1``) with the reason ``ttl`` or ``size``. The uploader
reports unreported ranges in a batch manifest and confirms them only after the upload
succeeded; a crash in between re-sends the same ranges, which the central side dedupes.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_sync.cache_store import CacheStore, table_name
from edge_sync.streams import STREAMS

LOW_WATER = 0.9  # evict down to this fraction of max_bytes

# lowest priority first: the order in which size eviction takes streams
EVICTION_ORDER: tuple[str, ...] = tuple(sorted(STREAMS, key=lambda n: STREAMS[n].priority))


@dataclass(frozen=True)
class Eviction:
    """One contiguous evicted seq range of one stream."""

    stream: str
    first_seq: int
    last_seq: int
    count: int
    reason: str
    nbytes: int


def evict_rows(
    store: CacheStore, stream: str, where: str, params: list, reason: str, now_ms: int
) -> list[Eviction]:
    """Delete the rows of ``stream`` matching ``where`` and record them as evicted ranges."""
    con, t = store.con, table_name(stream)
    con.execute("BEGIN")
    try:
        ranges = con.execute(
            f"SELECT min(seq), max(seq), count(*), sum(nbytes) FROM ("
            f"  SELECT seq, nbytes, seq - row_number() OVER (ORDER BY seq) AS grp FROM {t} WHERE {where}"
            f") GROUP BY grp ORDER BY 1",
            params,
        ).fetchall()
        if not ranges:
            con.execute("COMMIT")
            return []
        con.execute(f"DELETE FROM {t} WHERE {where}", params)
        next_id = store.next_eviction_id()
        con.executemany(
            "INSERT INTO c.evictions VALUES (?, ?, ?, ?, ?, ?, ?, false)",
            [[next_id + i, stream, lo, hi, n, reason, now_ms] for i, (lo, hi, n, _) in enumerate(ranges)],
        )
        con.execute("COMMIT")
    except BaseException:
        store.rollback()
        raise
    store.deleted(sum(int(n) for _, _, n, _ in ranges))
    return [Eviction(stream, int(lo), int(hi), int(n), reason, int(b)) for lo, hi, n, b in ranges]


def evict_expired(store: CacheStore, ttls: dict[str, int | None], now_ms: int) -> list[Eviction]:
    """Evict every row older than its stream's TTL (by device wall time ``ts``)."""
    out: list[Eviction] = []
    for stream in EVICTION_ORDER:
        ttl = ttls.get(stream)
        if ttl is not None:
            out += evict_rows(store, stream, "ts < ?", [now_ms - ttl * 1000], "ttl", now_ms)
    return out


def evict_oldest(store: CacheStore, stream: str, need_bytes: int, now_ms: int) -> list[Eviction]:
    """Evict the oldest rows of ``stream`` until at least ``need_bytes`` are freed (or it is empty)."""
    cutoff = store.con.execute(
        f"SELECT seq FROM (SELECT seq, sum(nbytes) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS freed "
        f"FROM {table_name(stream)}) WHERE freed >= ? ORDER BY seq LIMIT 1",
        [need_bytes],
    ).fetchone()
    if cutoff is None:
        return evict_rows(store, stream, "true", [], "size", now_ms)
    return evict_rows(store, stream, "seq <= ?", [cutoff[0]], "size", now_ms)


def evict_to(
    store: CacheStore, usage_bytes: dict[str, int], target_bytes: int, now_ms: int
) -> list[Eviction]:
    """Evict by priority then age until the accounted total is at most ``target_bytes``."""
    out: list[Eviction] = []
    total = sum(usage_bytes.values())
    for stream in EVICTION_ORDER:
        need = total - target_bytes
        if need <= 0:
            break
        if usage_bytes.get(stream, 0) == 0:
            continue
        got = evict_oldest(store, stream, need, now_ms)
        total -= sum(e.nbytes for e in got)
        out += got
    return out
