"""What every rollout asset and job shares: the ``rollouts`` dynamic partition and the controller."""

import dagster as dg

from edgeplat.rollouts.controller import Controller
from edgeplat.rollouts.store import RolloutStore
from resources.backends import FleetBackendResource
from resources.lakehouse import LakehouseResource

ROLLOUTS = dg.DynamicPartitionsDefinition(name="rollouts")
GROUP = "rollouts"


_SCHEMA_CHECKED: set[str] = set()


def store_from(lakehouse: LakehouseResource) -> RolloutStore:
    lake = lakehouse.get()
    # ensure_created skips an existing catalog; rollout tables may be newer than it: check once per process.
    if lake.config.catalog not in _SCHEMA_CHECKED:
        lake.ensure_schema()
        _SCHEMA_CHECKED.add(lake.config.catalog)
    return RolloutStore(lake)


def controller_from(lakehouse: LakehouseResource, fleet_backend: FleetBackendResource) -> Controller:
    return Controller(store_from(lakehouse), fleet_backend.get())


def md_table(columns: list[str], rows: list[tuple], limit: int = 50) -> str:
    """A markdown table for asset metadata (the first ``limit`` rows)."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join("" if v is None else str(v) for v in r) + " |\n" for r in rows[:limit])
    more = f"\n… {len(rows) - limit} more rows\n" if len(rows) > limit else ""
    return head + body + more
