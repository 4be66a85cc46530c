"""The central sync under test: devices with real identities, a keyring, a registry, an object
store and a lakehouse (``Fleet``, the ``fleet`` fixture of tests/sync), deterministic rows of
every stream, and batches forged with chosen (signed) manifest fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from edge_sync.batch import EncodedBatch, write_batch
from edge_sync.batch_encoding import encode_table
from edge_sync.hlc import pack
from edge_sync.identity import DeviceIdentity, LocalDeviceRegistry
from edge_sync.keys import KeyService, LocalKeyring
from edge_sync.objectstore import LocalObjectStore
from edge_sync.streams import STREAMS
from edgeplat.lakehouse import Lakehouse, LakehouseConfig
from edgeplat.sync.env import SyncEnv, SyncSettings, local_decoder
from tests.support.batches import seal

T0_MS = 1_790_000_000_000  # a fixed "now" for the tests (2026-09-21)

STREAM_TABLES = (
    "telemetry",
    "alerts",
    "logs",
    "health",
    "state_edits",
    "batches",
    "quarantine",
    "evictions",
    "device_state",
    "state_conflicts",
    "devices",
)


class Clock:
    """An injectable central clock."""

    def __init__(self, ms: int = T0_MS) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def rows(
    stream: str,
    tenant: str,
    device: str,
    seqs: Sequence[int],
    *,
    base_ms: int = T0_MS - 3_600_000,
    node: str | None = None,
    salt: str = "",
    values: dict | None = None,
) -> pa.Table:
    """Deterministic rows of ``stream`` for ``seqs`` (the same seq always gives the same row unless ``salt``)."""
    spec = STREAMS[stream]
    n = len(seqs)
    ts = [base_ms + s * 1000 for s in seqs]
    data: dict = {
        "tenant_id": [tenant] * n,
        "device_id": [device] * n,
        "stream": [stream] * n,
        "seq": list(seqs),
        "hlc": [pack(t, 0) for t in ts],
        "node_id": [node or device] * n,
        "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
    }
    for f in spec.payload:
        if pa.types.is_floating(f.type):
            data[f.name] = [float(s % 97) + (0.5 if salt else 0.0) for s in seqs]
        elif pa.types.is_integer(f.type):
            data[f.name] = [s % 7 for s in seqs]
        elif f.name == "origin":
            data[f.name] = ["device"] * n
        elif f.name == "value":
            data[f.name] = [str(s) for s in seqs]
        elif f.name == "namespace":
            data[f.name] = ["config"] * n
        elif f.name == "key":
            data[f.name] = ["main"] * n
        elif f.name == "field":
            data[f.name] = [f"f{s % 3}" for s in seqs]
        else:
            data[f.name] = [f"{f.name}-{s % 5}{salt}" for s in seqs]
    data.update(values or {})
    return pa.table(data, schema=spec.schema)


@dataclass
class Fleet:
    """Devices with real identities, a keyring, a registry, an object store and a lakehouse."""

    root: Path
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.keys = LocalKeyring(self.root / "keys")
        self.registry = LocalDeviceRegistry(self.root / "devices")
        self.store = LocalObjectStore(self.root / "objects")
        self.lake = Lakehouse(
            LakehouseConfig(catalog=f"sqlite:{self.root}/catalog.sqlite", data_path=f"{self.root}/lake/")
        )
        self.lake.ensure_schema()
        self.ids: dict[tuple[str, str], DeviceIdentity] = {}

    def env(self, **settings) -> SyncEnv:
        return SyncEnv(
            self.lake,
            self.store,
            self.keys,
            self.registry,
            settings=SyncSettings(**settings),
            now_ms=self.clock,
            decoder=local_decoder(self.root / "keys", self.root / "devices"),
        )

    def device(self, tenant: str, device: str, *, register: bool = True) -> DeviceIdentity:
        if (tenant, device) not in self.ids:
            ident = DeviceIdentity.generate(tenant, device)
            if register:
                self.registry.register(tenant, device, ident.public_key_bytes())
            self.ids[(tenant, device)] = ident
        return self.ids[(tenant, device)]

    def batch(
        self,
        tenant: str,
        device: str,
        stream: str,
        seqs: Sequence[int],
        *,
        evictions=(),
        key_service: KeyService | None = None,
        **kw,
    ) -> EncodedBatch:
        """The device's batch of ``rows(...)``, its data key from ``key_service`` (default: the fleet's)."""
        table = rows(stream, tenant, device, seqs, **kw) if seqs else STREAMS[stream].schema.empty_table()
        return write_batch(
            table,
            tenant_id=tenant,
            device_id=device,
            stream=stream,
            evictions=evictions,
            key_service=key_service or self.keys,
            identity=self.device(tenant, device),
            created_ms=self.clock(),
        )

    def upload(self, batch: EncodedBatch, key: str | None = None, data: bytes | None = None) -> str:
        key = key or batch.key
        self.store.put(key, batch.data if data is None else data)
        return key

    def snapshot(self) -> dict[str, list]:
        """Every sync table's content, order-independent, without ingest timestamps."""
        out = {}
        with self.lake.session(read_only=True) as con:
            for t in STREAM_TABLES:
                cur = con.execute(f'SELECT * FROM "{t}"')
                names = [d[0] for d in cur.description]
                skip = {
                    "ingested_at",
                    "quarantined_at",
                    "updated_at",
                    "updated_ms",
                    "detected_ms",
                    "registered_at",
                    "last_batch_at",
                    "resolved_at",
                }
                keep = [i for i, n in enumerate(names) if n not in skip]
                out[t] = sorted((tuple(r[i] for i in keep) for r in cur.fetchall()), key=repr)
        return out

    def ts_now(self) -> datetime:
        return ts(self.clock())

    def count(self, sql: str, params: list | None = None):
        with self.lake.session(read_only=True) as con:
            return con.execute(sql, params or []).fetchall()


def ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def forge(
    fleet: Fleet,
    tenant: str,
    device: str,
    seqs: Sequence[int],
    changes: dict,
    stream: str = "telemetry",
    payload: bytes | None = None,
) -> tuple[str, bytes]:
    """A batch encrypted and signed by the device's real key, with chosen (signed) manifest fields
    and, if given, a payload of the caller's making."""
    good = fleet.batch(tenant, device, stream, seqs)
    if payload is None:
        payload = encode_table(rows(stream, tenant, device, seqs), STREAMS[stream], device)
    manifest = good.manifest.model_dump(mode="json")
    dk = fleet.keys.generate_data_key(tenant)
    return good.key, seal(manifest, payload, dk, fleet.device(tenant, device), changes=changes)
