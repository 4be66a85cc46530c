"""A cache file made before a stream gained columns opens, gains them, and records rows that use them."""

from __future__ import annotations

from edge_sync.cache import DeviceCache
from tests.support.device import DEVICE, KEY, NOW, TENANT


def test_an_older_cache_file_gains_the_new_health_columns(tmp_path):
    path = tmp_path / "cache.db"
    cache = DeviceCache.open(path, tenant_id=TENANT, device_id=DEVICE, key=KEY, wall_ms=lambda: NOW)
    cache.record("health", {"version": "v0", "slot": "a"})
    cache.flush()
    for column in ("update_state", "update_version", "update_reason"):  # the file as an older agent left it
        cache._store.con.execute(f'ALTER TABLE c.stream_health DROP COLUMN "{column}"')
    cache.close()

    cache = DeviceCache.open(path, tenant_id=TENANT, device_id=DEVICE, key=KEY, wall_ms=lambda: NOW)
    try:
        cache.record(
            "health", {"version": "v0", "slot": "a", "update_state": "downloading", "update_version": "v1"}
        )
        rows = cache.pending("health").to_pylist()
    finally:
        cache.close()
    assert [(r["version"], r["update_state"], r["update_version"]) for r in rows] == [
        ("v0", None, None),
        ("v0", "downloading", "v1"),
    ]
