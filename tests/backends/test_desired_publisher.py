"""DesiredStatePublisher: signed read-modify-write of per-device desired-state documents."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta

import pytest

from edge_sync.desired import Release, StateEdit, decode, desired_key
from edge_sync.hlc import HybridLogicalClock, pack
from edge_sync.identity import PlatformSigner
from edge_sync.objectstore import LocalObjectStore
from edgeplat.desired_publisher import DesiredStatePublisher, DesiredStatePublishError

T, D = "t1", "d1"
NOW_MS = 1_800_000_000_000


def publisher(store, signer, now_ms: int = NOW_MS, **kw) -> DesiredStatePublisher:
    return DesiredStatePublisher(store, signer, HybridLogicalClock("central", wall_ms=lambda: now_ms), **kw)


def edit(field: str, hlc: int, value: str = '"x"', key: str = "k") -> StateEdit:
    return StateEdit(namespace="config", key=key, field=field, value=value, hlc=hlc)


def read(store, signer, tenant=T, device=D):
    return decode(
        store.get(desired_key(tenant, device)),
        platform_keys=signer.public_key_bytes(),
        tenant_id=tenant,
        device_id=device,
    )


def test_set_release_signs_and_revisions_grow(store, signer):
    pub = publisher(store, signer)
    first = pub.set_release(T, D, Release(version="1.0"))
    second = pub.set_release(T, D, Release(version="2.0", slot="b"), previous=Release(version="1.0"))
    assert (first.revision, second.revision) == (1, 2)
    assert second.issued_hlc > first.issued_hlc
    doc = read(store, signer)
    assert doc.release == Release(version="2.0", slot="b") and doc.previous == Release(version="1.0")
    assert pub.current(T, D) == doc


def test_repeat_of_same_release_writes_nothing(store, signer):
    pub = publisher(store, signer)
    pub.set_release(T, D, Release(version="1.0"))
    etag = store.head(desired_key(T, D)).etag
    again = pub.set_release(T, D, Release(version="1.0"))
    assert again.revision == 1 and store.head(desired_key(T, D)).etag == etag


def test_state_edits_accumulate_dedupe_and_keep_release(store, signer):
    pub = publisher(store, signer)
    pub.set_release(T, D, Release(version="1.0"))
    h = pack(NOW_MS, 0)
    pub.add_state_edits(T, D, [edit("a", h), edit("b", h + 1)])
    doc = pub.add_state_edits(T, D, [edit("a", h), edit("c", h + 2)])  # "a" is a duplicate
    assert [e.field for e in doc.state_edits] == ["a", "b", "c"]
    assert doc.release == Release(version="1.0") and doc.revision == 3
    assert pub.add_state_edits(T, D, [edit("b", h + 1)]).revision == 3  # nothing new: no write
    assert read(store, signer).state_edits == doc.state_edits


def test_old_edits_dropped_only_when_superseded(store, signer):
    pub = publisher(store, signer, edit_horizon=timedelta(hours=1))
    old = pack(NOW_MS - 3 * 3600_000, 0)
    new = pack(NOW_MS, 0)
    doc = pub.add_state_edits(T, D, [edit("a", old), edit("b", old), edit("a", new)])
    assert [(e.field, e.hlc) for e in doc.state_edits] == [("b", old), ("a", new)]


def test_unverifiable_document_is_replaced_with_a_higher_revision(store, signer, caplog):
    other = PlatformSigner.generate()
    publisher(store, other).set_release(T, D, Release(version="evil"))
    pub = publisher(store, signer)
    assert pub.current(T, D) is None
    with caplog.at_level(logging.WARNING, logger="edgeplat.desired_publisher"):
        doc = pub.set_release(T, D, Release(version="1.0"))
    assert "does not verify" in caplog.text
    assert doc.revision > NOW_MS  # above anything a device could have applied
    assert read(store, signer).release == Release(version="1.0")


def test_tampered_record_is_detected(store, signer):
    pub = publisher(store, signer)
    pub.set_release(T, D, Release(version="1.0"))
    signed = json.loads(store.get(pub.record_key(T, D)))
    signed["document"]["release"]["version"] = "6.6.6"
    store.put(pub.record_key(T, D), json.dumps(signed).encode())
    assert pub.current(T, D) is None


def test_the_store_copy_is_never_taken_as_truth(store, signer):
    pub = publisher(store, signer)
    pub.set_release(T, D, Release(version="1.0"))
    old = store.get(desired_key(T, D))
    pub.set_release(T, D, Release(version="2.0"))
    store.put(desired_key(T, D), old)  # an old, validly signed document put back (a replay)
    assert pub.current(T, D).release == Release(version="2.0")
    doc = pub.add_state_edits(T, D, [edit("a", pack(NOW_MS, 0))])
    assert (doc.release, doc.revision) == (Release(version="2.0"), 3)
    assert read(store, signer) == doc


def test_a_higher_revision_in_the_store_only_raises_the_next_one(store, signer):
    pub = publisher(store, signer)
    pub.set_release(T, D, Release(version="1.0"))
    store.put(desired_key(T, D), b'{"document": {"revision": 40}}')  # unsigned: its content is ignored
    doc = pub.set_release(T, D, Release(version="2.0"))
    assert (doc.release, doc.revision) == (Release(version="2.0"), 41)
    store.put(desired_key(T, D), b"[" * 20_000 + b"]" * 20_000)  # deep nesting: no RecursionError
    assert pub.set_staged(T, D, Release(version="3.0", slot="b")).revision == 42


def test_oversized_document_is_refused_with_advice(store, signer):
    pub = publisher(store, signer)
    big = [edit(f"f{i}", pack(NOW_MS, i), value='"' + "x" * 2000 + '"') for i in range(600)]
    with pytest.raises(DesiredStatePublishError, match="edit_horizon"):
        pub.add_state_edits(T, D, big)


def test_concurrent_edits_and_release_changes_all_survive(store, signer):
    pub = DesiredStatePublisher(store, signer)
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
        other = DesiredStatePublisher(LocalObjectStore(store.root, fsync=False), signer)
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
def test_publishes_to_s3(s3_bucket, signer):
    from edge_sync.objectstore_s3 import S3ObjectStore

    endpoint, bucket = s3_bucket
    s3 = S3ObjectStore(
        bucket, "fleet", endpoint_url=endpoint, access_key_id="testing", secret_access_key="testing"
    )
    pub = publisher(s3, signer)
    pub.set_release(T, D, Release(version="1.0"))
    doc = pub.add_state_edits(T, D, [edit("a", pack(NOW_MS, 0))])
    assert read(s3, signer) == doc and doc.revision == 2
