"""What the edge agents' installers report about a release: in progress, running, or given up.

The slot installer (``edge_sync.slot_installer``) writes each step of an update to the health
stream as ``update_state`` with the release it concerns in ``update_version``. A device that
reverted a release reports the old ``version`` again, so by version alone it looks like a
device that never got the deploy; this reads the steps themselves, for the rollout's device
facts: ``downloading``/``installed`` are under way (not failed yet, however long a download
takes within the device's budget), ``activated`` runs in probation, ``committed`` passed
probation, ``reverted``/``failed`` gave the release up (with the reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb

IN_PROGRESS = frozenset({"downloading", "installed"})
RUNNING = frozenset({"activated", "committed"})
GAVE_UP = frozenset({"reverted", "failed"})


@dataclass(frozen=True)
class UpdateFact:
    """A device's latest installer step for one release."""

    state: str
    reason: str | None
    at: datetime

    @property
    def gave_up(self) -> bool:
        return self.state in GAVE_UP

    @property
    def in_progress(self) -> bool:
        return self.state in IN_PROGRESS


def latest_updates(
    con: duckdb.DuckDBPyConnection, tenant_ids: Sequence[str], version: str, since: datetime | None = None
) -> dict[tuple[str, str], UpdateFact]:
    """(tenant, device) -> the latest installer step about ``version`` (by HLC), from ``since`` on."""
    rows = con.execute(
        """
        SELECT tenant_id, device_id, arg_max(update_state, hlc), arg_max(update_reason, hlc), arg_max(ts, hlc)
        FROM health
        WHERE tenant_id IN (SELECT unnest(?::VARCHAR[])) AND update_version = ? AND update_state IS NOT NULL
          AND ts >= coalesce(?::TIMESTAMPTZ, '-infinity'::TIMESTAMPTZ)
        GROUP BY tenant_id, device_id""",
        [list(tenant_ids), version, since],
    ).fetchall()
    return {(t, d): UpdateFact(state, reason, at) for t, d, state, reason, at in rows}
