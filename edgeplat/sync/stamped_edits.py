"""Record central state edits that already carry their HLC (from the simulator, or replayed).

``apply_central_edits`` (central_edits.py) stamps new edits with the central clock; edits
that were stamped elsewhere (the simulator publishes them to devices itself) are merged
with their own HLCs so the central ``device_state`` agrees with what the devices merge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from edge_sync.merge import EDIT_SCHEMA, MergeStats
from edge_sync.rules import RuleSet, default_rules
from edgeplat.lakehouse import Lakehouse
from edgeplat.sync.central_state import central_merger


def record_stamped_edits(
    lake: Lakehouse, edits: Iterable[Mapping[str, Any]], rules: RuleSet | None = None
) -> MergeStats:
    rows = [{name: e[name] for name in EDIT_SCHEMA.names} for e in edits]
    table = pa.Table.from_pylist(rows, schema=EDIT_SCHEMA)
    rules = rules or default_rules()

    def unit(con) -> MergeStats:
        return central_merger(con, rules).merge(table, own_transaction=False)

    return lake.write(unit, what="central state edits")
