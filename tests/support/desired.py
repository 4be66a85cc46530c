"""The desired-state publisher's lakehouse record for tests: a small embedded lakehouse per test."""

from __future__ import annotations

from pathlib import Path

from edgeplat.desired_records import LakehouseDesiredRecords
from edgeplat.lakehouse import Lakehouse, LakehouseConfig


def embedded_records(root: Path) -> LakehouseDesiredRecords:
    """Records in a SQLite-catalogued lakehouse under ``root`` (created, schema included)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    lake = Lakehouse(LakehouseConfig(f"sqlite:{root}/catalog.sqlite", f"{root}/data/"))
    lake.ensure_schema()
    return LakehouseDesiredRecords(lake)
