"""Where the platform keeps its state, and which environment it runs in.

Everything local lives under one state directory, ``EDGEPLAT_HOME`` (default
``./.edgeplat``): the Dagster instance (``DAGSTER_HOME`` unless set), the lakehouse
catalog and data, the embedded object store, keyrings and device registries. The CLI,
``make demo`` and ``make dev`` all resolve it the same way, so they share one Dagster
instance and the runs one starts show in the other's UI.

``EDGEPLAT_ENV`` selects the resource set: ``local`` (default, embedded) or
``production`` (PostgreSQL catalog, S3 data and objects, Vault); see pipelines/resources.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENVIRONMENTS = ("local", "production")

_DAGSTER_YAML_LOCAL = """\
# Written by edgeplat: a local Dagster instance under EDGEPLAT_HOME.
telemetry:
  enabled: false
run_queue:
  max_concurrent_runs: 4
  # one ingest run per tenant at a time: DuckLake appends do not conflict, so two runs
  # of one tenant could both insert a row; reconciliation would repair it, this prevents it
  tag_concurrency_limits:
    - key: "edgeplat/ingest-tenant"
      value:
        applyLimitPerUniqueValue: true
      limit: 1
# The platform's own warnings (a DuckLake maintenance child that crashed and was replaced, a
# lakehouse commit retried after a collision) go into the run's event log, where operators look.
# Never add botocore here: its DEBUG records name the AWS access key id (docs/security.md).
python_logs:
  python_log_level: INFO
  managed_python_loggers:
    - edgeplat
    - edge_sync
"""


def environment() -> str:
    env = os.environ.get("EDGEPLAT_ENV", "local").strip().lower() or "local"
    if env not in ENVIRONMENTS:
        raise ValueError(f"EDGEPLAT_ENV={env!r} is not known; set it to one of: {', '.join(ENVIRONMENTS)}")
    return env


@dataclass(frozen=True)
class Paths:
    """The layout of the state directory."""

    home: Path

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster")

    @property
    def lakehouse(self) -> Path:
        return self.home / "lakehouse"

    @property
    def catalog(self) -> Path:
        return self.lakehouse / "catalog.sqlite"

    @property
    def lake_data(self) -> Path:
        return self.lakehouse / "data"

    @property
    def objects(self) -> Path:
        return self.home / "objects"

    @property
    def keys(self) -> Path:
        return self.home / "keys"

    @property
    def devices(self) -> Path:
        return self.home / "devices"

    @property
    def registry(self) -> Path:
        """Device public keys registered centrally (LocalDeviceRegistry)."""
        return self.devices / "registry"

    @property
    def platform_key(self) -> Path:
        """The platform's Ed25519 key that signs desired-state documents."""
        return self.keys / "platform.pem"

    @property
    def plots(self) -> Path:
        return self.home / "plots"


def paths() -> Paths:
    return Paths(Path(os.environ.get("EDGEPLAT_HOME", ".edgeplat")).expanduser().resolve())


def ensure_home() -> Paths:
    """Create the state directory and point ``DAGSTER_HOME`` into it (unless already set)."""
    p = paths()
    for d in (p.home, p.lakehouse, p.lake_data, p.objects, p.keys, p.devices, p.plots):
        d.mkdir(parents=True, exist_ok=True)
    os.environ["EDGEPLAT_HOME"] = str(p.home)
    os.environ.setdefault("DAGSTER_HOME", str(p.home / "dagster"))
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    cfg = dagster_home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(_DAGSTER_YAML_LOCAL)
    return p
