"""A device agent wired to a central ``Fleet`` for configuration drift tests: the real agent uploads
to the fleet's store and pulls documents a real ``DesiredStatePublisher`` signs; central edits go
through ``apply_central_edits`` like the ``edit_device_state`` job's."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from edge_sync.agent import DeviceAgent
from edge_sync.hlc import CENTRAL_NODE, HybridLogicalClock
from edge_sync.identity import PlatformSigner
from edge_sync.rules import default_rules
from edgeplat.desired_publisher import DesiredStatePublisher
from edgeplat.desired_records import LakehouseDesiredRecords
from edgeplat.sync import config_drift
from edgeplat.sync.central_edits import CentralEdit, apply_central_edits
from edgeplat.sync.reconcile import ingest_missed
from tests.support.fleet import Fleet


@dataclass
class DriftWorld:
    """One fleet, one platform signer and publisher, and the agents of its devices."""

    fleet: Fleet

    def __post_init__(self) -> None:
        self.signer = PlatformSigner.generate()
        clock = HybridLogicalClock(CENTRAL_NODE, wall_ms=self.fleet.clock)
        self.publisher = DesiredStatePublisher(
            self.fleet.store, self.signer, clock, records=LakehouseDesiredRecords(self.fleet.lake)
        )
        self.agents: dict[tuple[str, str], DeviceAgent] = {}

    def agent(self, tenant: str, device: str) -> DeviceAgent:
        if (tenant, device) not in self.agents:
            self.agents[(tenant, device)] = DeviceAgent.for_device(
                tenant,
                device,
                cache_path=self.fleet.root / f"{tenant}-{device}.duckdb",
                cache_key=secrets.token_bytes(32),
                wall_ms=self.fleet.clock,
                store=self.fleet.store,
                key_service=self.fleet.keys,
                identity=self.fleet.device(tenant, device),
                platform_keys=self.signer.public_key_bytes(),
                sleep=lambda s: None,
            )
        return self.agents[(tenant, device)]

    def sync(self, tenant: str, device: str) -> None:
        """The device syncs (pull, apply, upload), then central ingests what arrived."""
        self.agent(tenant, device).sync_once()
        with self.fleet.lake.session() as con:
            ingest_missed(self.fleet.env(), con)

    def edit(self, tenant: str, device: str, **fields: str) -> None:
        """Central edits of ``config/main`` (values as JSON text), published to the device."""
        edits = [CentralEdit(tenant, device, "config", "main", f, v) for f, v in fields.items()]
        apply_central_edits(
            self.fleet.lake,
            edits,
            default_rules(),
            publish=self.publisher.add_state_edits,
            wall=self.fleet.clock,
        )

    def drift(self, at_ms: int) -> dict[str, dict]:
        """Refresh ``device_config_drift`` at ``at_ms``; rows by field name."""
        rows = config_drift.refresh(self.fleet.lake, datetime.fromtimestamp(at_ms / 1000, UTC))
        return {r["field"]: r for r in rows.to_pylist()}

    def close(self) -> None:
        for a in self.agents.values():
            a.close()
