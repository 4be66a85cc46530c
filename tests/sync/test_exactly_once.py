"""Invariants 1-3 at the central side: exactly once under any arrival order, duplication and re-cutting.

Real encrypted, signed batches in a local object store; a real lakehouse. Each hypothesis
example uses its own tenant in one shared lakehouse (creating a lakehouse costs seconds).
"""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_sync.rules import default_rules
from edgeplat.sync import ingest as ingest_mod
from edgeplat.sync.ingest import ingest_objects
from edgeplat.sync.reconcile import reconcile
from tests.support.fleet import Fleet, rows
from tests.support.merge_oracle import merge_reference

N = 24
_tenants = itertools.count()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Fleet:
    return Fleet(tmp_path_factory.mktemp("exactly_once"))


def cuts(draw, n: int) -> list[tuple[int, int]]:
    """A random cut of seqs 1..n into consecutive batches."""
    points = sorted(draw(st.sets(st.integers(2, n), max_size=5)))
    bounds = [1, *points, n + 1]
    return [(a, b - 1) for a, b in itertools.pairwise(bounds)]


@st.composite
def deliveries(draw):
    """Several upload attempts, each cutting the same rows differently; duplicates; a random arrival order."""
    attempts = [cuts(draw, N) for _ in range(draw(st.integers(1, 3)))]
    pieces = [(stream, r) for stream in ("telemetry", "state") for a in attempts for r in a]
    # only some pieces of later attempts arrive, but everything arrives at least once (from attempt 0)
    must = [(s, r) for s in ("telemetry", "state") for r in attempts[0]]
    extra = draw(st.lists(st.sampled_from(pieces), min_size=2, max_size=6))
    order = draw(st.permutations(must + extra + draw(st.lists(st.sampled_from(must), max_size=3))))
    groups = draw(st.integers(2, 3))
    return order, groups


def snapshot(fleet: Fleet, tenant: str) -> dict:
    out = {}
    with fleet.lake.session(read_only=True) as con:
        for table in ("telemetry", "state_edits", "batches", "device_state", "state_conflicts", "evictions"):
            cols = (
                "* EXCLUDE (ingested_at)"
                if table in ("telemetry", "state_edits", "batches", "evictions")
                else ("* EXCLUDE (updated_ms)" if table == "device_state" else "* EXCLUDE (detected_ms)")
            )
            out[table] = sorted(
                con.execute(f"SELECT {cols} FROM {table} WHERE tenant_id = ?", [tenant]).fetchall(), key=repr
            )
    return out


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(plan=deliveries())
def test_exactly_once_whatever_the_order_duplication_and_cutting(shared: Fleet, plan) -> None:
    order, groups = plan
    tenant = f"x{next(_tenants)}"
    keys = [shared.upload(shared.batch(tenant, "d1", stream, range(a, b + 1))) for stream, (a, b) in order]
    env = shared.env()
    size = -(-len(keys) // groups)
    with shared.lake.session() as con:
        for i in range(0, len(keys), size):
            ingest_objects(env, keys[i : i + size], con=con)
    got = shared.count(
        "SELECT seq, hlc, metric, value FROM telemetry WHERE tenant_id = ? ORDER BY seq", [tenant]
    )
    want = rows("telemetry", tenant, "d1", range(1, N + 1))
    assert got == list(
        zip(*(want.column(c).to_pylist() for c in ("seq", "hlc", "metric", "value")), strict=True)
    )
    assert shared.count(
        "SELECT count(*), count(DISTINCT seq) FROM state_edits WHERE tenant_id = ?", [tenant]
    )[0] == (N, N)
    edits = rows("state", tenant, "d1", range(1, N + 1)).to_pylist()
    expected = merge_reference(edits, default_rules())
    state = shared.count(
        "SELECT namespace, key, field, value, hlc FROM device_state WHERE tenant_id = ?", [tenant]
    )
    assert {(r[0], r[1], r[2]): (r[3], r[4]) for r in state} == {
        (k[2], k[3], k[4]): (v["value"], v["hlc"]) for k, v in expected.items()
    }
    assert shared.count("SELECT count(*) FROM quarantine WHERE tenant_id = ?", [tenant])[0][0] == 0

    # a second run of every step changes nothing
    before = snapshot(shared, tenant)
    ingest_objects(env, list(reversed(keys)))
    assert snapshot(shared, tenant) == before


def test_overlapping_recut_batches_across_runs_and_within_a_run(shared: Fleet) -> None:
    tenant = f"x{next(_tenants)}"
    b = shared.batch
    first = [shared.upload(b(tenant, "d1", "telemetry", range(1, 11)))]
    later = [
        shared.upload(b(tenant, "d1", "telemetry", range(5, 16))),  # overlaps a stored batch
        shared.upload(b(tenant, "d1", "telemetry", range(12, 21))),  # and one of its own run
        shared.upload(b(tenant, "d1", "telemetry", range(1, 21))),
    ]  # and everything
    env = shared.env()
    r1 = ingest_objects(env, first)
    r2 = ingest_objects(env, later)
    assert (r1.rows_new, r2.rows_new, r2.duplicates_dropped) == (10, 10, 30)
    assert shared.count(
        "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM telemetry WHERE tenant_id = ?",
        [tenant],
    )[0] == (20, 20, 1, 20)
    ledger = shared.count(
        "SELECT sum(rows_new), sum(rows_duplicate) FROM batches WHERE tenant_id = ?", [tenant]
    )
    assert ledger[0] == (20, 30)


def test_a_commit_takes_the_groups_decoded_while_the_one_before_ran(shared: Fleet, monkeypatch) -> None:
    tenant = f"x{next(_tenants)}"
    b = shared.batch
    keys = [shared.upload(b(tenant, "d1", "telemetry", range(a, a + 4))) for a in range(1, 41, 4)]
    keys.append(shared.upload(b(tenant, "d1", "telemetry", range(1, 41))))  # overlaps every other batch
    taken = []
    real = ingest_mod._commit_chunk

    def slow_commit(env, con, groups, *args):
        taken.append(len(groups))
        if len(taken) == 1:
            time.sleep(0.5)  # groups pile up meanwhile
        return real(env, con, groups, *args)

    monkeypatch.setattr(ingest_mod, "_commit_chunk", slow_commit)
    report = ingest_objects(shared.env(rows_per_group=4), keys)  # a group per batch
    assert taken[0] == 1 and 1 < max(taken) <= ingest_mod.MAX_GROUPS_PER_COMMIT and sum(taken) == len(keys)
    assert (report.accepted, report.rows_new, report.duplicates_dropped) == (11, 40, 40)
    assert shared.count("SELECT count(*), count(DISTINCT seq) FROM telemetry WHERE tenant_id = ?", [tenant])[
        0
    ] == (40, 40)


@pytest.mark.slow
def test_reconciliation_twice_changes_nothing(fleet: Fleet) -> None:
    for s in ("telemetry", "health", "state"):
        fleet.upload(fleet.batch("t1", "d1", s, range(1, 11)))
        fleet.upload(fleet.batch("t1", "d1", s, range(6, 16)))
    env = fleet.env()
    first = reconcile(env)
    assert first.missed.accepted == 6 and first.missed.duplicates_dropped == 15
    before = fleet.snapshot()
    second = reconcile(env)
    assert second.missed.objects == 0 and fleet.snapshot() == before
