"""The demo fleet reports through the platform's data path: identities, signed batches, object store, ingest."""

from __future__ import annotations

import json
from collections import Counter

from edge_sync.batch import read_batch
from edge_sync.batch_keys import parse_object_key
from edgeplat.simulator.rollout_fleet import DemoFleet


def test_devices_report_through_signed_batches_and_the_ingest(lake, backend, sync_env, make_fleet) -> None:
    fleet: DemoFleet = make_fleet(batches=True, devices=12, upload_every=10)
    for _ in range(4):
        fleet.advance(5)
    held = {d.device_id: sum(t.num_rows for t in d.buffer) for d in fleet.devices}
    assert all(n < 10 for n in held.values())  # at most one cadence's rows wait on a device
    # every device is enrolled: its identity's key is in the registry the ingest verifies against
    for d in fleet.devices:
        assert [k for _, k in sync_env.registry.public_keys(d.tenant_id, d.device_id)] == [
            d.identity.public_key_bytes()
        ]
    with lake.session(read_only=True) as con:
        rows, keyed, ledgered = con.execute(
            "SELECT count(*), count(h.batch_key), count(b.object_key) FROM health h "
            "LEFT JOIN batches b ON b.object_key = h.batch_key"
        ).fetchone()
        assert keyed == rows and ledgered == rows and rows + sum(held.values()) == 12 * 20
        # contiguous per-device seqs from 0, and one HLC per row from each device's clock
        per_device = con.execute(
            "SELECT device_id, count(*), min(seq), max(seq), count(DISTINCT hlc) FROM health GROUP BY 1"
        ).fetchall()
        assert len(per_device) == 12
        assert all((lo, hi, h) == (0, n - 1, n) and n == 20 - held[d] for d, n, lo, hi, h in per_device)
        keys = [k for (k,) in con.execute("SELECT object_key FROM batches ORDER BY 1").fetchall()]
        # one batch per device and upload: in 20 minutes at a 10-minute cadence, at most 3 slots each
        per_dev = Counter(parse_object_key(k).device_id for k in keys)
        assert len(per_dev) == 12 and max(per_dev.values()) <= 3 and fleet.uploads == len(keys)
        devices = con.execute(
            "SELECT device_id, platform, tags, reported_version, reported_hlc FROM devices"
        ).fetchall()
    assert len(devices) == 12
    # the ingest set what devices report and kept the registration's platform and tags
    assert all(
        p in ("greengrass", "iot_edge")
        and json.loads(t)["channel"] in ("stable", "beta")
        and v == "2.0.0"
        and h is not None
        for _, p, t, v, h in devices
    )
    stored = read_batch(
        sync_env.store.get(keys[0]),
        key_service=sync_env.key_service,
        public_keys=sync_env.registry.public_keys,
        expected_key=keys[0],
    )
    assert stored.manifest.stream == "health" and parse_object_key(keys[0]).first_seq == 0


def test_an_offline_device_uploads_its_buffer_late_and_gets_the_new_desired_state(
    lake, backend, make_fleet
) -> None:
    from edgeplat.backends.base import DeviceRef, ReleaseSpec

    fleet: DemoFleet = make_fleet(batches=True, devices=6, upload_every=10)
    away = fleet.devices[0]
    fleet.set_online({away.device_id}, False)
    for _ in range(6):
        fleet.advance(5)
    with lake.session(read_only=True) as con:
        assert (
            con.execute("SELECT count(*) FROM health WHERE device_id = ?", [away.device_id]).fetchone()[0]
            == 0
        )
        others_done = con.execute("SELECT max(ingested_at) FROM batches").fetchone()[0]
    assert away.buffer and sum(t.num_rows for t in away.buffer) == 30  # it kept recording while offline
    # meanwhile the platform decided something for it
    backend.deploy(
        [DeviceRef(away.tenant_id, away.device_id, away.platform)],
        ReleaseSpec("app", "9.9.9"),
        rollout_id="r-test",
        phase=0,
    )
    fleet.set_online({away.device_id}, True)
    fleet.advance(5)
    assert away.version == "9.9.9"
    with lake.session(read_only=True) as con:
        n, lo, hi, first_ts, ingested = con.execute(
            "SELECT count(*), min(seq), max(seq), min(ts), min(b.ingested_at) FROM health h "
            "JOIN batches b ON b.object_key = h.batch_key WHERE h.device_id = ?",
            [away.device_id],
        ).fetchone()
        version = con.execute(
            "SELECT reported_version FROM devices WHERE device_id = ?", [away.device_id]
        ).fetchone()[0]
    assert (n, lo, hi) == (35, 0, 34)  # the whole buffer, late, in one batch, no gap
    assert first_ts < others_done < ingested  # older rows arriving after newer ones: out of order
    assert version == "9.9.9"  # acknowledged through the ingest, from its health rows
