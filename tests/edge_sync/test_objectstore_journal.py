"""The local store's arrival journal: one record per put when enabled, crash-safe lines, never listed."""

from __future__ import annotations

import os
from pathlib import Path

from edge_sync.objectstore import TMP_PREFIX, LocalObjectStore
from edge_sync.objectstore_journal import (
    JOURNAL_NAME,
    enable_journal,
    encode_record,
    journal_path,
    read_records,
    rotate_journal,
)

KEY = "tenant=t1/device=d1/stream=logs/00000000000000000001-00000000000000000001.batch"


def test_a_store_without_a_journal_writes_none_and_an_enabled_one_records_every_put(tmp_path: Path) -> None:
    spool = LocalObjectStore(tmp_path / "spool")
    spool.put_if_absent(KEY, b"x")
    assert not journal_path(spool.root).exists()  # a device's spool journals nothing

    store = LocalObjectStore(tmp_path / "objects")
    enable_journal(store.root)
    assert store.put_if_absent(KEY, b"abc") and not store.put_if_absent(
        KEY, b"abc"
    )  # the refused one: no record
    store.put("tenant=t1/device=d1/desired.json", b"{}")
    lines = read_records(journal_path(store.root), 0, 10)
    assert [(ln.key, ln.problem) for ln in lines] == [(KEY, None), ("tenant=t1/device=d1/desired.json", None)]
    # reserved name: never listed, never a key
    assert JOURNAL_NAME.startswith(TMP_PREFIX)
    assert [o.key for o in store.list("").objects] == sorted([KEY, "tenant=t1/device=d1/desired.json"])


def test_a_torn_record_is_one_damaged_line_and_the_next_record_survives(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    path = enable_journal(store.root)
    with open(path, "ab") as f:
        f.write(encode_record("a/x.batch", 1, 0)[:20])  # a crash mid-write
    assert read_records(path, 0, 10) == []  # an incomplete last line waits for its newline
    store.put("b/y.batch", b"y")
    lines = read_records(path, 0, 10)
    assert [ln.key for ln in lines] == [None, "b/y.batch"]
    assert "checksum" in lines[0].problem or "not '<crc32> <json>'" in lines[0].problem
    # a flipped byte in a complete record is caught by its checksum
    good = encode_record("c/z.batch", 1, 0)
    with open(path, "ab") as f:
        f.write(good.replace(b"c/z", b"c/q"))
    assert read_records(path, lines[-1].end, 10)[0].problem.startswith("journal record checksum mismatch")


def test_rotation_gives_a_new_file(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    path = enable_journal(store.root)
    store.put("a/x.batch", b"x")
    before = os.stat(path).st_ino
    rotated = rotate_journal(store.root)
    assert rotated.exists() and os.stat(path).st_ino != before and os.path.getsize(path) == 0
    store.put("a/y.batch", b"y")
    assert [ln.key for ln in read_records(path, 0, 10)] == ["a/y.batch"]


def test_concurrent_writers_never_interleave_records(tmp_path: Path) -> None:
    """Every put is one O_APPEND write: writers in parallel leave whole, checksummed lines."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path / "objects"
    enable_journal(root)

    def writer(w: int) -> None:
        store = LocalObjectStore(root, fsync=False)  # each agent has its own store object
        for i in range(100):
            store.put_if_absent(f"tenant=t1/device=d{w}/stream=logs/{i:020d}-{i:020d}.batch", b"x" * i)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))
    lines = read_records(journal_path(root), 0, 1_000)
    assert len(lines) == 400 and all(ln.problem is None for ln in lines)
    assert len({ln.key for ln in lines}) == 400


def test_an_overlong_line_is_skipped_not_waited_for(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    path = enable_journal(store.root)
    with open(path, "ab") as f:
        f.write(b"x" * 5000)  # garbage without a newline, longer than a read
    store.put("a/x.batch", b"x")
    first = read_records(path, 0, 10, max_bytes=4096)
    assert [ln.problem for ln in first] == ["journal line longer than 4096 bytes"] and first[0].end == 4096
    rest = read_records(path, first[0].end, 10, max_bytes=4096)
    assert [ln.key for ln in rest] == [None, "a/x.batch"]  # the garbage's tail, then the record
