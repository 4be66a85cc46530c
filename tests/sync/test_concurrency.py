"""An analyst's read-only session queries while ingest writes in other processes; concurrent
ingest runs of one tenant never leave duplicates once reconciliation has run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeplat.sync.reconcile import remove_duplicates
from tests.support.fleet import Fleet

REPO = Path(__file__).resolve().parents[2]


def start_writer(fleet: Fleet, keys: list[str], name: str, chunk: int) -> subprocess.Popen:
    keys_file = fleet.root / f"{name}.keys"
    keys_file.write_text("\n".join(keys))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sync.ingest_worker", str(fleet.root), str(keys_file), str(chunk)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_reader_queries_while_two_ingest_processes_write_the_same_tenant(fleet: Fleet) -> None:
    keys = [
        fleet.upload(fleet.batch("t1", f"d{d}", "telemetry", range(s, s + 50)))
        for d in range(3)
        for s in range(1, 400, 50)
    ]
    # two runs of one tenant with overlapping key sets, in different orders (what a missing
    # per-tenant concurrency limit would allow)
    writers = [start_writer(fleet, keys, "a", 4), start_writer(fleet, list(reversed(keys)), "b", 5)]
    reads, errors = [], []
    reader = fleet.lake.read_only()  # like `edgeplat sql`
    try:
        while any(w.poll() is None for w in writers):
            try:
                reads.append(reader.execute("SELECT count(*) FROM telemetry").fetchone()[0])
            except Exception as exc:  # a read must never fail because a writer is busy
                errors.append(repr(exc))
            time.sleep(0.05)
    finally:
        reader.close()
    outs = [w.communicate() for w in writers]
    assert all(w.returncode == 0 for w in writers), [
        (w.returncode, o[1][-2000:]) for w, o in zip(writers, outs, strict=True)
    ]
    assert not errors
    assert len(reads) >= 3 and reads == sorted(reads)  # readers see committed snapshots only, growing
    assert sum(json.loads(o[0])["rows_new"] for o in outs) >= 3 * 400
    remove_duplicates(fleet.env(), fleet.lake.connect(), window=None)
    assert fleet.count("SELECT count(*), count(DISTINCT (device_id, seq)) FROM telemetry")[0] == (1200, 1200)
    assert fleet.count("SELECT count(*), count(DISTINCT object_key) FROM batches")[0] == (24, 24)
