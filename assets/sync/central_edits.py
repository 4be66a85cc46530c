"""``apply_state_edits``: the op of the ``edit_device_state`` job, which sets fields of a device's state record;
``publish_rules_to_devices``: the op of ``publish_state_rules``, which sends a rules change to every device."""

import json

import dagster as dg

from edge_sync.rules import RuleSet
from edgeplat.desired_publisher import DesiredStatePublisher
from edgeplat.desired_records import LakehouseDesiredRecords
from edgeplat.state_rules_rollout import publish_state_rules
from edgeplat.sync.central_edits import CentralEdit, apply_central_edits
from resources.keys import PlatformSignerResource
from resources.lakehouse import LakehouseResource
from resources.object_store import ObjectStoreResource
from resources.state_rules import StateRulesResource


class EditStateConfig(dg.Config):
    """Set ``fields`` (name -> JSON text, e.g. {"threshold": "42", "label": "\\"blue\\""}) of one record."""

    tenant_id: str
    device_id: str
    namespace: str
    key: str
    fields: dict[str, str]
    publish: bool = True  # also send the edits down in the device's desired-state document


def _publisher(
    object_store: ObjectStoreResource,
    signer: PlatformSignerResource,
    lakehouse: LakehouseResource,
    rules: RuleSet,
):
    # The one call site of the desired-state downlink for central edits; the documents carry
    # the rules the edits merged with, so the device merges them alike.
    records = LakehouseDesiredRecords(lakehouse.get())
    return DesiredStatePublisher(
        object_store.get(), signer.get(), records=records, rules=rules
    ).add_state_edits


@dg.op(description="Merge central state edits into device_state and publish them to the device.")
def apply_state_edits(
    context: dg.OpExecutionContext,
    config: EditStateConfig,
    lakehouse: LakehouseResource,
    object_store: ObjectStoreResource,
    platform_signer: PlatformSignerResource,
    state_rules: StateRulesResource,
) -> dict:
    if not config.fields:
        raise dg.Failure("edit_device_state needs at least one field in config.fields")
    edits = [
        CentralEdit(config.tenant_id, config.device_id, config.namespace, config.key, name, value)
        for name, value in sorted(config.fields.items())
    ]
    rules = state_rules.get()
    publish = _publisher(object_store, platform_signer, lakehouse, rules) if config.publish else None
    result = apply_central_edits(lakehouse.get(), edits, rules, publish=publish)
    context.log.info("central edits: %s", result)
    context.add_output_metadata(
        {
            "edits": result.edits,
            "published_devices": result.published_devices,
            "conflicts": dg.MetadataValue.json(result.conflicts),
            "hlcs": json.dumps(result.hlcs),
        }
    )
    return {"edits": result.edits, "hlcs": list(result.hlcs)}


@dg.op(
    description="Send the current state rules to every device whose desired-state document carries others."
)
def publish_rules_to_devices(
    context: dg.OpExecutionContext,
    lakehouse: LakehouseResource,
    object_store: ObjectStoreResource,
    platform_signer: PlatformSignerResource,
    state_rules: StateRulesResource,
) -> dict:
    rules = state_rules.get()
    changed = publish_state_rules(lakehouse.get(), object_store.get(), platform_signer.get(), rules)
    context.log.info("state rules version %s sent: %s", rules.version, changed)
    context.add_output_metadata(
        {
            "rules_version": rules.version,
            "content_hash": rules.content_hash,
            "documents_rewritten": sum(changed.values()),
        }
    )
    return changed
