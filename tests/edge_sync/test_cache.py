"""The device cache: encryption, recording, delivery, eviction order, disk-full, state edits."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from edge_sync.cache import CacheFullError, CacheKeyError, DeviceCache, Durability
from edge_sync.hlc import pack
from edge_sync.streams import STREAMS

KEY = bytes(range(32))
NOW = 1_800_000_000_000  # a fixed device wall time (ms)
DAY_MS = 86_400_000


def open_cache(path: Path, **kw) -> DeviceCache:
    kw.setdefault("wall_ms", lambda: NOW)
    return DeviceCache.open(path, tenant_id="t1", device_id="dev-1", key=kw.pop("key", KEY), **kw)


def test_record_pending_ack_roundtrip(tmp_path):
    with open_cache(tmp_path / "c.db") as c:
        got = [c.record("telemetry", {"metric": "cpu", "value": float(i)}) for i in range(5)]
        assert [s for s, _ in got] == [1, 2, 3, 4, 5]
        hlcs = [h for _, h in got]
        assert hlcs == sorted(hlcs) and len(set(hlcs)) == 5
        t = c.pending("telemetry")
        assert t.schema == STREAMS["telemetry"].schema
        assert t["seq"].to_pylist() == [1, 2, 3, 4, 5]
        assert t["hlc"].to_pylist() == hlcs
        assert set(t["node_id"].to_pylist()) == {"dev-1"} and set(t["tenant_id"].to_pylist()) == {"t1"}
        assert t["ts"][0].as_py() == datetime.fromtimestamp(NOW / 1000, UTC)
        assert c.pending("telemetry", max_rows=2)["seq"].to_pylist() == [1, 2]
        assert c.pending("telemetry", after_seq=3)["seq"].to_pylist() == [4, 5]
        assert c.ack("telemetry", 3) == 3
        assert c.ack("telemetry", 2) == 3  # never backwards
        assert c.watermark("telemetry") == 3
        assert c.pending("telemetry")["seq"].to_pylist() == [4, 5]
        with pytest.raises(ValueError, match="only seqs up to 5"):
            c.ack("telemetry", 6)
        assert c.stats()["streams"]["telemetry"]["queue_depth"] == 2


def test_record_batch_takes_a_seq_range_and_optional_ts(tmp_path):
    with open_cache(tmp_path / "c.db") as c:
        c.record("logs", {"level": "info", "message": "single"})
        ts = pa.array([NOW - 5, NOW - 4], pa.timestamp("ms", tz="UTC"))
        assert c.record_batch("logs", pa.table({"message": ["a", "b"], "ts": ts})) == (2, 3)
        assert c.record_batch("logs", pa.table({"message": pa.array([], pa.string())})) == (4, 3)
        t = c.pending("logs")
        assert t["seq"].to_pylist() == [1, 2, 3]
        assert t["message"].to_pylist() == ["single", "a", "b"]
        assert t["level"].to_pylist() == ["info", None, None]
        assert t["ts"].cast(pa.int64()).to_pylist() == [NOW, NOW - 5, NOW - 4]
        with pytest.raises(ValueError, match="unknown column"):
            c.record_batch("logs", pa.table({"seq": [1]}))
        assert c.record("logs", {"message": "x"})[0] == 4  # the bad batch took no seq


def test_bad_input_is_named(tmp_path):
    with open_cache(tmp_path / "c.db") as c:
        with pytest.raises(ValueError, match="unknown stream 'nope'"):
            c.record("nope", {})
        with pytest.raises(ValueError, match="no column"):
            c.record("telemetry", {"metrik": "cpu"})
        with pytest.raises(ValueError, match="set by the cache"):
            c.record("telemetry", {"seq": 3})
        with pytest.raises(ValueError, match="telemetry.value must be float"):
            c.record("telemetry", {"value": "high"})
        with pytest.raises(ValueError, match="put"):
            c.record("state", {"namespace": "a"})
        with pytest.raises(ValueError, match="time zone"):
            c.record("logs", {"ts": datetime(2026, 1, 1)})
        assert c.record("telemetry", {"value": 1})[0] == 1  # rejected rows took no seq
    with pytest.raises(ValueError, match="never expires"):
        open_cache(tmp_path / "d.db", ttl_overrides={"alerts": 60})
    with pytest.raises(ValueError, match="belongs to tenant 't1' device 'dev-1'"):
        DeviceCache.open(tmp_path / "c.db", tenant_id="t1", device_id="dev-2", key=KEY)


def test_wrong_key_is_a_clear_error_and_file_is_encrypted(tmp_path):
    path = tmp_path / "c.db"
    marker = "PLAINTEXT-MARKER-7f3a9c"
    c = open_cache(path)
    c.record("alerts", {"severity": "high", "code": "E1", "message": marker})
    c.put("cfg", "k", {"note": marker})
    files = [p for p in tmp_path.iterdir()]
    assert all(marker.encode() not in p.read_bytes() for p in files)  # WAL included, before close
    c.close()
    assert path.exists()
    assert all(marker.encode() not in p.read_bytes() for p in tmp_path.iterdir())
    with pytest.raises(CacheKeyError, match="does not match") as err:
        open_cache(path, key=bytes(32))
    assert str(path) in str(err.value)
    with pytest.raises(CacheKeyError, match="32 bytes"):
        open_cache(path, key=KEY.hex().encode())
    plain = tmp_path / "plain.db"
    duckdb.connect(str(plain)).execute("CREATE TABLE x (i INT)").close()
    with pytest.raises(CacheKeyError, match="not encrypted"):
        open_cache(plain)
    with open_cache(path) as c:  # the right key still opens it
        assert c.pending("alerts")["message"].to_pylist() == [marker]
        assert c.get_state("cfg", "k") == {"note": marker}


def test_reopen_continues_seq_and_hlc_even_if_wall_clock_went_back(tmp_path):
    path = tmp_path / "c.db"
    with open_cache(path) as c:
        c.record("telemetry", {"value": 1.0})
        _, h1 = c.record("alerts", {"code": "A"})
        c.record_batch("logs", pa.table({"message": ["a", "b"]}))
    with open_cache(path, wall_ms=lambda: NOW - DAY_MS) as c:
        s, h2 = c.record("alerts", {"code": "B"})
        assert s == 2 and h2 > h1
        assert c.record("telemetry", {"value": 2.0})[0] == 2
        assert c.record_batch("logs", pa.table({"message": ["c"]})) == (3, 3)


def fill(c: DeviceCache, stream: str, n: int, ts: int | None = None) -> None:
    payload = {
        "telemetry": {"metric": "m" * 20},
        "logs": {"message": "x" * 20},
        "health": {"version": "v" * 20},
        "alerts": {"message": "a" * 20},
    }[stream]
    rows = [dict(payload, ts=ts) if ts is not None else payload for _ in range(n)]
    if stream == "alerts":
        for r in rows:
            c.record(stream, r)
    else:
        c.record_batch(stream, pa.Table.from_pylist(rows))


def test_eviction_goes_logs_then_telemetry_then_health_and_spares_alerts(tmp_path):
    with open_cache(tmp_path / "c.db") as c:
        for s in ("alerts", "health", "telemetry", "logs"):
            fill(c, s, 10)
        b = {s: c.stats()["streams"][s]["bytes"] for s in STREAMS}
        total = c.size_bytes()
        # just over the bound: only (part of) logs goes
        c.max_bytes = total - 1
        c.flush()
        ev = c.evictions()
        assert ev["logs"]["size"] > 0 and ev["telemetry"]["total"] == ev["health"]["total"] == 0
        # room only for alerts and half of health: logs and telemetry all go, health partly
        c.max_bytes = int((b["alerts"] + b["health"] // 2) / 0.9)
        c.flush()
        ev = c.evictions()
        assert ev["logs"]["total"] == 10 and ev["telemetry"]["total"] == 10
        assert 0 < ev["health"]["total"] < 10
        assert ev["alerts"]["total"] == 0
        # the oldest went first: what is left of health is its newest rows
        assert c.pending("health")["seq"].to_pylist() == list(
            range(11 - c.stats()["streams"]["health"]["queue_depth"], 11)
        )
        # alerts go only when nothing lower is left
        c.max_bytes = 1
        c.flush()
        ev = c.evictions()
        assert ev["health"]["total"] == 10 and ev["alerts"]["total"] == 10
        report = c.eviction_report("logs")
        assert sum(r["count"] for r in report) == 10
        assert all(r["count"] == r["last_seq"] - r["first_seq"] + 1 and r["reason"] == "size" for r in report)


def test_expired_rows_go_first(tmp_path):
    with open_cache(tmp_path / "c.db") as c:
        fill(c, "telemetry", 10, ts=NOW - 15 * DAY_MS)  # past telemetry's 14-day TTL
        fill(c, "telemetry", 5)
        fill(c, "logs", 10)  # fresh, lower priority
        fill(c, "alerts", 2, ts=NOW - 400 * DAY_MS)  # alerts never expire
        c.max_bytes = c.size_bytes() - 1
        c.flush()
        ev = c.evictions()
        assert ev["telemetry"] == {"ttl": 10, "size": 0, "total": 10}
        assert ev["logs"]["total"] == 0 and ev["alerts"]["total"] == 0
        assert c.eviction_report("telemetry")[0] | {"id": 0, "evicted_ms": 0} == {
            "id": 0,
            "first_seq": 1,
            "last_seq": 10,
            "count": 10,
            "reason": "ttl",
            "evicted_ms": 0,
        }
    # an override shortens a TTL, and evict_expired works without size pressure
    with open_cache(tmp_path / "c.db", ttl_overrides={"logs": 1}, wall_ms=lambda: NOW + 2000) as c:
        assert c.evict_expired() == 10
        assert c.evictions()["logs"]["ttl"] == 10


def test_eviction_report_is_resent_until_confirmed(tmp_path):
    path = tmp_path / "c.db"
    with open_cache(path) as c:
        fill(c, "logs", 10)
        c.max_bytes = 1
        c.flush()
        report = c.eviction_report("logs")
        assert [(r["first_seq"], r["last_seq"], r["count"]) for r in report] == [(1, 10, 10)]
    with open_cache(path) as c:  # "crash" between upload and confirmation: same report again
        assert c.eviction_report("logs") == report
        assert c.mark_evictions_reported("logs", report[-1]["id"]) == 1
        assert c.eviction_report("logs") == []
        assert c.evictions()["logs"]["size"] == 10  # still queryable


class _FullOnce:
    def __init__(self, cache: DeviceCache, exc: Exception, times: int = 1) -> None:
        self.original, self.exc, self.left, self.calls = cache._write, exc, times, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.left:
            self.left -= 1
            raise self.exc
        return self.original(*args, **kwargs)


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        duckdb.IOException('Could not write file "c.db.wal": No space left on device'),
    ],
)
def test_disk_full_evicts_then_retries(tmp_path, monkeypatch, exc):
    with open_cache(tmp_path / "c.db") as c:
        fill(c, "logs", 20)
        fill(c, "telemetry", 5)
        hook = _FullOnce(c, exc)
        monkeypatch.setattr(c, "_write", hook)
        seq, _ = c.record("alerts", {"code": "DISK"})
        assert hook.calls == 2
        assert c.pending("alerts")["code"].to_pylist() == ["DISK"] and seq == 1
        ev = c.evictions()
        assert ev["logs"]["size"] > 0 and ev["telemetry"]["total"] == 0 and ev["alerts"]["total"] == 0


def test_disk_full_with_nothing_left_keeps_rows_buffered(tmp_path, monkeypatch):
    with open_cache(tmp_path / "c.db") as c:
        original = c._write
        monkeypatch.setattr(c, "_write", _FullOnce(c, OSError(errno.ENOSPC, "full"), times=100))
        with pytest.raises(CacheFullError, match="nothing is left to evict"):
            c.record("alerts", {"code": "A"})
        assert c.stats()["streams"]["alerts"]["buffered"] == 1
        monkeypatch.setattr(c, "_write", original)  # space came back
        assert c.pending("alerts")["seq"].to_pylist() == [1]


def test_other_write_errors_are_not_swallowed(tmp_path, monkeypatch):
    with open_cache(tmp_path / "c.db") as c:
        monkeypatch.setattr(c, "_write", _FullOnce(c, OSError(errno.EACCES, "denied")))
        with pytest.raises(OSError, match="denied"):
            c.record("alerts", {"code": "A"})
        assert c.evictions()["alerts"]["total"] == 0


def test_put_state_and_replace_state_rows(tmp_path):
    path = tmp_path / "c.db"
    with open_cache(path) as c:
        h1 = c.put("cfg", "pump-1", {"rate": 5, "mode": {"auto": True}})
        assert c.get_state("cfg", "pump-1") == {"rate": 5, "mode": {"auto": True}}
        t = c.pending("state")
        assert t["seq"].to_pylist() == [1, 2]
        assert set(t["origin"].to_pylist()) == {"device"} and set(t["hlc"].to_pylist()) == {h1}
        central = pack(NOW + 60_000, 0)  # a central edit a minute ahead of the device
        c.replace_state_rows(
            pa.table(
                {
                    "namespace": ["cfg", "cfg", "cfg"],
                    "key": ["pump-1"] * 3,
                    "field": ["rate", "rate", "new"],
                    "value": ["6", "7", '"x"'],
                    "hlc": [central, central, central],
                    "node_id": ["central"] * 3,
                    "origin": ["central"] * 3,
                }
            )
        )
        assert c.get_state("cfg", "pump-1") == {"rate": 7, "mode": {"auto": True}, "new": "x"}  # last wins
        assert c.pending("state").num_rows == 2  # downlink rows are not uploaded again
        h2 = c.put("cfg", "pump-1", {"rate": 8})
        assert h2 > central  # a later local edit beats the central edit it saw
        st = c.state_table()
        assert st.column_names == ["namespace", "key", "field", "value", "hlc", "node_id", "origin"]
        rate = [r for r in st.to_pylist() if r["field"] == "rate"][0]
        assert rate == {
            "namespace": "cfg",
            "key": "pump-1",
            "field": "rate",
            "value": "8",
            "hlc": h2,
            "node_id": "dev-1",
            "origin": "device",
        }
        with pytest.raises(ValueError, match="JSON"):
            c.put("cfg", "pump-1", {"bad": object()})
    with open_cache(path) as c:
        assert c.get_state("cfg", "pump-1")["rate"] == 8
        assert c.get_state("cfg", "other") == {}


def test_observe_hlc_is_persisted(tmp_path):
    path = tmp_path / "c.db"
    future = pack(NOW + DAY_MS, 7)
    with open_cache(path) as c:
        assert c.observe_hlc(future) > future
    with open_cache(path) as c:
        assert c.record("logs", {"message": "after"})[1] > future


def test_durability_window_by_rows_and_timer(tmp_path):
    with open_cache(tmp_path / "c.db", durability=Durability(max_rows=3, max_ms=3_600_000)) as c:
        c.record("logs", {"message": "1"})
        c.record("telemetry", {"value": 1.0})
        assert c.stats()["streams"]["logs"]["buffered"] == 1
        c.record("logs", {"message": "2"})  # third buffered row: the window is full
        assert c.stats()["streams"]["logs"]["buffered"] == 0
    with open_cache(tmp_path / "d.db", durability=Durability(max_rows=1000, max_ms=20)) as c:
        c.record("logs", {"message": "1"})
        deadline = time.monotonic() + 10
        while c.stats()["streams"]["logs"]["buffered"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.stats()["streams"]["logs"]["buffered"] == 0  # the timer flushed an idle window
        assert c.stats()["last_flush_ms"] == NOW
    with pytest.raises(ValueError, match="max_rows"):
        Durability(max_rows=0)


CRASH = textwrap.dedent(
    """
    import os, sys
    from edge_sync.cache import DeviceCache, Durability
    c = DeviceCache.open(sys.argv[1], tenant_id="t1", device_id="dev-1", key=bytes(range(32)),
                         durability=Durability(max_rows=100, max_ms=3_600_000))
    for i in range(250):
        c.record("telemetry", {"value": float(i)})
    c.record("alerts", {"code": "LAST"})
    for i in range(5):
        c.record("logs", {"message": str(i)})
    os._exit(0)  # a crash: no close, no flush
    """
)


def test_crash_loses_at_most_the_durability_window(tmp_path):
    path = tmp_path / "c.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([sys.executable, "-c", CRASH, str(path)], check=True, env=env, timeout=60)
    with open_cache(path) as c:
        tele = c.pending("telemetry")["seq"].to_pylist()
        # telemetry 201..250 were still buffered when the alert flushed everything: all 250 kept
        assert tele == list(range(1, 251))
        assert c.pending("alerts")["code"].to_pylist() == ["LAST"]
        assert c.pending("logs").num_rows == 0  # the 5 logs after the alert were in the window
        assert c.record("logs", {"message": "again"})[0] == 1  # their seqs are issued again: no gap


def test_pending_reads_across_eviction_holes(tmp_path):
    # TTL eviction of every other row leaves holes in the seq range: pending() must still
    # return the next max_rows rows in seq order, not stop at the first hole.
    with open_cache(tmp_path / "c.db") as c:
        old, new = NOW - 30 * DAY_MS, NOW
        rows = [{"metric": "m", "value": float(i), "ts": old if i % 2 else new} for i in range(1, 21)]
        assert c.record_batch("telemetry", pa.Table.from_pylist(rows)) == (1, 20)
        assert c.evict_expired() == 10
        assert c.pending("telemetry", max_rows=3)["seq"].to_pylist() == [2, 4, 6]
        assert c.pending("telemetry", after_seq=6, max_rows=2)["seq"].to_pylist() == [8, 10]
        assert c.pending("telemetry")["seq"].to_pylist() == list(range(2, 21, 2))
        assert c.ack("telemetry", 10) == 10
        assert c.pending("telemetry", max_rows=4)["seq"].to_pylist() == [12, 14, 16, 18]
