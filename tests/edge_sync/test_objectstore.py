"""The object store interface, run against both backends (local folder and S3 on moto),
plus S3 retry behaviour under injected faults and the URL factory."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from edge_sync import objectstore_s3
from edge_sync.objectstore import (
    BucketNotFound,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    StoreUnavailable,
)
from edge_sync.objectstore_s3 import MiB, S3ObjectStore
from edge_sync.objectstore_url import from_url
from tests.support.fault_proxy import FaultProxy

MOTO_OPTIONS: dict[str, Any] = {
    "access_key_id": "testing",
    "secret_access_key": "testing",
    "addressing_style": "path",
    # small enough that the 20 MiB test goes multipart in 5 MiB parts
    "multipart_threshold": 5 * MiB,
    "multipart_chunksize": 5 * MiB,
}


def s3_store(endpoint: str, bucket: str, **overrides: Any) -> S3ObjectStore:
    return S3ObjectStore(bucket, "base/prefix", endpoint_url=endpoint, **{**MOTO_OPTIONS, **overrides})


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "store")
        return
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    s = s3_store(endpoint, bucket)
    yield s
    s.close()


def put_many(store: ObjectStore, keys: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(lambda k: store.put_if_absent(k, k.encode()), keys))


# --------------------------------------------------------------------------- interface


def test_put_if_absent_writes_once_and_never_overwrites(store: ObjectStore) -> None:
    assert store.put_if_absent("tenant=t1/device=d1/a.batch", b"first") is True
    assert store.put_if_absent("tenant=t1/device=d1/a.batch", b"second") is False
    assert store.get("tenant=t1/device=d1/a.batch") == b"first"


def test_put_overwrites(store: ObjectStore) -> None:
    store.put("tenant=t1/device=d1/desired.json", b"v1")
    store.put("tenant=t1/device=d1/desired.json", b"v2-longer")
    assert store.get("tenant=t1/device=d1/desired.json") == b"v2-longer"
    info = store.head("tenant=t1/device=d1/desired.json")
    assert info is not None and info.size == len(b"v2-longer")


def test_get_and_head_of_missing_key(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        store.get("no/such.key")
    assert caught.value.key == "no/such.key"
    assert store.head("no/such.key") is None


def test_head_reports_size_etag_and_utc_time(store: ObjectStore) -> None:
    store.put_if_absent("k", b"12345")
    store.put_if_absent("empty", b"")
    info = store.head("k")
    assert info is not None
    assert (info.key, info.size) == ("k", 5)
    assert info.etag and info.last_modified.tzinfo is not None
    assert info.last_modified.utcoffset() == UTC.utcoffset(None)
    assert store.get("empty") == b""
    store.put("k", b"other")
    changed = store.head("k")
    assert changed is not None and changed.etag != info.etag


def test_delete(store: ObjectStore) -> None:
    store.put_if_absent("a/b", b"x")
    store.delete("a/b")
    assert store.head("a/b") is None
    store.delete("a/b")  # deleting a missing key is fine
    assert store.put_if_absent("a/b", b"again") is True
    assert store.list().objects[0].key == "a/b"


def test_list_is_lexicographic_across_folders(store: ObjectStore) -> None:
    # '-' < '/' < '0': a folder walk must still yield full-key order, as S3 does
    keys = ["t=1/d=1/x", "t=1/d=1-b/y", "t=1/d=10/z", "t=1/d=1/w/v", "t=2/a", "t=1/d=1a"]
    put_many(store, keys)
    assert [o.key for o in store.list().objects] == sorted(keys)
    assert [o.key for o in store.list("t=1/d=1").objects] == sorted(
        k for k in keys if k.startswith("t=1/d=1")
    )
    assert [o.key for o in store.list("t=1/d=1/").objects] == ["t=1/d=1/w/v", "t=1/d=1/x"]
    assert [o.key for o in store.list("t=1/", after="t=1/d=1/w").objects] == [
        "t=1/d=1/w/v",
        "t=1/d=1/x",
        "t=1/d=10/z",
        "t=1/d=1a",
    ]
    assert store.list("nothing/").objects == [] and store.list("nothing/").next_after is None
    page = store.list(limit=1)
    assert [o.key for o in page.objects] == ["t=1/d=1-b/y"] and page.next_after == "t=1/d=1-b/y"


def test_list_follows_continuation_up_to_limit(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # S3 pages of 40 keys: a list() of limit 100 has to follow continuation tokens
    monkeypatch.setattr(objectstore_s3, "LIST_PAGE_MAX", 40)
    keys = [f"p/{i:03d}" for i in range(250)]
    put_many(store, keys)
    first = store.list("p/", limit=100)
    assert [o.key for o in first.objects] == keys[:100] and first.next_after == "p/099"
    rest = store.list("p/", after=first.next_after, limit=1000)
    assert [o.key for o in rest.objects] == keys[100:] and rest.next_after is None


@pytest.mark.parametrize(
    "store", ["local", pytest.param("s3", marks=[pytest.mark.services, pytest.mark.slow])], indirect=True
)
def test_list_paginates_2500_keys_after_cursor(store: ObjectStore) -> None:
    keys = [f"tenant=t{i % 3}/device=d{i % 7}/{i:05d}.batch" for i in range(2500)]
    put_many(store, keys)
    seen: list[str] = []
    pages = []
    after = None
    while True:
        page = store.list("tenant=", after=after, limit=1000)
        pages.append(len(page.objects))
        seen += [o.key for o in page.objects]
        if page.next_after is None:
            break
        assert page.next_after == page.objects[-1].key
        after = page.next_after
    assert pages == [1000, 1000, 500]
    assert seen == sorted(keys)


def test_late_key_before_cursor_is_not_returned(store: ObjectStore) -> None:
    put_many(store, ["s/b", "s/c", "s/d"])
    first = store.list("s/", limit=2)
    assert [o.key for o in first.objects] == ["s/b", "s/c"]
    store.put_if_absent("s/a", b"late, sorts before the cursor")
    store.put_if_absent("s/e", b"sorts after the cursor")
    second = store.list("s/", after=first.next_after)
    # the late 's/a' is for reconciliation to find, not the cursor consumer
    assert [o.key for o in second.objects] == ["s/d", "s/e"]
    assert second.next_after is None


BAD_KEYS = [
    "",
    "/abs",
    "a//b",
    "a/",
    "a/../b",
    "..",
    "a/./b",
    "a\\b",
    "a/\x00b",
    ".objstore-tmp-x",
    "x" * 256,
]


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_invalid_keys_and_list_arguments_are_rejected(backend: str, tmp_path: Path) -> None:
    # validation happens before any request, so the S3 store needs no server here
    store: ObjectStore = (
        LocalObjectStore(tmp_path) if backend == "local" else s3_store("http://127.0.0.1:9", "unused-bucket")
    )
    calls = [
        lambda key: store.put_if_absent(key, b"x"),
        lambda key: store.put(key, b"x"),
        store.get,
        store.head,
        store.delete,
    ]
    for key in BAD_KEYS:
        for call in calls:
            with pytest.raises(ValueError, match="invalid object key"):
                call(key)
    with pytest.raises(ValueError, match="invalid list prefix"):
        store.list("../")
    with pytest.raises(ValueError, match="limit"):
        store.list(limit=0)


def test_large_object_round_trip(store: ObjectStore) -> None:
    data = bytes(range(256)) * (20 * MiB // 256)
    assert store.put_if_absent("big/blob", data) is True
    assert store.put_if_absent("big/blob", b"small") is False
    assert store.get("big/blob") == data
    store.put("big/blob", data[::-1])
    assert store.get("big/blob") == data[::-1]


def test_concurrent_put_if_absent_has_one_winner(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    if isinstance(store, S3ObjectStore):
        # moto checks If-None-Match and stores without a lock (S3 is atomic): serialize
        # requests in front of it so the test is about the client, not moto's race
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        proxy = FaultProxy(endpoint, serialize=True)
        store = s3_store(proxy.start(), bucket)
        request.addfinalizer(proxy.stop)
    barrier = threading.Barrier(8)

    def write(i: int) -> bool:
        barrier.wait()
        return store.put_if_absent("race/key", f"writer {i}".encode())

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(write, range(8)))
    assert results.count(True) == 1
    assert store.get("race/key") == f"writer {results.index(True)}".encode()


# --------------------------------------------------------------------------- local only


def test_local_leaves_no_temp_files_and_conflicts_are_clear(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_if_absent("a/b", b"1")
    store.put_if_absent("a/b", b"2")
    store.put("a/b", b"3")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b"]
    (tmp_path / "a" / ".objstore-tmp-crashed").write_bytes(b"left by a crash")
    assert [o.key for o in store.list().objects] == ["a/b"]
    with pytest.raises(ObjectStoreError, match="conflicts"):
        store.put_if_absent("a/b/c", b"x")
    with pytest.raises(ObjectStoreError, match="conflicts"):
        store.put_if_absent("a", b"x")
    with pytest.raises(ObjectStoreError, match="conflicts"):
        store.put("a", b"x")


# --------------------------------------------------------------------------- S3 faults


@pytest.fixture
def proxy(s3_bucket: tuple[str, str]) -> Iterator[FaultProxy]:
    proxy = FaultProxy(s3_bucket[0])
    proxy.start()
    yield proxy
    proxy.stop()


KEY_PATH = r"/base/prefix/f/obj$"


@pytest.mark.services
def test_injected_503_is_retried(proxy: FaultProxy, s3_bucket: tuple[str, str]) -> None:
    store = s3_store(proxy.endpoint, s3_bucket[1])
    put_fault = proxy.inject("PUT", KEY_PATH, status=503)
    get_fault = proxy.inject("GET", KEY_PATH, status=503, times=2)
    assert store.put_if_absent("f/obj", b"payload") is True
    assert store.get("f/obj") == b"payload"
    assert (put_fault.fired, get_fault.fired) == (1, 2)
    assert proxy.count("PUT", KEY_PATH) == 2  # the 503 and the retry that wrote
    assert proxy.count("GET", KEY_PATH) == 3


@pytest.mark.services
def test_injected_timeout_is_retried(proxy: FaultProxy, s3_bucket: tuple[str, str]) -> None:
    # the proxy holds each faulted request until the client's read timeout makes it hang up;
    # the timeout is generous so that ordinary requests on a loaded machine never reach it
    store = s3_store(proxy.endpoint, s3_bucket[1], read_timeout=1.5)
    put_fault = proxy.inject("PUT", KEY_PATH, hang_seconds=30)
    get_fault = proxy.inject("GET", KEY_PATH, hang_seconds=30)
    assert store.put_if_absent("f/obj", b"payload") is True
    assert store.get("f/obj") == b"payload"
    assert (put_fault.fired, get_fault.fired) == (1, 1)
    assert proxy.count("PUT", KEY_PATH) == 2
    assert proxy.count("GET", KEY_PATH) == 2


@pytest.mark.services
def test_conditional_write_conflict_409_is_retried(proxy: FaultProxy, s3_bucket: tuple[str, str]) -> None:
    # S3 answers 409 ConditionalRequestConflict while another conditional write is in flight
    store = s3_store(proxy.endpoint, s3_bucket[1])
    proxy.inject("PUT", KEY_PATH, status=409, code="ConditionalRequestConflict")
    assert store.put_if_absent("f/obj", b"payload") is True
    assert proxy.count("PUT", KEY_PATH) == 2
    proxy.inject("PUT", KEY_PATH, status=409, code="ConditionalRequestConflict")
    assert store.put_if_absent("f/obj", b"other") is False  # the retry meets the object: 412
    assert store.get("f/obj") == b"payload"


@pytest.mark.services
def test_retries_exhausted_raise_store_unavailable(proxy: FaultProxy, s3_bucket: tuple[str, str]) -> None:
    store = s3_store(proxy.endpoint, s3_bucket[1], max_attempts=2)
    proxy.inject("GET", KEY_PATH, status=503, times=10)
    with pytest.raises(StoreUnavailable, match=proxy.endpoint):
        store.get("f/obj")
    assert proxy.count("GET", KEY_PATH) == 2


@pytest.mark.services
def test_multipart_if_absent_is_decided_at_completion(s3_bucket: tuple[str, str]) -> None:
    store = s3_store(*s3_bucket)
    data = b"m" * (11 * MiB)
    store.put("mp", b"already here")
    # the conditional CompleteMultipartUpload, not the head() shortcut, refuses the write
    assert store._put_multipart("mp", data, if_absent=True) is False
    assert store.get("mp") == b"already here"
    assert store.put_if_absent("mp2", data) is True
    info = store.head("mp2")
    assert info is not None and info.etag.endswith("-3")  # three parts: 5 + 5 + 1 MiB


@pytest.mark.services
def test_missing_bucket_error_names_bucket_and_endpoint(moto_server: str) -> None:
    store = s3_store(moto_server, "no-such-bucket-here")
    for call in (lambda: store.get("k"), lambda: store.head("k"), lambda: store.list()):
        with pytest.raises(BucketNotFound, match=f"'no-such-bucket-here'.*{moto_server}"):
            call()


# --------------------------------------------------------------------------- factory


def test_from_url(tmp_path: Path) -> None:
    by_uri = from_url(tmp_path.as_uri())
    assert isinstance(by_uri, LocalObjectStore) and by_uri.root == tmp_path
    assert isinstance(from_url(str(tmp_path / "plain")), LocalObjectStore)
    s3 = from_url("s3://my-bucket/some/prefix/", endpoint_url="http://127.0.0.1:9", **MOTO_OPTIONS)
    assert isinstance(s3, S3ObjectStore) and s3.url == "s3://my-bucket/some/prefix/"
    for bad in ("s3:///prefix", "http://example.com/x", "file://host/path"):
        with pytest.raises(ValueError):
            from_url(bad)
    with pytest.raises(ValueError, match="5 MiB"):
        from_url("s3://b-b/p", multipart_chunksize=1024)
