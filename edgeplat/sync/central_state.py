"""The central merged state: one place that names its tables and builds their merger.

Device uploads (the ingest), operator edits (``central_edits``) and edits stamped elsewhere
(``stamped_edits``) all merge into the same three lakehouse tables with the shared
:class:`edge_sync.merge.StateMerger`; building it here keeps them on the same tables.
"""

from __future__ import annotations

import duckdb

from edge_sync.merge import StateMerger
from edge_sync.rules import RuleSet

STATE_TABLE = "device_state"
CONFLICTS_TABLE = "state_conflicts"
CONTRIBUTIONS_TABLE = "state_contributions"


def central_merger(con: duckdb.DuckDBPyConnection, rules: RuleSet) -> StateMerger:
    """A merger of edits into the central state tables on the lakehouse connection ``con``."""
    return StateMerger(
        con,
        rules,
        state_table=STATE_TABLE,
        conflicts_table=CONFLICTS_TABLE,
        contributions_table=CONTRIBUTIONS_TABLE,
    )
