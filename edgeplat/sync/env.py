"""What every sync step needs, in one object: lakehouse, object store, keys, registry, rules, clock.

``SyncEnv.now_ms`` is injectable so tests can move "now" (the HLC drift bound, offline
marking). ``decoder`` is an optional picklable factory of ``(key_service, registry)``: each
decode worker process makes its own pair with it (the local keyring and registry hold locks
and cannot be pickled themselves).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from edge_sync.identity import DeviceRegistry, LocalDeviceRegistry
from edge_sync.keys import KeyService, LocalKeyring
from edge_sync.objectstore import ObjectStore
from edge_sync.rules import RuleSet, default_rules
from edgeplat.lakehouse import Lakehouse

DEFAULT_MAX_DRIFT_MS = 5 * 60 * 1000
DEFAULT_OFFLINE_AFTER_S = 30 * 60


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _local_pair(keys_dir: str, devices_dir: str) -> tuple[KeyService, DeviceRegistry]:
    return LocalKeyring(keys_dir), LocalDeviceRegistry(devices_dir)


def local_decoder(keys_dir: str, devices_dir: str) -> Callable[[], tuple[KeyService, DeviceRegistry]]:
    """A picklable factory of the local keyring and registry, for decode worker processes."""
    return partial(_local_pair, str(keys_dir), str(devices_dir))


@dataclass(frozen=True)
class SyncSettings:
    """Tunables; the defaults are the documented platform behaviour."""

    max_drift_ms: int = DEFAULT_MAX_DRIFT_MS  # hlc_max beyond now + this: deferred (hlc_too_far_ahead)
    offline_after_s: int = DEFAULT_OFFLINE_AFTER_S  # no batch for this long: device offline
    decode_workers: int = (
        0  # >1: decode big runs in that many processes (needs SyncEnv.decoder; for >2 cores)
    )
    rows_per_group: int = 500_000  # decoded rows per group; a commit takes up to ingest.MAX_GROUPS_PER_COMMIT
    key_service_retries: int = 3  # infrastructure errors (not KeyServiceError) before the run fails

    def __post_init__(self) -> None:
        if self.max_drift_ms < 0 or self.offline_after_s <= 0 or self.rows_per_group <= 0:
            raise ValueError(
                f"sync settings out of range: max_drift_ms={self.max_drift_ms} (>= 0), "
                f"offline_after_s={self.offline_after_s} (> 0), rows_per_group={self.rows_per_group} (> 0)"
            )


@dataclass
class SyncEnv:
    """The collaborators of every sync step."""

    lakehouse: Lakehouse
    store: ObjectStore
    key_service: KeyService
    registry: DeviceRegistry
    rules: RuleSet = field(default_factory=default_rules)
    settings: SyncSettings = field(default_factory=SyncSettings)
    now_ms: Callable[[], int] = wall_ms
    decoder: Callable[[], tuple[KeyService, DeviceRegistry]] | None = None
