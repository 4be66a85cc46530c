"""Where the platform keeps its state, and which environment it runs in.

Everything local lives under one state directory, ``EDGEPLAT_HOME`` (default
``./.edgeplat``): the lakehouse catalog and data, the embedded object store, keyrings and
device registries (the entry points also keep the Dagster instance there: cli/environment.py).
Resolving the layout writes nothing; whoever uses a folder creates it.

``EDGEPLAT_ENV`` selects the resource set: ``local`` (default, embedded) or
``production`` (PostgreSQL catalog, S3 data and objects, Vault); see pipelines/resources.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENVIRONMENTS = ("local", "production")


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
