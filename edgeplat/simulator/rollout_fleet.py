"""The rollout demo's fleet: simulated device processes that report through the platform's data path.

What is real: every device pulls and verifies its signed desired-state document (written by
the ``edge_agent`` backend) and installs, switches slot or rolls back as it says; with a
:class:`~edgeplat.simulator.batch_uplink.BatchUplink` each device also has its own Ed25519
identity in the device registry, its health rows carry contiguous per-device seqs and HLCs
from :class:`edge_sync.hlc.HybridLogicalClock`, and they leave the device as signed,
encrypted batches (``edge_sync.batch.write_batch``) uploaded to the object store and
ingested centrally by ``edgeplat.sync.ingest.ingest_objects``, which also sets
``devices.reported_version/slot`` (the rollout's acknowledgements) from the health rows.

What is simulated: the device process itself (a few fields per device, no DuckDB cache per
device: opening a cache per device would take minutes for a demo fleet) and the health metrics, drawn per
version from release profiles (``set_release_profile``). Time is simulated: ``advance``
moves every device forward a number of minutes, one health row per device and minute.

Uploads follow what field agents do: each device uploads its buffered rows every
``upload_every`` minutes at its own offset (so the central side sees a steady trickle, not
a thundering herd), and right after it applies a new desired state (that report is its
acknowledgement). An offline device keeps running and recording, pulls nothing and
uploads nothing; when it is back it gets what the platform decided meanwhile (a rollback)
and uploads its buffer late, out of order with the rest of the fleet.

The devices' platform and tags (what rollout targets and stratification select on) are
written to the ``devices`` table at start: the ingest keeps them but cannot set them (its
registry knows keys, not metadata), so that is this fleet's device-registration step.

:class:`DirectUplink` is the fast path for tests that tick many rollouts: the same devices
and rows, inserted straight into ``health``/``devices`` (no identities, batches or ingest).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import duckdb
import numpy as np
import pyarrow as pa

from edge_sync.desired import DesiredStateError, decode, desired_key
from edge_sync.hlc import HybridLogicalClock
from edge_sync.identity import DeviceIdentity
from edge_sync.objectstore import ObjectNotFound
from edge_sync.streams import STREAMS
from edgeplat.backends.edge_agent import EdgeAgentBackend
from edgeplat.lakehouse import Lakehouse, retried
from edgeplat.lakehouse_schema import TABLES, utc_day

DEMO_START = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
OLD_VERSION = "2.0.0"
HEALTH_SCHEMA = STREAMS["health"].schema
_DEFAULT_PROFILE = {"error_rate": 0.01, "crash_rate": 0.02, "cpu_pct": 25.0}


def epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(eq=False)
class FleetDevice:
    """One simulated device: what it runs, its clock and seqs, and the health rows it has not uploaded."""

    tenant_id: str
    device_id: str
    platform: str
    tags: dict[str, str]
    clock: HybridLogicalClock
    upload_offset: int  # minutes after the fleet's start of its first periodic upload
    version: str = OLD_VERSION
    slot: str = "a"
    applied_revision: int = 0
    online: bool = True
    factor: float = 1.0  # how much worse than its release's profile this device runs
    ran: set[str] = field(default_factory=set)
    next_seq: int = 0
    buffer: list[pa.Table] = field(default_factory=list)
    next_upload: datetime | None = None
    report_due: bool = False  # applied a new desired state: report it at the next upload point
    identity: DeviceIdentity | None = None
    update: tuple[str, str, str | None] | None = None  # installer step to report: (state, version, reason)

    @property
    def key(self) -> str:
        return f"{self.tenant_id}/{self.device_id}"


class Uplink(Protocol):
    """How devices' health reaches the lakehouse."""

    def register(self, devices: Sequence[FleetDevice], at: datetime) -> None: ...

    def upload(self, uploads: Sequence[tuple[FleetDevice, pa.Table]], now: datetime) -> None: ...

    def close(self) -> None: ...


class DemoFleet:
    """Devices that pull desired state from ``backend`` and report health through ``uplink`` (see module doc).

    ``upload_every``: minutes between a device's periodic uploads (``None``: every ``advance``).
    ``set_release_profile(version, error_rate=..., crash_rate=..., cpu_pct=..., revert_rate=...)`` sets how a
    version behaves; unknown versions are healthy (1% errors).
    """

    def __init__(
        self,
        lake: Lakehouse,
        backend: EdgeAgentBackend,
        uplink: Uplink | None = None,
        *,
        devices: int = 2000,
        tenants: tuple[str, ...] = ("acme", "globex"),
        platforms: tuple[str, ...] = ("greengrass", "iot_edge"),
        tags: dict[str, tuple[str, ...]] | None = None,
        seed: int = 7,
        start: datetime = DEMO_START,
        requests_per_min: float = 60.0,
        upload_every: int | None = 30,
    ) -> None:
        if upload_every is not None and upload_every < 1:
            raise ValueError(
                f"upload_every={upload_every} minutes: give a positive number, or None for every step"
            )
        self.lake, self.backend = lake, backend
        self.rng = np.random.default_rng(seed)
        self.start = self.now = start
        self.requests_per_min = requests_per_min
        self.upload_every = upload_every
        self.profiles: dict[str, dict[str, float]] = {}
        self._wall = epoch_ms(start)  # the simulated wall clock every device's HLC reads
        tags = tags if tags is not None else {"channel": ("stable", "beta")}
        self.devices: list[FleetDevice] = []
        for i in range(devices):
            device_id = f"dev-{i:05d}"
            d = FleetDevice(
                tenants[i % len(tenants)],
                device_id,
                platforms[(i // len(tenants)) % len(platforms)],
                {k: v[i % len(v)] for k, v in sorted(tags.items())},
                HybridLogicalClock(device_id, wall_ms=self._wall_ms),
                zlib.crc32(device_id.encode()) % (upload_every or 1),
                factor=float(self.rng.gamma(20.0, 1 / 20.0)),
            )
            d.ran.add(d.version)
            d.next_upload = start + timedelta(minutes=d.upload_offset)
            self.devices.append(d)
        self.uplink: Uplink = uplink if uplink is not None else DirectUplink(lake)
        self.uplink.register(self.devices, start)
        self.uploads = 0  # device uploads so far (batches, on the batch path)

    def _wall_ms(self) -> int:
        return self._wall

    def close(self) -> None:
        self.uplink.close()

    def set_release_profile(self, version: str, **profile: float) -> None:
        self.profiles[version] = {**self.profiles.get(version, {}), **profile}

    def set_online(self, device_ids: set[str], online: bool) -> None:
        for d in self.devices:
            if d.device_id in device_ids:
                d.online = online

    def ran(self, version: str) -> list[str]:
        """Devices (tenant/device) that have ever run ``version``."""
        return [d.key for d in self.devices if version in d.ran]

    def running(self, version: str) -> int:
        return sum(d.version == version for d in self.devices)

    def buffered_rows(self) -> int:
        """Health rows recorded on devices and not uploaded yet."""
        return sum(t.num_rows for d in self.devices for t in d.buffer)

    # ------------------------------------------------------------------ stepping

    def advance(self, minutes: int) -> None:
        """Online devices pull desired state; every device records ``minutes`` one-minute health rows;
        then the devices due upload (periodic slot, or a new desired state to report)."""
        for d in self.devices:
            if d.online and self._pull(d):
                d.report_due = True
        self._record(minutes)
        self.now += timedelta(minutes=minutes)
        due = [d for d in self.devices if d.online and d.buffer and self._due(d)]
        uploads = []
        for d in due:
            rows = d.buffer[0] if len(d.buffer) == 1 else pa.concat_tables(d.buffer)
            uploads.append((d, rows))
            d.buffer, d.report_due = [], False
            if self.upload_every is not None:
                while d.next_upload <= self.now:
                    d.next_upload += timedelta(minutes=self.upload_every)
        if uploads:
            self.uplink.upload(uploads, self.now)
            self.uploads += len(uploads)

    def _due(self, d: FleetDevice) -> bool:
        return self.upload_every is None or d.report_due or d.next_upload <= self.now

    def _pull(self, d: FleetDevice) -> bool:
        store, signer = self.backend.store, self.backend.publisher.signer
        try:
            data = store.get(desired_key(d.tenant_id, d.device_id))
        except ObjectNotFound:
            return False
        try:
            doc = decode(
                data,
                platform_keys=[signer.public_key_bytes()],
                tenant_id=d.tenant_id,
                device_id=d.device_id,
                applied_revision=d.applied_revision,
            )
        except DesiredStateError:
            return False  # stale or tampered: keep running what we run
        d.applied_revision = doc.revision
        version = doc.release.version if doc.release else d.version
        if doc.release is None and doc.rollback_of is not None and d.version == doc.rollback_of.version:
            version = OLD_VERSION  # the demo's devices ran OLD_VERSION before any rollout
        if doc.release is not None:
            d.slot = doc.release.slot
        if version == d.version:
            return False
        if doc.release is not None and self._reverts(d, version):
            # the device's installer activated the release, failed its health check and
            # switched back: it keeps running what it ran and reports the step
            d.ran.add(version)
            d.update = ("reverted", version, "health_check: exited 1")
            return True
        d.version = version
        d.ran.add(version)
        return True

    def _reverts(self, d: FleetDevice, version: str) -> bool:
        """Whether ``d``'s installer gives ``version`` up (profile ``revert_rate``, by device hash)."""
        rate = self.profiles.get(version, {}).get("revert_rate", 0.0)
        return rate > 0 and zlib.crc32(f"{d.key}@{version}".encode()) / 2**32 < rate

    def _record(self, minutes: int) -> None:
        """Each device's health rows for the next ``minutes``, appended to its buffer."""
        devs = self.devices
        k, n = minutes, len(devs) * minutes
        if not n:
            return
        prof = [{**_DEFAULT_PROFILE, **self.profiles.get(d.version, {})} for d in devs]
        factor = np.array([d.factor for d in devs])
        err = np.repeat(np.minimum(1.0, np.array([p["error_rate"] for p in prof]) * factor), k)
        crash = np.repeat(np.array([p["crash_rate"] for p in prof]) * factor / 60, k)
        cpu = np.repeat(np.array([p["cpu_pct"] for p in prof]) * factor, k)
        requests = self.rng.poisson(self.requests_per_min, n)
        errors = self.rng.binomial(requests, err)
        crashes = self.rng.poisson(crash)
        cpu_pct = np.clip(self.rng.normal(cpu, 3.0), 0, 100)
        mem_mb = self.rng.normal(300.0, 5.0, n)
        queue = self.rng.poisson(2.0, n)
        start_ms = epoch_ms(self.now)
        ts_ms = [start_ms + 60_000 * m for m in range(k)]
        seqs, hlcs = np.empty(n, np.int64), np.empty(n, np.int64)
        for i, d in enumerate(devs):
            seqs[i * k : (i + 1) * k] = np.arange(d.next_seq, d.next_seq + k)
            d.next_seq += k
            for m, t in enumerate(ts_ms):
                self._wall = t  # the device's wall clock when it records the row
                hlcs[i * k + m] = d.clock.now()
        table = pa.Table.from_arrays(
            [
                pa.array(np.repeat([d.tenant_id for d in devs], k), pa.string()),
                pa.array(np.repeat([d.device_id for d in devs], k), pa.string()),
                pa.array(["health"] * n, pa.string()),
                pa.array(seqs),
                pa.array(hlcs),
                pa.array(np.repeat([d.device_id for d in devs], k), pa.string()),
                pa.array(
                    np.tile(np.array(ts_ms, dtype="datetime64[ms]"), len(devs)), pa.timestamp("ms", tz="UTC")
                ),
                pa.array(np.repeat([d.version for d in devs], k), pa.string()),
                pa.array(np.repeat([d.slot for d in devs], k), pa.string()),
                pa.array(np.repeat([d.applied_revision for d in devs], k).astype(np.int64)),
                pa.array(np.where(requests > 0, errors / np.maximum(requests, 1), 0.0)),
                pa.array(requests.astype(np.int64)),
                pa.array(errors.astype(np.int64)),
                pa.array(crashes.astype(np.int64)),
                pa.array(cpu_pct),
                pa.array(mem_mb),
                pa.array(np.ones(n, dtype=np.int64)),
                pa.array(queue.astype(np.int64)),
                *(
                    pa.array(np.repeat([d.update[j] if d.update else None for d in devs], k), pa.string())
                    for j in range(3)  # update_state, update_version, update_reason
                ),
            ],
            schema=HEALTH_SCHEMA,
        )
        for d in devs:
            d.update = None  # reported
        for i, d in enumerate(devs):
            d.buffer.append(table.slice(i * k, k))


# ---------------------------------------------------------------------- registration and the direct path


def register_devices(con: duckdb.DuckDBPyConnection, devices: Sequence[FleetDevice], at: datetime) -> None:
    """The ``devices`` rows of a fleet's registration: platform, tags, what each device runs now."""
    tbl = pa.table(
        {
            "tenant_id": [d.tenant_id for d in devices],
            "device_id": [d.device_id for d in devices],
            "platform": [d.platform for d in devices],
            "tags": [json.dumps(d.tags, sort_keys=True) for d in devices],
            "registered_at": pa.array([at] * len(devices), pa.timestamp("us", tz="UTC")),
            "status": ["online" if d.online else "offline" for d in devices],
            "reported_version": [d.version for d in devices],
            "reported_slot": [d.slot for d in devices],
            "updated_at": pa.array([at] * len(devices), pa.timestamp("us", tz="UTC")),
        }
    )
    _replace_devices(con, tbl)


def _replace_devices(con: duckdb.DuckDBPyConnection, tbl: pa.Table) -> None:
    con.register("_fleet_devices", tbl)
    try:
        con.execute(
            "DELETE FROM devices WHERE (tenant_id, device_id) IN (SELECT (tenant_id, device_id) FROM _fleet_devices)"
        )
        con.execute(f"INSERT INTO devices ({', '.join(tbl.column_names)}) SELECT * FROM _fleet_devices")
    finally:
        con.unregister("_fleet_devices")


class DirectUplink:
    """Health rows straight into ``health`` and reported versions into ``devices``, one transaction per step.

    For tests that tick rollouts many times: no identities, batches or ingest (rows carry no
    ``batch_key``). The demo uses :class:`~edgeplat.simulator.batch_uplink.BatchUplink`.
    """

    def __init__(self, lake: Lakehouse) -> None:
        self._con = lake.connect()  # one connection for the fleet's life: attaching is the slow part
        self._registered: dict[str, dict[str, Any]] = {}
        self._reported: dict[str, tuple[str, str]] = {}

    def close(self) -> None:
        self._con.close()

    def register(self, devices: Sequence[FleetDevice], at: datetime) -> None:
        for d in devices:
            self._registered[d.key] = {
                "platform": d.platform,
                "tags": json.dumps(d.tags, sort_keys=True),
                "registered_at": at,
            }
            self._reported[d.key] = (d.version, d.slot)
        retried(self._con, lambda con: register_devices(con, devices, at), what="demo fleet registration")

    def upload(self, uploads: Sequence[tuple[FleetDevice, pa.Table]], now: datetime) -> None:
        rows = pa.concat_tables([t for _, t in uploads])
        rows = rows.append_column("day", utc_day(rows.column("ts")))  # the (tenant_id, day) partition key
        cols = [c for c, _ in TABLES["health"].columns if c in rows.column_names]
        latest: list[dict[str, Any]] = []
        for d, t in uploads:  # rows are in HLC order per device: the last one is what it reports
            reported = (t.column("version")[-1].as_py(), t.column("slot")[-1].as_py())
            if reported != self._reported[d.key]:  # only changes are written: this path is for speed
                self._reported[d.key] = reported
                latest.append(
                    {
                        "tenant_id": d.tenant_id,
                        "device_id": d.device_id,
                        **self._registered[d.key],
                        "last_batch_at": now,
                        "status": "online",
                        "reported_version": reported[0],
                        "reported_slot": reported[1],
                        "updated_at": now,
                        "reported_hlc": t.column("hlc")[-1].as_py(),
                    }
                )

        def unit(con: duckdb.DuckDBPyConnection) -> None:
            con.register("_fleet_health", rows)
            try:
                con.execute(
                    f"INSERT INTO health ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _fleet_health"
                )
            finally:
                con.unregister("_fleet_health")
            if latest:
                _replace_devices(con, pa.Table.from_pylist(latest))

        retried(self._con, unit, what="demo fleet health")
