"""DesiredStatePublisher: signed read-modify-write of per-device desired-state documents."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta

import pytest

from edge_sync.desired import DesiredState, Release, StateEdit, decode, desired_key, encode
from edge_sync.hlc import HybridLogicalClock, pack
from edge_sync.identity import PlatformSigner
from edge_sync.objectstore import LocalObjectStore
from edgeplat.desired_publisher import DesiredStatePublisher, DesiredStatePublishError

T, D = "t1", "d1"
NOW_MS = 1_800_000_000_000


@pytest.fixture
def publisher(records):
    """``publisher(store, signer, now_ms, **kw)``: a publisher on this test's lakehouse record."""

    def make(store, signer, now_ms: int = NOW_MS, **kw) -> DesiredStatePublisher:
        clock = HybridLogicalClock("central", wall_ms=lambda: now_ms)
        return DesiredStatePublisher(store, signer, clock, records=records, **kw)

    return make


def edit(field: str, hlc: int, value: str = '"x"', key: str = "k") -> StateEdit:
    return StateEdit(namespace="config", key=key, field=field, value=value, hlc=hlc)


def read(store, signer, tenant=T, device=D):
    return decode(
        store.get(desired_key(tenant, device)),
        platform_keys=signer.public_key_bytes(),
        tenant_id=tenant,
        device_id=device,
    )


def test_set_release_signs_and_revisions_grow(publisher, store, signer):
    pub = publisher(store, signer)
    first = pub.set_release(T, D, Release(version="1.0"))
    second = pub.set_release(T, D, Release(version="2.0", slot="b"), previous=Release(version="1.0"))
    assert (first.revision, second.revision) == (1, 2)
    assert second.issued_hlc > first.issued_hlc
    doc = read(store, signer)
    assert doc.release == Release(version="2.0", slot="b") and doc.previous == Release(version="1.0")
    assert pub.current(T, D) == doc


def test_repeat_of_same_release_writes_nothing(publisher, store, signer):
    pub = publisher(store, signer)
    pub.set_release(T, D, Release(version="1.0"))
    etag = store.head(desired_key(T, D)).etag
    again = pub.set_release(T, D, Release(version="1.0"))
    assert again.revision == 1 and store.head(desired_key(T, D)).etag == etag


def test_state_edits_accumulate_dedupe_and_keep_release(publisher, store, signer):
    pub = publisher(store, signer)
    pub.set_release(T, D, Release(version="1.0"))
    h = pack(NOW_MS, 0)
    pub.add_state_edits(T, D, [edit("a", h), edit("b", h + 1)])
    doc = pub.add_state_edits(T, D, [edit("a", h), edit("c", h + 2)])  # "a" is a duplicate
    assert [e.field for e in doc.state_edits] == ["a", "b", "c"]
    assert doc.release == Release(version="1.0") and doc.revision == 3
    assert pub.add_state_edits(T, D, [edit("b", h + 1)]).revision == 3  # nothing new: no write
    assert read(store, signer).state_edits == doc.state_edits


def test_old_edits_dropped_only_when_superseded(publisher, store, signer):
    pub = publisher(store, signer, edit_horizon=timedelta(hours=1))
    old = pack(NOW_MS - 3 * 3600_000, 0)
    new = pack(NOW_MS, 0)
    doc = pub.add_state_edits(T, D, [edit("a", old), edit("b", old), edit("a", new)])
    assert [(e.field, e.hlc) for e in doc.state_edits] == [("b", old), ("a", new)]


def test_unverifiable_document_is_replaced_with_a_higher_revision(publisher, store, signer, caplog):
    other = PlatformSigner.generate()
    publisher(store, other).set_release(T, D, Release(version="evil"))
    pub = publisher(store, signer)
    assert pub.current(T, D) is None
    with caplog.at_level(logging.WARNING, logger="edgeplat.desired_publisher"):
        doc = pub.set_release(T, D, Release(version="1.0"))
    assert "does not verify" in caplog.text
    assert doc.revision > NOW_MS  # above anything a device could have applied
    assert read(store, signer).release == Release(version="1.0")


def test_tampered_record_is_detected(publisher, store, signer, records):
    pub = publisher(store, signer)
    pub.set_release(T, D, Release(version="1.0"))
    signed = json.loads(records.get_many([(T, D)])[(T, D)].document)
    signed["document"]["release"]["version"] = "6.6.6"
    records.lake.write(lambda c: c.execute("UPDATE desired_records SET document = ?", [json.dumps(signed)]))
    assert pub.current(T, D) is None


def test_the_store_copy_is_never_taken_as_truth(publisher, store, signer):
    pub = publisher(store, signer)
    pub.set_release(T, D, Release(version="1.0"))
    old = store.get(desired_key(T, D))
    pub.set_release(T, D, Release(version="2.0"))
    store.put(desired_key(T, D), old)  # an old, validly signed document put back (a replay)
    assert pub.current(T, D).release == Release(version="2.0")
    doc = pub.add_state_edits(T, D, [edit("a", pack(NOW_MS, 0))])
    assert (doc.release, doc.revision) == (Release(version="2.0"), 3)
    assert read(store, signer) == doc


def test_a_higher_revision_in_the_store_only_raises_the_next_one(publisher, store, signer):
    pub = publisher(store, signer)
    pub.set_release(T, D, Release(version="1.0"))
    store.put(desired_key(T, D), b'{"document": {"revision": 40}}')  # unsigned: its content is ignored
    doc = pub.set_release(T, D, Release(version="2.0"))
    assert (doc.release, doc.revision) == (Release(version="2.0"), 41)
    store.put(desired_key(T, D), b"[" * 20_000 + b"]" * 20_000)  # deep nesting: no RecursionError
    assert pub.set_staged(T, D, Release(version="3.0", slot="b")).revision == 42


def test_oversized_document_is_refused_with_advice(publisher, store, signer):
    pub = publisher(store, signer)
    big = [edit(f"f{i}", pack(NOW_MS, i), value='"' + "x" * 2000 + '"') for i in range(600)]
    with pytest.raises(DesiredStatePublishError, match="edit_horizon"):
        pub.add_state_edits(T, D, big)


def test_concurrent_edits_and_release_changes_all_survive(store, signer, records):
    pub = DesiredStatePublisher(store, signer, records=records)
    base = pub.clock.now()
    n = 20
    barrier = threading.Barrier(3)

    def edits() -> None:
        barrier.wait()
        for i in range(n):
            pub.add_state_edits(T, D, [edit(f"f{i}", base + i)])

    def releases() -> None:
        barrier.wait()
        for i in range(n):
            pub.set_release(T, D, Release(version=f"1.{i}"))

    def other_process_like() -> None:
        # a second publisher on the same store (as another process would be): the file lock holds
        other = DesiredStatePublisher(LocalObjectStore(store.root, fsync=False), signer, records=records)
        barrier.wait()
        for i in range(n):
            other.add_state_edits(T, D, [edit(f"g{i}", base + i)])

    threads = [threading.Thread(target=f) for f in (edits, releases, other_process_like)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc = read(store, signer)
    assert {e.field for e in doc.state_edits} == {f"f{i}" for i in range(n)} | {f"g{i}" for i in range(n)}
    assert doc.release == Release(version=f"1.{n - 1}")
    assert doc.revision == 3 * n


@pytest.mark.services
def test_publishes_to_s3(publisher, s3_bucket, signer):
    from edge_sync.objectstore_s3 import S3ObjectStore

    endpoint, bucket = s3_bucket
    s3 = S3ObjectStore(
        bucket, "fleet", endpoint_url=endpoint, access_key_id="testing", secret_access_key="testing"
    )
    pub = publisher(s3, signer)
    pub.set_release(T, D, Release(version="1.0"))
    doc = pub.add_state_edits(T, D, [edit("a", pack(NOW_MS, 0))])
    assert read(s3, signer) == doc and doc.revision == 2


def test_a_batch_is_one_record_commit_and_publishes_after_it(publisher, store, signer, records):
    pub = publisher(store, signer)
    commits = []
    put_many = records.put_many
    records.put_many = lambda recs, expected: commits.append(len(list(recs))) or put_many(recs, expected)
    with pub.batch():
        for i in range(5):
            pub.set_release(T, f"d{i}", Release(version="1.0"))
        pub.add_state_edits(T, "d0", [edit("a", pack(NOW_MS, 0))])  # reads the batch's own change
        assert store.head(desired_key(T, "d0")) is None  # nothing goes out before the commit
    assert commits == [5]
    assert read(store, signer, device="d0").revision == 2 and read(store, signer, device="d0").state_edits
    assert {r.revision for r in records.tenant(T).values()} == {1, 2}


def test_a_failed_batch_commit_publishes_nothing(publisher, store, signer, records):
    pub = publisher(store, signer)

    def down(recs, expected):
        raise RuntimeError("catalog down")

    records.put_many = down
    with pytest.raises(RuntimeError, match="catalog down"), pub.batch():
        pub.set_release(T, D, Release(version="1.0"))
    assert store.head(desired_key(T, D)) is None


def test_two_replicas_never_lose_an_update(publisher, store, signer, records):
    # replica b reads, then replica a records a newer revision before b commits: b applies its change
    # again on top. Replicas share the lakehouse, not a machine (a's store is its own: no file lock).
    a, b = publisher(LocalObjectStore(store.root.parent / "a", fsync=False), signer), publisher(store, signer)
    a.set_release(T, D, Release(version="1.0"))
    read_all = b._read_all
    races: list[str] = []

    def read_then_race(tenant, device):
        got = read_all(tenant, device)
        if len(races) < want_races:
            races.append(f"f{len(races)}")
            a.add_state_edits(T, D, [edit(races[-1], pack(NOW_MS, len(races)))])
        return got

    b._read_all = read_then_race
    want_races = 1
    doc = b.set_release(T, D, Release(version="2.0"))
    assert doc.revision == 3 and [e.field for e in doc.state_edits] == ["f0"]
    assert read(store, signer) == doc
    # in a batch the conflict fails the batch, and nothing of it is published
    want_races = 2
    with pytest.raises(DesiredStatePublishError, match="none of this batch"), b.batch():
        b.set_release(T, D, Release(version="3.0"))
    assert read(store, signer).release == Release(version="2.0")


def test_records_an_older_publisher_kept_in_the_store_are_imported_once(publisher, store, signer, records):
    old = publisher(store, signer)
    old.set_release(T, D, Release(version="1.0"))
    doc = old.set_release(T, D, Release(version="2.0"))
    data = records.get_many([(T, D)])[(T, D)].document
    # the layout before the lakehouse record: the record as a store object, nothing in the table
    records.lake.write(lambda c: c.execute("DELETE FROM desired_records"))
    store.put(f"platform/desired/tenant={T}/device={D}.json", data)
    forged = encode(
        DesiredState(tenant_id=T, device_id="d9", revision=7, issued_hlc=pack(NOW_MS, 0)),
        PlatformSigner.generate(),
    )
    store.put(f"platform/desired/tenant={T}/device=d9.json", forged)
    from edgeplat import desired_publisher

    desired_publisher._IMPORTED.clear()
    fresh = publisher(store, signer)
    assert fresh.current(T, D) == doc  # imported, verified with the platform key
    assert store.head(f"platform/desired/tenant={T}/device={D}.json") is None  # moved, not copied
    assert fresh.current(T, "d9") is None  # another key signed it: not imported, left for an operator
    assert store.head(f"platform/desired/tenant={T}/device=d9.json") is not None
    assert fresh.set_release(T, D, Release(version="3.0")).revision == 3
