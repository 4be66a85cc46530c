"""Send a rules change to every device: rewrite each desired-state document that carries other rules.

Central edits carry the current rules in the documents they publish, but a device nobody edits
would keep merging with the old ones; this walks every device with a document (the publisher's
``desired_records``) and rewrites those whose ``state_rules`` differ, in one batch per tenant.
"""

from __future__ import annotations

from edgeplat.desired_publisher import DesiredStatePublisher
from edgeplat.desired_records import TABLE
from edgeplat.lakehouse import Lakehouse


def publish_state_rules(publisher: DesiredStatePublisher, lake: Lakehouse) -> dict[str, int]:
    """Tenant -> how many of its documents were rewritten to carry the publisher's rules."""
    lake.ensure_created()
    with lake.session(read_only=True) as con:
        tenants = [t for (t,) in con.execute(f"SELECT DISTINCT tenant_id FROM {TABLE} ORDER BY 1").fetchall()]
    changed: dict[str, int] = {}
    for tenant in tenants:
        devices = sorted(publisher.records.tenant(tenant))
        with publisher.batch():
            changed[tenant] = sum(publisher.set_state_rules(t, d) for t, d in devices)
    return changed
