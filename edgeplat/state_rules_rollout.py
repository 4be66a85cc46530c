"""Send a rules change to every device: rewrite each desired-state document that carries other rules.

Central edits and rollouts carry the current rules in the documents they publish, but a device
nobody edits would keep merging with the old ones; this walks every device with a document (the
publisher's ``desired_records``) and rewrites those whose ``state_rules`` differ, in one batch
per tenant, then records the send (:mod:`edgeplat.state_rules_published`) so the watcher does
not ask for it again. The rules are first held to their version (``state_rules_versions``): a
file changed under a version the central merge used with other content is never sent.
"""

from __future__ import annotations

from edge_sync.identity import PlatformSigner
from edge_sync.objectstore import ObjectStore
from edge_sync.rules import RuleSet
from edgeplat.desired_publisher import DesiredStatePublisher
from edgeplat.desired_records import TABLE, LakehouseDesiredRecords
from edgeplat.lakehouse import Lakehouse
from edgeplat.state_rules_published import record_published
from edgeplat.sync.central_state import check_rules_version


def publish_state_rules(
    lake: Lakehouse, store: ObjectStore, signer: PlatformSigner, rules: RuleSet
) -> dict[str, int]:
    """Tenant -> how many of its documents were rewritten to carry ``rules``."""
    lake.ensure_created()
    lake.write(lambda con: check_rules_version(con, rules), what="state rules version")
    publisher = DesiredStatePublisher(store, signer, records=LakehouseDesiredRecords(lake), rules=rules)
    with lake.session(read_only=True) as con:
        tenants = [t for (t,) in con.execute(f"SELECT DISTINCT tenant_id FROM {TABLE} ORDER BY 1").fetchall()]
    changed: dict[str, int] = {}
    for tenant in tenants:
        devices = sorted(publisher.records.tenant(tenant))
        with publisher.batch():
            changed[tenant] = sum(publisher.set_state_rules(t, d) for t, d in devices)
    lake.write(lambda con: record_published(con, rules, changed), what="state rules sent")
    return changed
